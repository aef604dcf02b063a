package commands

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY returns the terminal end of a new pseudo-terminal.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}

// Colour only on a terminal, and never with NO_COLOR set to a non-empty value.
func TestColoursOnlyOnATerminal(t *testing.T) {
	tty := openPTY(t)
	file, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	tests := []struct {
		name    string
		w       io.Writer
		noColor *string
		want    bool
	}{
		{"terminal", tty, nil, true},
		{"terminal with NO_COLOR", tty, ptr("1"), false},
		{"terminal with empty NO_COLOR", tty, ptr(""), true},
		{"regular file", file, nil, false},
		{"buffer", &bytes.Buffer{}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.noColor != nil {
				t.Setenv("NO_COLOR", *tt.noColor)
			} else {
				t.Setenv("NO_COLOR", "")
				os.Unsetenv("NO_COLOR")
			}
			p := colours(tt.w)
			if p.on != tt.want {
				t.Errorf("colours = %v, want %v", p.on, tt.want)
			}
			if got := p.bad("off"); (got != "off") != tt.want {
				t.Errorf("bad(off) = %q", got)
			}
		})
	}
}

func ptr(s string) *string { return &s }
