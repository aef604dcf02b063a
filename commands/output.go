package commands

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// table aligns tab-separated cells into columns, as text/tabwriter does
// (a cell ends at a tab; a line's last cell is not aligned; a column's
// width is the widest cell of the run of consecutive lines that have it),
// but measures a cell by what a terminal shows: colour escapes take no
// columns. tabwriter counts the bytes of escapes, so a coloured cell
// pushed its row out of line (and an uncoloured header off its column). Colour is thus
// added after alignment: the palette's escapes never count as width.
// Trailing blanks are dropped, so copied output stays clean.
type table struct {
	out  *bufio.Writer
	gap  int
	buf  []byte
	rows [][]string
}

// newTable returns a table with two-space gaps; the caller must check
// Flush's error.
func newTable(w io.Writer) *table { return newTableGap(w, 2) }

// newTableGap returns a table with gap spaces between columns.
func newTableGap(w io.Writer, gap int) *table {
	return &table{out: bufio.NewWriterSize(w, 32<<10), gap: gap}
}

// Write collects complete lines; it never fails.
func (t *table) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	for {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 {
			break
		}
		t.rows = append(t.rows, strings.Split(string(t.buf[:i]), "\t"))
		t.buf = t.buf[i+1:]
	}
	return len(p), nil
}

// Flush aligns and writes every line, including an unterminated last one.
func (t *table) Flush() error {
	if len(t.buf) > 0 {
		t.Write([]byte{'\n'})
	}
	widths := make([][]int, len(t.rows))
	for i, r := range t.rows {
		widths[i] = make([]int, len(r))
		for j, cell := range r {
			widths[i][j] = displayWidth(cell)
		}
	}
	// Column j of line i is aligned with the same column of the lines
	// around it that have one (a tabwriter column block).
	col := make([][]int, len(t.rows))
	for j := 0; ; j++ {
		any := false
		for i := 0; i < len(t.rows); {
			if len(t.rows[i])-1 <= j {
				i++
				continue
			}
			any = true
			end, w := i, 0
			for ; end < len(t.rows) && len(t.rows[end])-1 > j; end++ {
				w = max(w, widths[end][j])
			}
			for k := i; k < end; k++ {
				col[k] = append(col[k], w+t.gap)
			}
			i = end
		}
		if !any {
			break
		}
	}
	var line []byte
	for i, r := range t.rows {
		line = line[:0]
		for j, cell := range r {
			line = append(line, cell...)
			if j < len(r)-1 {
				for n := widths[i][j]; n < col[i][j]; n++ {
					line = append(line, ' ')
				}
			}
		}
		line = append(bytes.TrimRight(line, " "), '\n')
		if _, err := t.out.Write(line); err != nil {
			return err
		}
	}
	t.rows = t.rows[:0]
	return t.out.Flush()
}

// displayWidth is how many terminal columns s takes: SGR/CSI escapes
// none, every character one.
func displayWidth(s string) int {
	n := 0
	for i := 0; i < len(s); {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			// CSI: parameters and intermediates up to a final byte 0x40-0x7e.
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j + 1
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		n += runeWidth(r)
	}
	return n
}

func runeWidth(r rune) int { return 1 }

// palette colours words on a terminal.
type palette struct{ on bool }

// colours is enabled only when w is a terminal, TERM is not "dumb" (a
// terminal that cannot show escapes: Emacs' shell, some serial consoles)
// and NO_COLOR is unset or empty (no-color.org: present and not empty
// disables colour).
func colours(w io.Writer) palette {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
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
