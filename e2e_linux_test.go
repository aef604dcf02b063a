package main

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
	"github.com/vishvananda/netlink"
)

func newLab(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	return labtest.New(t, o)
}

// hairpinOf reads a port's hairpin mode straight from the kernel.
func hairpinOf(t *testing.T, l *lab.Lab, port string) bool {
	t.Helper()
	lk, err := l.Handle().LinkByName(port)
	if err != nil {
		t.Fatal(err)
	}
	pi, err := l.Handle().LinkGetProtinfo(lk)
	if err != nil {
		t.Fatal(err)
	}
	return pi.Hairpin
}

// The whole story: a pod that is its Service's only endpoint cannot reach
// itself through the ClusterIP while its port's hairpin is off, and can
// after hairpinctl enable; another pod reaches the Service either way.
func TestE2EHairpinStory(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Endpoints: []int{1}})
	self, other := l.Pod(1), l.Pod(2)

	if got, err := l.ConnectService(other, 3*time.Second); err != nil || got != self.Name {
		t.Fatalf("other pod → Service = %q, %v; want %q", got, err, self.Name)
	}
	if got, err := l.ConnectService(self, 1500*time.Millisecond); err == nil {
		t.Fatalf("endpoint pod reached itself (%q) with hairpin off: the lab does not reproduce the bug", got)
	}

	r := run(t, "--netns", l.Node, "enable", self.HostVeth)
	if r.code != 0 || !strings.Contains(r.stdout, "changed") {
		t.Fatalf("enable: %+v", r)
	}
	if got, err := l.ConnectService(self, 3*time.Second); err != nil || got != self.Name {
		t.Fatalf("after enable: endpoint pod → Service = %q, %v", got, err)
	}
	if got, err := l.ConnectService(other, 3*time.Second); err != nil || got != self.Name {
		t.Fatalf("after enable: other pod → Service = %q, %v", got, err)
	}

	// And back: disable breaks it again.
	if r := run(t, "disable", self.HostVeth, "--netns", l.Node); r.code != 0 {
		t.Fatalf("disable: %+v", r)
	}
	if _, err := l.ConnectService(self, 1500*time.Millisecond); err == nil {
		t.Fatal("endpoint pod reached itself after disable")
	}
}

func TestE2EPorts(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 3, Restore: "none"})
	if r := run(t, "enable", "veth2", "--netns", l.Node); r.code != 0 {
		t.Fatalf("enable veth2: %+v", r)
	}

	r := run(t, "ports", "--netns", l.Node)
	if r.code != 0 {
		t.Fatalf("ports: %+v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "BRIDGE PORT") {
		t.Fatalf("table:\n%s", r.stdout)
	}
	for _, ln := range lines {
		if len(ln) > 80 {
			t.Errorf("line wider than 80 columns (%d): %q", len(ln), ln)
		}
	}
	if f := strings.Fields(lines[2]); f[1] != "veth2" || f[3] != "on" || f[4] != "10.244.0.12" || f[5] != "-" {
		t.Errorf("veth2 row = %q", lines[2])
	}
	// -o wide has every column, the MAC too.
	r = run(t, "ports", "-o", "wide", "--netns", l.Node)
	lines = strings.Split(strings.TrimSpace(r.stdout), "\n")
	mac := l.Handle()
	lk, err := mac.LinkByName("veth2")
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(lines[2]); r.code != 0 || len(lines) != 4 || f[1] != "veth2" || f[5] != "on" || f[6] != lk.Attrs().HardwareAddr.String() || f[7] != "10.244.0.12" || f[8] != "-" {
		t.Errorf("wide:\n%s", r.stdout)
	}

	r = run(t, "ports", "-q", "--hairpin", "off", "--netns", l.Node)
	if r.stdout != "veth1\nveth3\n" {
		t.Errorf("-q --hairpin off = %q", r.stdout)
	}

	r = run(t, "-o", "json", "--netns", l.Node, "ports", "--bridge", "cni0")
	var ports []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &ports); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if len(ports) != 3 {
		t.Fatalf("%d ports in JSON", len(ports))
	}
	for _, key := range []string{"bridge", "name", "index", "hairpin", "state", "operState", "mac", "podIPs"} {
		if _, ok := ports[0][key]; !ok {
			t.Errorf("JSON lacks %q: %v", key, ports[0])
		}
	}
	if ports[1]["hairpin"] != true || ports[0]["hairpin"] != false {
		t.Errorf("hairpin in JSON: %v %v", ports[0]["hairpin"], ports[1]["hairpin"])
	}
	if ips, _ := ports[2]["podIPs"].([]any); len(ips) != 1 || ips[0] != "10.244.0.13" {
		t.Errorf("veth3 podIPs = %v", ports[2]["podIPs"])
	}

	// A port whose pod cannot be found shows [] in JSON, "-" in the table.
	br, _ := l.Handle().LinkByName("cni0")
	if err := l.Handle().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vethx", MasterIndex: br.Attrs().Index}, PeerName: "vethxp"}); err != nil {
		t.Fatal(err)
	}
	r = run(t, "ports", "vethx", "-o", "json", "--netns", l.Node)
	if !strings.Contains(r.stdout, `"podIPs": []`) {
		t.Errorf("unknown pod IPs: %s", r.stdout)
	}

	r = run(t, "ports", "veth1", "nope0", "--netns", l.Node)
	if r.code != 3 || !strings.Contains(r.stdout, "veth1") || !strings.Contains(r.stderr, "nope0: no such interface") {
		t.Errorf("partial listing: %+v", r)
	}
}

