package commands

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
)

// Linux takes almost any byte in an interface name: what could rewrite
// the screen is escaped, printable text (non-ASCII too) is kept.
func TestTermSafe(t *testing.T) {
	tests := []struct{ in, want string }{
		{"veth1", "veth1"},
		{"vé网", "vé网"},
		{"ev\x1b[31mred", `ev\x1b[31mred`},
		{"a\x07b\x7f", `a\x07b\x7f`},
		{"c1\u009b2J", `c1\u009b2J`},
		{"bidi\u202eevil", `bidi\u202eevil`},
		{"bad\xffutf8", `bad\xffutf8`},
		{`back\slash`, `back\\slash`},
	}
	for _, tt := range tests {
		if got := termSafe(tt.in); got != tt.want {
			t.Errorf("termSafe(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := termSafeText(`"a\x1b" is bad` + "\x1b"); got != `"a\x1b" is bad\x1b` {
		t.Errorf("termSafeText = %q", got)
	}
}

func TestDisplayWidth(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"veth1", 5},
		{"vé", 2},
		{"ve\u0301", 2}, // e and a combining acute
		{"v网", 3},
		{"\x1b[31moff\x1b[0m", 3},
		{"🙂", 2},
	}
	for _, tt := range tests {
		if got := displayWidth(tt.in); got != tt.want {
			t.Errorf("displayWidth(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// A name with an escape sequence reaches the table escaped, and a name
// with wide or combining characters keeps its row in line.
func TestPortsTableOddNames(t *testing.T) {
	names := []string{"veth1", "ev\x1b[31mred", "vé网", "ve\u0301x"}
	var ports []bridgeports.Port
	for i, n := range names {
		ports = append(ports, bridgeports.Port{Bridge: "cni0", Name: n, Index: i + 5, State: "forwarding", OperState: "up", MAC: "aa:bb:cc:dd:ee:0" + string(rune('1'+i)), PodIPs: []string{"10.244.0." + string(rune('1'+i))}})
	}
	var b bytes.Buffer
	if err := printPortsTable(&b, ports); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "\x1b") {
		t.Errorf("raw escape in the table: %q", out)
	}
	if !strings.Contains(out, `ev\x1b[31mred`) {
		t.Errorf("escaped name missing: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	ips := displayWidth(lines[0][:strings.Index(lines[0], "POD-IPS")])
	for _, ln := range lines[1:] {
		i := strings.Index(ln, "10.244.0.")
		if got := displayWidth(ln[:i]); got != ips {
			t.Errorf("POD-IPS at column %d, header at %d:\n%s\n%s", got, ips, lines[0], ln)
		}
	}
}
