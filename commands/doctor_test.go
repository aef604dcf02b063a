package commands

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hairpinctl/hairpinctl/netops/doctor"
)

func TestWrapText(t *testing.T) {
	tests := []struct {
		s     string
		width int
		hang  string
		want  []string
	}{
		{"", 10, "", nil},
		{"one two three", 20, "", []string{"one two three"}},
		{"one two three", 7, "", []string{"one two", "three"}},
		{"one two three four", 9, "  ", []string{"one two", "  three", "  four"}},
		// A word longer than the line stays whole.
		{"a verylongword b", 5, "", []string{"a", "verylongword", "b"}},
		// Width counts characters, not bytes: the arrow is one.
		{"x → y", 5, "", []string{"x → y"}},
		{"  spaced   out  ", 20, "", []string{"spaced out"}},
	}
	for _, tt := range tests {
		got := wrapText(tt.s, tt.width, tt.hang)
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tt.want) {
			t.Errorf("wrapText(%q, %d, %q) = %q, want %q", tt.s, tt.width, tt.hang, got, tt.want)
		}
	}
}

// The table: every line fits 80 columns, the headline and fix read whole
// once unwrapped, details show for WARN and FAIL only, and are bounded.
func TestPrintDoctor(t *testing.T) {
	headline := "default/web:http 10.96.0.10:80 → endpoint 10.244.0.11:8080 sits behind veth1 on cni0 with hairpin off: it cannot reach itself through this Service (1 in 3 of its connections will hang)"
	var many []string
	for i := 0; i < 12; i++ {
		many = append(many, fmt.Sprintf("detail %d", i))
	}
	rep := &doctor.Report{
		Checks: []doctor.Check{
			{ID: "bridge-hairpin", Status: doctor.StatusPass, Finding: "every port of cni0 reflects hairpin traffic (3 ports)", Details: []string{"cni0: hairpin on for all 3 ports"}},
			{ID: "service:default/web:http", Status: doctor.StatusFail, Finding: headline, Fix: "hairpinctl enable veth1", Details: many},
			{ID: "cni-config", Status: doctor.StatusSkip, Finding: "no CNI configuration directory /etc/cni/net.d", Details: []string{}},
		},
		Summary: doctor.Summary{Status: doctor.StatusFail, Pass: 1, Fail: 1, Skip: 1, Netns: "host"},
	}
	t.Setenv("LC_ALL", "C.UTF-8")
	var b bytes.Buffer
	if err := printDoctor(&b, rep); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, ln := range strings.Split(out, "\n") {
		if n := utf8.RuneCountInString(ln); n > 80 {
			t.Errorf("line of %d columns: %q", n, ln)
		}
		if strings.Contains(ln, "\x1b[") {
			t.Errorf("colour on a non-terminal: %q", ln)
		}
	}
	// Unwrapped, the headline and its fix read as the sentence.
	flat := strings.Join(strings.Fields(out), " ")
	if !strings.Contains(flat, headline+" Fix: hairpinctl enable veth1") {
		t.Errorf("headline and fix not found whole in:\n%s", out)
	}
	if !strings.HasPrefix(out, "STATUS  CHECK / FINDING\nPASS    bridge-hairpin\n        every port of cni0") {
		t.Errorf("layout:\n%s", out)
	}
	if strings.Contains(out, "cni0: hairpin on for all") {
		t.Error("details of a PASS shown")
	}
	if !strings.Contains(out, "- detail 7\n") || strings.Contains(out, "detail 8") || !strings.Contains(out, "… 4 more (see -o json)") {
		t.Errorf("details not bounded at %d:\n%s", doctorMaxDetails, out)
	}
	if !strings.HasSuffix(out, "\nFAIL: 1 fail, 0 warn, 1 pass, 1 skip (netns host)\n") {
		t.Errorf("summary line:\n%s", out)
	}

	// Under the C locale: ASCII only, the arrow and ellipsis spelt out.
	// A name with an escape sequence is escaped in any locale.
	t.Setenv("LC_ALL", "C")
	rep.Checks[1].Details[0] = "veth\x1b[2J is odd"
	b.Reset()
	if err := printDoctor(&b, rep); err != nil {
		t.Fatal(err)
	}
	out = b.String()
	for i := 0; i < len(out); i++ {
		if out[i] >= 0x80 || out[i] == 0x1b {
			t.Fatalf("byte %#x under LC_ALL=C:\n%s", out[i], out)
		}
	}
	flat = strings.Join(strings.Fields(out), " ")
	if !strings.Contains(flat, "10.96.0.10:80 -> endpoint") || !strings.Contains(out, "... 4 more") || !strings.Contains(out, `veth\x1b[2J is odd`) {
		t.Errorf("under LC_ALL=C:\n%s", out)
	}
}