// A port is selected by its pod's IP, as the POD-IPS column prints it.
func TestE2EPortsByPodIP(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 3, Restore: "none"})
	ip1, ip2 := l.Pod(1).IP.String(), l.Pod(2).IP.String()
	if r := run(t, "ports", "-q", ip2, "--netns", l.Node); r.code != 0 || r.stdout != "veth2\n" {
		t.Errorf("ports -q %s: %+v", ip2, r)
	}
	// The same port by name and by IP is set once.
	r := run(t, "enable", ip1, "veth1", "--netns", l.Node, "-o", "json")
	var res struct{ Changed, Unchanged []string }
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 {
		t.Fatalf("enable %s: %v %+v", ip1, err, r)
	}
	if !slices.Equal(res.Changed, []string{"veth1"}) || len(res.Unchanged) != 0 || !hairpinOf(t, l, "veth1") {
		t.Errorf("enable %s veth1 = %+v", ip1, res)
	}
	if hairpinOf(t, l, "veth2") || hairpinOf(t, l, "veth3") {
		t.Error("enable by pod IP set another port")
	}
	r = run(t, "disable", "10.244.9.9", "--netns", l.Node)
	if r.code != 2 {
		t.Errorf("unknown pod IP: exit %d, want 2", r.code)
	}
	oneLineErr(t, r, "10.244.9.9: no bridge port has a pod with this IP in netns "+l.Node)
}

// Names and --bridge add up: veth1 is on cni0, --bridge names another.
func TestE2EEnableNamesAndBridge(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Restore: "none"})
	h := l.Handle()
	br2 := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br2"}}
	if err := h.LinkAdd(br2); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vethb2", MasterIndex: br2.Attrs().Index}, PeerName: "vethb2p"}); err != nil {
		t.Fatal(err)
	}
	// vethb2's peer stays in the node: not a pod's port, so --any-port.
	r := run(t, "enable", "--bridge", "br2", "veth1", "--bridge", "br2", "--any-port", "--netns", l.Node, "-o", "json")
	var res struct{ Changed []string }
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 {
		t.Fatalf("enable --bridge br2 veth1: %v %+v", err, r)
	}
	if !slices.Equal(res.Changed, []string{"veth1", "vethb2"}) || !hairpinOf(t, l, "veth1") || !hairpinOf(t, l, "vethb2") {
		t.Errorf("enable --bridge br2 veth1 changed %v, want veth1 and vethb2", res.Changed)
	}
	if hairpinOf(t, l, "veth2") {
		t.Error("veth2, on no bridge named, was set")
	}
	// A --bridge that does not exist is still an error beside names.
	r = run(t, "enable", "--bridge", "nobr0", "veth2", "--netns", l.Node)
	if r.code != 2 {
		t.Errorf("enable --bridge nobr0 veth2: exit %d, want 2", r.code)
	}
	oneLineErr(t, r, "bridge nobr0 not found")
}

