package commands

import (
	"bufio"
	"io"
	"os"
	"text/tabwriter"

	"golang.org/x/sys/unix"
)

// table is a tabwriter for UPPERCASE-headed tables over a buffer, so a
// table of a thousand rows costs a few writes, not one per cell.
type table struct {
	*tabwriter.Writer
	out *bufio.Writer
}

// newTable returns a table with two-space gaps; the caller must check
// Flush's error.
func newTable(w io.Writer) *table { return newTableGap(w, 2) }

// newTableGap returns a table with gap spaces between columns.
func newTableGap(w io.Writer, gap int) *table {
	out := bufio.NewWriterSize(w, 32<<10)
	return &table{Writer: tabwriter.NewWriter(out, 0, 8, gap, ' ', 0), out: out}
}

// Flush aligns and writes what is left.
func (t *table) Flush() error {
	if err := t.Writer.Flush(); err != nil {
		return err
	}
	return t.out.Flush()
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
