package commands

import (
	"io"
	"os"
	"text/tabwriter"

	"golang.org/x/sys/unix"
)

// newTable returns a tabwriter for UPPERCASE-headed tables; the caller
// must check Flush's error.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// palette colours words on a terminal. Every cell of a coloured column
// gets an escape of the same length, so tabwriter still aligns.
type palette struct{ on bool }

// colours is enabled only when w is a terminal and NO_COLOR is unset or
// empty (no-color.org: present and not empty disables colour).
func colours(w io.Writer) palette {
	if os.Getenv("NO_COLOR") != "" {
		return palette{}
	}
	f, ok := w.(*os.File)
	if !ok {
		return palette{}
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return palette{on: err == nil}
}

func (p palette) paint(code, s string) string {
	if !p.on {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func (p palette) good(s string) string { return p.paint("32", s) }
func (p palette) bad(s string) string  { return p.paint("31", s) }
func (p palette) warn(s string) string { return p.paint("33", s) }
func (p palette) dim(s string) string  { return p.paint("90", s) }