func TestE2EEnableDisableBulk(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 3, Restore: "none"})

	// Flags after positional arguments, --dry-run writes nothing.
	r := run(t, "enable", "veth1", "veth2", "--dry-run", "--netns", l.Node)
	if r.code != 0 || strings.Count(r.stdout, "would change") != 2 {
		t.Fatalf("dry run: %+v", r)
	}
	if hairpinOf(t, l, "veth1") || hairpinOf(t, l, "veth2") {
		t.Fatal("--dry-run wrote hairpin")
	}

	r = run(t, "enable", "veth1", "--netns", l.Node, "-o", "json")
	var res struct {
		Changed, Unchanged []string
		Failed             []struct{ Name, Error string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 {
		t.Fatalf("enable veth1: %v %+v", err, r)
	}
	if !slices.Equal(res.Changed, []string{"veth1"}) || len(res.Unchanged) != 0 || res.Failed == nil {
		t.Errorf("enable veth1 result = %+v", res)
	}

	r = run(t, "enable", "--bridge", "cni0", "--netns", l.Node, "-o", "json")
	res.Changed, res.Unchanged = nil, nil
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != 0 {
		t.Fatalf("enable --bridge: %v %+v", err, r)
	}
	if !slices.Equal(res.Changed, []string{"veth2", "veth3"}) || !slices.Equal(res.Unchanged, []string{"veth1"}) {
		t.Errorf("bulk enable = %+v, want veth2,veth3 changed, veth1 unchanged", res)
	}
	for _, p := range []string{"veth1", "veth2", "veth3"} {
		if !hairpinOf(t, l, p) {
			t.Errorf("%s off after bulk enable", p)
		}
	}

	r = run(t, "disable", "--all", "--netns", l.Node)
	if r.code != 0 || strings.Count(r.stdout, "changed") != 3 {
		t.Errorf("disable --all: %+v", r)
	}

	// Several names, one unknown: the rest is done, exit 3.
	r = run(t, "enable", "veth1", "veth9", "veth3", "--netns", l.Node)
	if r.code != 3 || !hairpinOf(t, l, "veth1") || !hairpinOf(t, l, "veth3") {
		t.Errorf("partial enable: %+v", r)
	}
	if !strings.Contains(r.stderr, "veth9: no such interface") || !strings.Contains(r.stderr, "1 of 3 items failed") {
		t.Errorf("partial enable stderr: %q", r.stderr)
	}
}

func TestE2EBadInput(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Restore: "none"})
	h := l.Handle()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth9"}, PeerName: "veth9p"}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-empty"}}); err != nil {
		t.Fatal(err)
	}
	ns := l.Node
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	tests := []badInput{
		{"unknown interface", nil, []string{"enable", "nope0", "--netns", ns}, 2, "nope0: no such interface"},
		{"not a bridge port", nil, []string{"enable", "veth9", "--netns", ns}, 2, "veth9 is not attached to a bridge"},
		{"unknown bridge", nil, []string{"enable", "--bridge", "cni9", "--netns", ns}, 2, "bridge cni9 not found"},
		{"name too long", nil, []string{"enable", "vethabcdefghijklm", "--netns", ns}, 2, "is 17 bytes, the limit is 15"},
		{"slash in name", nil, []string{"enable", "a/b", "--netns", ns}, 2, "contains '/'"},
		{"space in name", nil, []string{"ports", "a b", "--netns", ns}, 2, "contains whitespace"},
		{"unknown port listed", nil, []string{"ports", "nope0", "-o", "json", "--netns", ns}, 2, "nope0: no such interface"},
		{"missing netns", nil, []string{"ports", "--netns", "no-such-ns-x"}, 2, "netns no-such-ns-x does not exist"},
		{"missing netns path", nil, []string{"enable", "--all", "--netns", "/proc/999999999/ns/net"}, 2, "does not exist"},
		{"nothing selected", nil, []string{"enable", "--netns", ns}, 2, "name the interfaces, or use --bridge BR or --all"},
		{"names and --all", nil, []string{"enable", "veth1", "--all", "--netns", ns}, 2, "not both"},
		{"--bridge and --all", nil, []string{"enable", "--all", "--bridge", "cni0", "--netns", ns}, 2, "not both"},
		{"bad output", nil, []string{"ports", "-o", "yaml", "--netns", ns}, 2, `unknown output format "yaml"`},
		{"bad hairpin filter", nil, []string{"ports", "--hairpin", "maybe"}, 2, "use on or off"},
		{"bad flag", nil, []string{"enable", "--bogus"}, 2, "enable: unknown flag --bogus (see: hairpinctl enable --help)"},
		{"wait without bridge", nil, []string{"enable", "--all", "--wait-bridge", "1s"}, 2, "--wait-bridge needs --bridge"},
		{"version with an argument", nil, []string{"version", "extra"}, 2, `version: takes no arguments (got "extra")`},
		{"services -4 and -6", nil, []string{"services", "-4", "-6"}, 2, "-4 and -6 exclude each other"},
		{"doctor missing CNI dir", nil, []string{"doctor", "--cni-conf-dir", "/nonexistent/cni", "--netns", ns}, 2, "--cni-conf-dir /nonexistent/cni is not a directory"},
		{"no CAP_NET_ADMIN", nobody, []string{"enable", "veth1"}, 1, "enable needs CAP_NET_ADMIN: run as root"},
		{"no CAP_NET_ADMIN disable", nobody, []string{"disable", "--all"}, 1, "disable needs CAP_NET_ADMIN: run as root"},
		{"no privilege for --netns", nobody, []string{"ports", "--netns", ns}, 1, "ports: entering netns " + ns + " needs CAP_SYS_ADMIN: run as root"},
	}
	checkBadInput(t, tests)

	t.Run("empty bridge is success", func(t *testing.T) {
		r := run(t, "enable", "--bridge", "br-empty", "--netns", ns)
		if r.code != 0 || !strings.Contains(r.stderr, "has no ports: nothing to do") {
			t.Errorf("%+v", r)
		}
	})
	t.Run("listing works unprivileged", func(t *testing.T) {
		r := runAs(t, nobody, "ports")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "BRIDGE") {
			t.Errorf("%+v", r)
		}
	})
}

