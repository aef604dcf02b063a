package commands

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
	"github.com/hairpinctl/hairpinctl/netops/pods"

	"golang.org/x/sys/unix"
)

// openPTY returns the terminal end of a new pseudo-terminal.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	_, tty := openPTYPair(t)
	return tty
}

// openPTYPair returns both ends of a new pseudo-terminal.
func openPTYPair(t *testing.T) (*os.File, *os.File) {
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
	return master, tty
}

// onTerminal runs print with a terminal as its writer, as a user at a
// prompt has it, and returns what reached the screen.
func onTerminal(t *testing.T, print func(w io.Writer) error) string {
	t.Helper()
	t.Setenv("NO_COLOR", "")
	t.Setenv("TERM", "xterm-256color")
	master, tty := openPTYPair(t)
	// Raw mode: no \n -> \r\n, no echo.
	tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ICANON
	if err := unix.IoctlSetTermios(int(tty.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(master) // EIO once the terminal end is closed
		done <- b
	}()
	if err := print(tty); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	return string(<-done)
}

var sgr = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// checkColumns fails unless, once the colour is taken off, each of cells
// (HEADER=value) starts in the row whose first words are the key where its
// header starts, counted in terminal columns; and the output was coloured
// at all.
func checkColumns(t *testing.T, out string, rows map[string][]string) {
	t.Helper()
	if !sgr.MatchString(out) {
		t.Fatalf("no colour on a terminal:\n%s", out)
	}
	lines := strings.Split(strings.TrimRight(sgr.ReplaceAllString(out, ""), "\n"), "\n")
	// col finds s as a whole header (POD, not the start of POD-IPS).
	col := func(line, s string) int {
		for off := 0; ; {
			i := strings.Index(line[off:], s)
			if i < 0 {
				return -1
			}
			i += off
			end := i + len(s)
			if (i == 0 || line[i-1] == ' ') && (end == len(line) || line[end] == ' ') {
				return utf8.RuneCountInString(line[:i])
			}
			off = end
		}
	}
	// at is line from terminal column n on.
	at := func(line string, n int) string {
		for i := range line {
			if utf8.RuneCountInString(line[:i]) >= n {
				return line[i:]
			}
		}
		return ""
	}
	for prefix, cells := range rows {
		found := false
		for _, ln := range lines[1:] {
			if !strings.HasPrefix(strings.Join(strings.Fields(ln), " ")+" ", prefix+" ") {
				continue
			}
			found = true
			for _, c := range cells {
				hdr, val, _ := strings.Cut(c, "=")
				h := col(lines[0], hdr)
				if got := at(ln, h); h < 0 || !strings.HasPrefix(got+" ", val+" ") {
					t.Errorf("under %s (column %d) %q, want %q:\n%s\n%s", hdr, h, got, val, lines[0], ln)
				}
			}
		}
		if !found {
			t.Errorf("no row starts with %q:\n%s", prefix, out)
		}
	}
}

// Coloured cells (ports' HAIRPIN, enable's RESULT, services'
// HAIRPIN-MASQ) stay under their uncoloured headers and keep the columns
// after them in line: the colour is not counted as width.
func TestColouredTablesAlign(t *testing.T) {
	t.Run("ports", func(t *testing.T) {
		ports := []bridgeports.Port{
			{Bridge: "cni0", Name: "veth1", Index: 5, State: "forwarding", OperState: "up", MAC: "aa:bb:cc:dd:ee:01", PodIPs: []string{"10.244.0.11"},
				Pod: &pods.Pod{Namespace: "default", Name: "web-0", ContainerID: "0123456789abcdef0123", Interface: "eth0", Source: "cache"}},
			{Bridge: "cni0", Name: "veth2", Index: 6, Hairpin: true, State: "forwarding", OperState: "up", MAC: "aa:bb:cc:dd:ee:02", PodIPs: []string{}},
		}
		out := onTerminal(t, func(w io.Writer) error { return printPortsTable(w, ports) })
		checkColumns(t, out, map[string][]string{
			"cni0 veth1": {"HAIRPIN=off", "POD-IPS=10.244.0.11", "POD=default/web-0"},
			"cni0 veth2": {"HAIRPIN=on", "POD-IPS=-", "POD=-"},
		})
		out = onTerminal(t, func(w io.Writer) error { return printPortsWide(w, ports) })
		checkColumns(t, out, map[string][]string{
			"cni0 veth1": {"HAIRPIN=off", "MAC=aa:bb:cc:dd:ee:01", "POD-IPS=10.244.0.11", "POD=default/web-0", "CONTAINER=0123456789abc", "IFACE=eth0", "SOURCE=cache"},
			"cni0 veth2": {"HAIRPIN=on", "MAC=aa:bb:cc:dd:ee:02", "POD-IPS=-", "POD=-", "CONTAINER=-", "SOURCE=-"},
		})
	})
	t.Run("enable", func(t *testing.T) {
		res := &bridgeports.SetResult{Changed: []string{"veth1"}, Unchanged: []string{"veth2"}, Failed: []bridgeports.Failure{{Name: "veth3", Error: "gone"}}}
		out := onTerminal(t, func(w io.Writer) error { return printSetResult(w, res, true) })
		checkColumns(t, out, map[string][]string{
			"veth1": {"RESULT=changed", "DETAIL=hairpin off -> on"},
			"veth2": {"RESULT=unchanged", "DETAIL=already on"},
			"veth3": {"RESULT=failed", "DETAIL=gone"},
		})
	})
	t.Run("services", func(t *testing.T) {
		svcs := []kubeproxy.Service{{
			Namespace: "default", Name: "web", ClusterIP: "10.96.0.10", Port: 80, Protocol: "TCP",
			Endpoints: []kubeproxy.Endpoint{
				{IP: "10.244.0.11", Port: 8080, Probability: 0.5, Share: 0.5, HairpinMasq: true, SessionAffinity: true},
				{IP: "10.244.0.12", Port: 8080, Probability: 1, Share: 0.5},
			},
		}}
		out := onTerminal(t, func(w io.Writer) error { return printServicesTable(w, svcs) })
		checkColumns(t, out, map[string][]string{
			"endpoint 10.244.0.11:8080": {"SHARE=0.5", "HAIRPIN-MASQ=yes", "AFFINITY=yes"},
			"endpoint 10.244.0.12:8080": {"SHARE=0.5", "HAIRPIN-MASQ=no", "AFFINITY=-"},
		})
	})
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
		{"dumb terminal", tty, nil, false},
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
			t.Setenv("TERM", "xterm-256color")
			if tt.name == "dumb terminal" {
				t.Setenv("TERM", "dumb")
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
