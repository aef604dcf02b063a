package main

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/vishvananda/netlink"
)

// Linux allows almost any bytes in an interface name. Real veths named
// with an escape sequence and with non-ASCII letters, on a real bridge:
// the escape reaches neither stdout nor stderr raw, the non-ASCII row
// stays in line, and scripts (ports -q into a pipe) get the names as
// they are.
func TestE2EOddInterfaceNames(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Restore: "none"})
	br, err := l.Handle().LinkByName("cni0")
	if err != nil {
		t.Fatal(err)
	}
	escName, wideName := "ev\x1b[2Jred", "vé网"
	for i, name := range []string{escName, wideName} {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: br.Attrs().Index}, PeerName: "oddpeer" + string(rune('0'+i)), PeerNamespace: netlink.NsFd(int(l.Pod(1).Ns))}
		if err := l.Handle().LinkAdd(veth); err != nil {
			t.Fatalf("add veth %q: %v", name, err)
		}
	}

	r := run(t, "ports", "--netns", l.Node)
	if r.code != 0 {
		t.Fatalf("ports: %+v", r)
	}
	if strings.Contains(r.stdout, "\x1b") {
		t.Errorf("raw escape sequence on stdout:\n%q", r.stdout)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	// Terminal columns: one per rune here but the CJK letter's two.
	width := func(s string) int { return utf8.RuneCountInString(s) + strings.Count(s, "网") }
	hdr := width(lines[0][:strings.Index(lines[0], "STATE")])
	seen := map[string]bool{}
	for _, ln := range lines[1:] {
		f := strings.Fields(ln)
		seen[f[1]] = true
		i := strings.Index(ln, " "+f[2]+" ") + 1
		if got := width(ln[:i]); got != hdr {
			t.Errorf("STATE of %q at column %d, header at %d:\n%s\n%s", f[1], got, hdr, lines[0], ln)
		}
	}
	if !seen[`ev\x1b[2Jred`] || !seen[wideName] {
		t.Errorf("names in the table: %v", seen)
	}

	r = run(t, "enable", escName, "--netns", l.Node)
	if r.code != 0 || strings.Contains(r.stdout, "\x1b") || !strings.Contains(r.stdout, `ev\x1b[2Jred`) {
		t.Errorf("enable: %+v", r)
	}
	r = run(t, "enable", "no\x1b[2Jsuch", "--netns", l.Node)
	if r.code != 2 || strings.Contains(r.stderr, "\x1b") || !strings.Contains(r.stderr, `no\x1b[2Jsuch`) {
		t.Errorf("enable of a missing odd name: %+v", r)
	}

	r = run(t, "ports", "-q", "--netns", l.Node)
	if !strings.Contains(r.stdout, "\n"+escName+"\n") || !strings.Contains(r.stdout, "\n"+wideName+"\n") {
		t.Errorf("ports -q into a pipe does not give the names as they are: %q", r.stdout)
	}
}