func TestE2EWaitBridge(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Restore: "none"})
	start := time.Now()
	r := run(t, "enable", "--bridge", "late0", "--wait-bridge", "400ms", "--netns", l.Node)
	if r.code != 1 || time.Since(start) < 400*time.Millisecond {
		t.Errorf("timeout: %+v after %v", r, time.Since(start))
	}
	oneLineErr(t, r, "bridge late0 did not appear")

	// The bridge appears, its port already attached, while hairpinctl
	// waits: the port joins a bridge named tmpbr0, which is then renamed
	// late0 (a down bridge can be renamed), so enable finds the port.
	h := l.Handle()
	tmp := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "tmpbr0"}}
	if err := h.LinkAdd(tmp); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vlate", MasterIndex: tmp.Attrs().Index}, PeerName: "vlatep", PeerNamespace: netlink.NsFd(int(l.Pod(1).Ns))}); err != nil {
		t.Fatal(err)
	}
	renamed := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		renamed <- h.LinkSetName(tmp, "late0")
	}()
	r = run(t, "enable", "--bridge", "late0", "--wait-bridge", "20s", "--netns", l.Node)
	if err := <-renamed; err != nil {
		t.Fatalf("rename tmpbr0 to late0: %v", err)
	}
	if r.code != 0 || !strings.Contains(r.stdout, "vlate") {
		t.Fatalf("wait then enable: %+v", r)
	}
	if !hairpinOf(t, l, "vlate") {
		t.Error("vlate: hairpin off after waiting for late0 and enabling")
	}

	// At boot the bridge plugin creates the bridge, then attaches the first
	// pod's veth: the wait lasts until the port joins.
	early := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "early0"}}
	if err := h.LinkAdd(early); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(500 * time.Millisecond)
		renamed <- h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vearly", MasterIndex: early.Attrs().Index}, PeerName: "vearlyp", PeerNamespace: netlink.NsFd(int(l.Pod(1).Ns))})
	}()
	r = run(t, "enable", "--bridge", "early0", "--wait-bridge", "20s", "--netns", l.Node)
	if err := <-renamed; err != nil {
		t.Fatalf("attach vearly: %v", err)
	}
	if r.code != 0 || !strings.Contains(r.stdout, "vearly") || !hairpinOf(t, l, "vearly") {
		t.Fatalf("wait for the first port, then enable: %+v", r)
	}

	// A bridge with no port when the wait ends: nothing to do, said with
	// the bridge's name.
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "empty0"}}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	r = run(t, "enable", "--bridge", "empty0", "--wait-bridge", "300ms", "--netns", l.Node)
	if r.code != 0 || time.Since(start) < 300*time.Millisecond {
		t.Errorf("empty bridge: %+v after %v", r, time.Since(start))
	}
	oneLineErr(t, r, "enable: bridge empty0 has no ports: nothing to do")
}

