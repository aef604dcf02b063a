package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/vishvananda/netlink"
)

// addUplinks puts non-pod ports on the lab's bridge: a vxlan device (an
// overlay's uplink) and a veth whose peer stays in the node namespace (a
// patch cable to another bridge). It returns their names.
func addUplinks(t *testing.T, l *lab.Lab) []string {
	t.Helper()
	h := l.Handle()
	br, err := h.LinkByName(l.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	tap := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "upvx0"}, VxlanId: 42, Port: 4789}
	patch := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uppatch0"}, PeerName: "uppatch1"}
	for _, lk := range []netlink.Link{tap, patch} {
		if err := h.LinkAdd(lk); err != nil {
			t.Fatalf("add %s: %v", lk.Attrs().Name, err)
		}
		if err := h.LinkSetMaster(lk, br); err != nil {
			t.Fatalf("enslave %s: %v", lk.Attrs().Name, err)
		}
	}
	return []string{"upvx0", "uppatch0"}
}

// Bulk changes act on pods' ports only: hairpin on an uplink reflects the
// bridge's floods back out of it. A named uplink, or --any-port, is acted
// on; doctor judges pods' ports only.
func TestE2EBulkSkipsUplinks(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Restore: "none"})
	uplinks := addUplinks(t, l)

	r := run(t, "--netns", l.Node, "enable", "--bridge", l.Bridge, "-o", "json")
	var res struct {
		Changed, Unchanged []string
		Skipped            []struct{ Name, Reason string }
		Failed             []any
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 {
		t.Fatalf("enable --bridge: exit %d, %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	slices.Sort(res.Changed)
	if !slices.Equal(res.Changed, []string{l.Pod(1).HostVeth, l.Pod(2).HostVeth}) {
		t.Errorf("changed %v, want the two pods' ports", res.Changed)
	}
	var skipped []string
	for _, s := range res.Skipped {
		skipped = append(skipped, s.Name)
		if !strings.HasPrefix(s.Reason, "not a pod's port: ") {
			t.Errorf("skipped %s: reason %q", s.Name, s.Reason)
		}
	}
	slices.Sort(skipped)
	if !slices.Equal(skipped, []string{"uppatch0", "upvx0"}) {
		t.Errorf("skipped %v, want %v", skipped, uplinks)
	}
	for _, u := range uplinks {
		if hairpinOf(t, l, u) {
			t.Errorf("%s: hairpin turned on by a bulk enable", u)
		}
	}
	// doctor: the pods' ports are on; the uplinks are not judged.
	if r := run(t, "--netns", l.Node, "doctor", "-o", "json"); strings.Contains(r.stdout, `"status": "FAIL"`) &&
		strings.Contains(r.stdout, "upvx0") {
		t.Errorf("doctor judges an uplink:\n%s", r.stdout)
	}
	// The table says why.
	if r := run(t, "--netns", l.Node, "enable", "--all"); r.code != 0 ||
		!strings.Contains(r.stdout, "upvx0") || !strings.Contains(r.stdout, "skipped") || !strings.Contains(r.stdout, "a vxlan uplink") {
		t.Errorf("enable --all table:\n%s\n%s", r.stdout, r.stderr)
	}
	// Named, an uplink is acted on.
	if r := run(t, "--netns", l.Node, "enable", "upvx0"); r.code != 0 || !hairpinOf(t, l, "upvx0") {
		t.Errorf("enable uptap0: %+v", r)
	}
	// --any-port takes them all.
	if r := run(t, "--netns", l.Node, "enable", "--bridge", l.Bridge, "--any-port"); r.code != 0 || !hairpinOf(t, l, "uppatch0") {
		t.Errorf("enable --any-port: %+v", r)
	}
	// ports -o json says which are pods' ports.
	r = run(t, "--netns", l.Node, "ports", "-o", "json")
	var ports []struct {
		Name, Kind string
		PodPort    bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &ports); err != nil {
		t.Fatalf("ports -o json: %v\n%s", err, r.stdout)
	}
	for _, p := range ports {
		want := p.Name == l.Pod(1).HostVeth || p.Name == l.Pod(2).HostVeth
		if p.PodPort != want {
			t.Errorf("ports: %s podPort %v (kind %q), want %v", p.Name, p.PodPort, p.Kind, want)
		}
	}
}
