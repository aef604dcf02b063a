package commands

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// table aligns tab-separated cells into columns, as text/tabwriter does
// (a cell ends at a tab; a line's last cell is not aligned; a column's
// width is the widest cell of the run of consecutive lines that have it),
// but measures a cell by what a terminal shows: colour escapes take no
// columns, a wide (CJK) character two, a combining mark none. tabwriter
// counts bytes of escapes and one column per rune, so a coloured cell or
// a non-ASCII interface name pushed its row out of line. Colour is thus
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
// none, combining marks and other zero-width characters none, East Asian
// wide and fullwidth characters two, everything else one.
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

func runeWidth(r rune) int {
	switch {
	case r == utf8.RuneError:
		return 1
	case r < 0x20 || r == 0x7f:
		return 0
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf):
		return 0
	case isWide(r):
		return 2
	}
	return 1
}

// wideRanges are the East Asian Wide and Fullwidth blocks (UAX #11) and
// the emoji that terminals draw two columns wide.
var wideRanges = [][2]rune{
	{0x1100, 0x115f}, {0x231a, 0x231b}, {0x2329, 0x232a}, {0x23e9, 0x23ec},
	{0x2e80, 0x303e}, {0x3041, 0x33ff}, {0x3400, 0x4dbf}, {0x4e00, 0x9fff},
	{0xa000, 0xa4cf}, {0xa960, 0xa97f}, {0xac00, 0xd7a3}, {0xf900, 0xfaff},
	{0xfe10, 0xfe19}, {0xfe30, 0xfe6f}, {0xff00, 0xff60}, {0xffe0, 0xffe6},
	{0x1f300, 0x1f64f}, {0x1f900, 0x1f9ff}, {0x20000, 0x3fffd},
}

func isWide(r rune) bool {
	for _, w := range wideRanges {
		if r < w[0] {
			return false
		}
		if r <= w[1] {
			return true
		}
	}
	return false
}

// termSafe returns s, a name from the kernel or from a user (Linux allows
// almost any byte in an interface name), fit to print on a terminal:
// control characters (C0, DEL, C1), invalid UTF-8, and the invisible
// characters that reorder or hide text (bidi controls, zero-width
// joiners) become Go-style escapes such as \x1b or \u202e, so an escape
// sequence in a name cannot recolour or rewrite the screen; a backslash
// is doubled, so that an escape is never ambiguous. Printable text,
// non-ASCII included, is kept as it is.
func termSafe(s string) string { return escapeText(s, true) }

// termSafeText is termSafe for a message, whose backslashes are its own
// (Go-quoted names in it are already escaped): they are kept.
func termSafeText(s string) string { return escapeText(s, false) }

func escapeText(s string, backslash bool) string {
	clean := true
	for _, r := range s {
		if (backslash && r == '\\') || r == utf8.RuneError || !printable(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case backslash && r == '\\':
			b.WriteString(`\\`)
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\x`)
			b.WriteString(hex2(s[i]))
		case r < 0x80 && !printable(r):
			b.WriteString(`\x`)
			b.WriteString(hex2(byte(r)))
		case !printable(r):
			q := strconv.QuoteRuneToASCII(r) // '\u202e'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func printable(r rune) bool {
	return unicode.IsPrint(r) && !unicode.Is(unicode.Cf, r)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func hex2(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&0xf]})
}

// utf8Locale reports whether the locale's character set is UTF-8, as
// setlocale(LC_CTYPE, "") would find it: LC_ALL, else LC_CTYPE, else
// LANG; unset (the C locale) is not.
func utf8Locale() bool {
	for _, v := range []string{"LC_ALL", "LC_CTYPE", "LANG"} {
		if s := os.Getenv(v); s != "" {
			s = strings.ToLower(s)
			return strings.Contains(s, "utf-8") || strings.Contains(s, "utf8")
		}
	}
	return false
}

// asciiText replaces the few non-ASCII symbols hairpinctl prints (arrows,
// ellipses) with ASCII when the locale is not UTF-8 (LC_ALL=C in cron, a
// unit, a script), where a terminal would show them as mojibake.
func asciiText(s string) string {
	if utf8Locale() {
		return s
	}
	return asciiReplacer().Replace(s)
}

var asciiReplacer = sync.OnceValue(func() *strings.Replacer {
	return strings.NewReplacer("→", "->", "←", "<-", "…", "...", "×", "x", "—", "--")
})

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
	return palette{on: isTerminal(w)}
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