// A typed --netns beats $HAIRPINCTL_NETNS wherever it is typed, before the
// command name or after it; the variable alone names the namespace.
func TestE2ENetnsFlagBeatsEnv(t *testing.T) {
	a := newLab(t, lab.Options{Pods: 1, Restore: "none"})
	b := newLab(t, lab.Options{Pods: 1, Restore: "none"})
	env := []string{"HAIRPINCTL_NETNS=" + a.Node}
	off := func() {
		t.Helper()
		for _, l := range []*lab.Lab{a, b} {
			lk, err := l.Handle().LinkByName("veth1")
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Handle().LinkSetHairpin(lk, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, args := range [][]string{
		{"--netns", b.Node, "enable", "--all"},
		{"enable", "--all", "--netns", b.Node},
		{"enable", "--netns", b.Node, "--all"},
		{"enable", "veth1", "--netns=" + b.Node},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			off()
			r := runCmd(t, nil, env, args...)
			if r.code != 0 {
				t.Fatalf("%+v", r)
			}
			if hairpinOf(t, a, "veth1") {
				t.Errorf("acted on $HAIRPINCTL_NETNS (%s), not on --netns %s", a.Node, b.Node)
			}
			if !hairpinOf(t, b, "veth1") {
				t.Errorf("--netns %s: veth1 still off", b.Node)
			}
		})
	}
	t.Run("variable alone", func(t *testing.T) {
		off()
		if r := runCmd(t, nil, env, "enable", "--all"); r.code != 0 {
			t.Fatalf("%+v", r)
		}
		if !hairpinOf(t, a, "veth1") || hairpinOf(t, b, "veth1") {
			t.Errorf("$HAIRPINCTL_NETNS=%s alone: a on %v, b on %v", a.Node, hairpinOf(t, a, "veth1"), hairpinOf(t, b, "veth1"))
		}
	})
	t.Run("watch", func(t *testing.T) {
		off()
		ready := filepath.Join(t.TempDir(), "ready")
		p := startBin(t, nil, env, bin, "--netns", b.Node, "watch", "--all", "--ready-file", ready)
		waitFile(t, p, ready)
		if code := p.stop(t, syscall.SIGTERM); code != 0 {
			t.Errorf("exit %d: %s", code, p.stderr.String())
		}
		if !strings.Contains(p.stdout.String(), "in netns "+b.Node+":") || hairpinOf(t, a, "veth1") || !hairpinOf(t, b, "veth1") {
			t.Errorf("watch followed the variable, not --netns %s:\n%s", b.Node, p.stdout.String())
		}
	})
}
