package bridgeports

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/clienttest"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestListPortsLab(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 3, Restore: "none"})
	c := clienttest.Open(t, l)
	// Turn pod 2's port on so the listing has both states.
	if err := l.Handle().LinkSetHairpin(mustLink(t, l, "veth2"), true); err != nil {
		t.Fatal(err)
	}
	ports, err := List(c, ListOptions{PodIPs: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 3 {
		t.Fatalf("got %d ports, want 3: %+v", len(ports), ports)
	}
	for i, p := range ports {
		n := i + 1
		want := fmt.Sprintf("veth%d", n)
		if p.Name != want || p.Bridge != "cni0" {
			t.Errorf("port %d = %s on %s, want %s on cni0", i, p.Name, p.Bridge, want)
		}
		if p.Hairpin != (n == 2) {
			t.Errorf("%s hairpin = %v, want %v", p.Name, p.Hairpin, n == 2)
		}
		if p.OperState != "up" || p.State != "forwarding" && p.State != "disabled" && p.State != "learning" && p.State != "listening" {
			t.Errorf("%s oper=%q stp=%q", p.Name, p.OperState, p.State)
		}
		if p.Index == 0 || len(p.MAC) != 17 {
			t.Errorf("%s index=%d mac=%q", p.Name, p.Index, p.MAC)
		}
		wantIP := fmt.Sprintf("10.244.0.%d", 10+n)
		if !slices.Equal(p.PodIPs, []string{wantIP}) {
			t.Errorf("%s podIPs = %v, want [%s]", p.Name, p.PodIPs, wantIP)
		}
		if !strings.HasPrefix(p.PodIPSource, "netnsid:") {
			t.Errorf("%s pod IP source = %q, want netnsid:…", p.Name, p.PodIPSource)
		}
	}
}

// netnsIDOf gives for a pod's namespace file the id the kernel gives its
// veth's peer (IFLA_LINK_NETNSID), and -1 for a file that is no namespace
// and for a path that does not exist.
func TestNetnsIDOf(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Restore: "none"})
	c := clienttest.Open(t, l)
	for _, n := range []int{1, 2} {
		pod := l.Pod(n)
		want := mustLink(t, l, pod.HostVeth).Attrs().NetNsID
		if got := netnsIDOf(c, filepath.Join(netops.NetnsDir, pod.Name)); got != want || got < 0 {
			t.Errorf("pod %d: netnsid %d, want %d (the veth's IFLA_LINK_NETNSID)", n, got, want)
		}
	}
	file := filepath.Join(t.TempDir(), "not-a-netns")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{file, file + "-missing"} {
		if got := netnsIDOf(c, path); got != -1 {
			t.Errorf("%s: netnsid %d, want -1", path, got)
		}
	}
}

// Both link dumps List chooses between find the same ports in the same
// state: pods' veths, a veth whose peer stays on the node, a vxlan, a
// port of a second bridge; not the peer nor a link on no bridge. Kinds and
// PodPort are those the test made; with one bridge asked for (filtered by
// the kernel, IFLA_MASTER, and again here), its ports only.
func TestPortLinkDumpMatchesBridgeDump(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Restore: "none"})
	c := clienttest.Open(t, l)
	h := l.Handle()
	cni0 := mustLink(t, l, l.Bridge)
	add := func(link netlink.Link, master netlink.Link) {
		t.Helper()
		if err := h.LinkAdd(link); err != nil {
			t.Fatal(err)
		}
		if master != nil {
			if err := h.LinkSetMaster(link, master); err != nil {
				t.Fatal(err)
			}
		}
	}
	br2 := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br2"}}
	add(br2, nil)
	add(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxl0"}, VxlanId: 10, Port: 4789}, cni0)
	add(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vx0"}, PeerName: "vx0p"}, cni0)
	add(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxl2"}, VxlanId: 12, Port: 4790}, mustLink(t, l, "br2"))
	add(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vxl9"}, VxlanId: 19, Port: 4791}, nil)
	if err := h.LinkSetHairpin(mustLink(t, l, "veth2"), true); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetHairpin(mustLink(t, l, "vxl2"), true); err != nil {
		t.Fatal(err)
	}
	type want struct {
		kind             string
		podPort, hairpin bool
	}
	wants := map[string]want{
		"veth1": {"veth", true, false}, "veth2": {"veth", true, true},
		"vxl0": {"vxlan", false, false}, "vx0": {"veth", false, false}, "vxl2": {"vxlan", false, true},
	}
	links, err := dumpPortLinks(c, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	bridged, err := Dump(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != len(wants) || len(bridged) != len(wants) {
		t.Fatalf("link dump %d ports, bridge dump %d, want %d", len(links), len(bridged), len(wants))
	}
	byName := map[string]Port{}
	for _, p := range bridged {
		byName[p.Name] = p
	}
	for _, p := range links {
		w, ok := wants[p.Name]
		if !ok {
			t.Errorf("link dump lists %s, no bridge's port", p.Name)
			continue
		}
		if p.Kind != w.kind || p.PodPort != w.podPort || p.Hairpin != w.hairpin {
			t.Errorf("%s: kind %q podPort %v hairpin %v, want %q %v %v", p.Name, p.Kind, p.PodPort, p.Hairpin, w.kind, w.podPort, w.hairpin)
		}
		b := byName[p.Name]
		if p.Index != b.Index || p.BridgeIndex != b.BridgeIndex || p.Hairpin != b.Hairpin || p.State != b.State ||
			p.OperState != b.OperState || p.MAC != b.MAC || p.peerIndex != b.peerIndex {
			t.Errorf("%s: link dump %+v, bridge dump %+v", p.Name, p, b)
		}
	}
	only, err := dumpPortLinks(c, map[int]bool{mustLink(t, l, "br2").Attrs().Index: true}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(only) != 1 || only[0].Name != "vxl2" {
		t.Errorf("ports of br2: %+v, want vxl2 alone", only)
	}
}

// TestListPortsPodIPsManyPods reads enough pod namespaces for the address
// dumps to run on several sockets at once, and a dual-stack pod, and checks
// every port got its own pod's addresses, IPv4 first.
func TestListPortsPodIPsManyPods(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(podAddrWorkersMax))
	const pods = podAddrWorkersMax*podAddrsPerWorker + 3
	l := labtest.New(t, lab.Options{Pods: pods, Restore: "none"})
	c := clienttest.Open(t, l)
	dual := l.Pod(7)
	ph, err := netlink.NewHandleAt(dual.Ns)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	eth0, err := ph.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	v6, _ := netlink.ParseAddr("fd00:244::7/64")
	v6.Flags = unix.IFA_F_NODAD
	if err := ph.AddrAdd(eth0, v6); err != nil {
		t.Fatal(err)
	}
	ports, err := List(c, ListOptions{PodIPs: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != pods {
		t.Fatalf("got %d ports, want %d", len(ports), pods)
	}
	for _, p := range ports {
		var n int
		if _, err := fmt.Sscanf(p.Name, "veth%d", &n); err != nil {
			t.Fatalf("unexpected port %s", p.Name)
		}
		want := []string{fmt.Sprintf("10.244.0.%d", 10+n)}
		if n == dual.N {
			want = append(want, "fd00:244::7")
		}
		if !slices.Equal(p.PodIPs, want) || !strings.HasPrefix(p.PodIPSource, "netnsid:") {
			t.Errorf("%s podIPs = %v from %q, want %v from netnsid:…", p.Name, p.PodIPs, p.PodIPSource, want)
		}
	}
}

// More pod namespaces than the queue holds (pods started meanwhile): they
// are read too, and nothing waits on a full queue (here no extra socket is
// opened, so only the caller reads it).
func TestPodAddrsMoreNamespacesThanExpected(t *testing.T) {
	const pods = 4
	l := labtest.New(t, lab.Options{Pods: pods, Restore: "none"})
	c := clienttest.Open(t, l)
	ports, err := dumpPortLinks(c, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		peers []vethPeer
		byNs  map[int]map[int][]string
	}
	done := make(chan result, 1)
	go func() {
		d := newAddrDumper(c, 1)
		var peers []vethPeer
		for _, p := range ports {
			if p.Kind == "veth" {
				v := vethPeer{index: p.peerIndex, netnsID: p.peerNetnsID}
				peers = append(peers, v)
				d.add(v)
			}
		}
		done <- result{peers, d.finish(false)}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the address dumper blocked with more namespaces than expected")
	}
	if len(r.peers) != pods {
		t.Fatalf("%d veth peers, want %d", len(r.peers), pods)
	}
	var got []string
	for _, v := range r.peers {
		got = append(got, r.byNs[v.netnsID][v.index]...)
	}
	slices.Sort(got)
	want := []string{"10.244.0.11", "10.244.0.12", "10.244.0.13", "10.244.0.14"}
	if !slices.Equal(got, want) {
		t.Errorf("pod addresses %v, want %v", got, want)
	}
}

func TestPodIPsFromNeighbourTables(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Restore: "none"})
	c := clienttest.Open(t, l)
	// Traffic from pod 1 to the bridge address teaches the bridge FDB the
	// pod's MAC and the node's ARP table its IP.
	if out, err := lab.Exec(l.Pod(1).Ns, "", "ping", "-c1", "-W2", "10.244.0.1"); err != nil {
		t.Skipf("ping unavailable: %v %s", err, out)
	}
	ports, err := Dump(c)
	if err != nil {
		t.Fatal(err)
	}
	bridges, err := bridgesByIndex(c)
	if err != nil {
		t.Fatal(err)
	}
	nameBridges(c, ports, bridges)
	// No netns lookup: only the neighbour path may fill the IPs.
	podIPsFromNeigh(c, ports)
	got := map[string][]string{}
	for _, p := range ports {
		got[p.Name] = p.PodIPs
	}
	if !slices.Equal(got["veth1"], []string{"10.244.0.11"}) {
		t.Errorf("veth1 via neigh = %v, want [10.244.0.11]", got["veth1"])
	}
	if len(got["veth2"]) != 0 {
		t.Errorf("veth2 via neigh = %v, want none (pod 2 sent nothing)", got["veth2"])
	}
}

// Bridges are read before the ports: a bridge the map lacks (made in
// between) is asked for by ifindex, one gone is named "if" and its index.
func TestNameBridgesMadeOrGoneInBetween(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none"})
	c := clienttest.Open(t, l)
	br, err := l.Handle().LinkByName(l.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	ports := []Port{{Name: "a", BridgeIndex: br.Attrs().Index}, {Name: "b", BridgeIndex: 99999}}
	bridges := map[int]string{}
	nameBridges(c, ports, bridges)
	if ports[0].Bridge != l.Bridge || ports[1].Bridge != "if99999" {
		t.Errorf("named %q and %q, want %q and if99999", ports[0].Bridge, ports[1].Bridge, l.Bridge)
	}
	if bridges[br.Attrs().Index] != l.Bridge {
		t.Errorf("bridges = %v: the one asked for is not kept", bridges)
	}
}

func TestListPortsBridgeFilter(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Restore: "none"})
	c := clienttest.Open(t, l)
	h := l.Handle()
	// A second bridge with no ports, and a veth that is no port.
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-empty"}}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth9"}, PeerName: "veth9p"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		bridges []string
		want    int
		wantErr error
	}{
		{"all", nil, 2, nil},
		{"cni0", []string{"cni0"}, 2, nil},
		{"empty bridge", []string{"br-empty"}, 0, nil},
		{"unknown bridge", []string{"nosuchbr"}, 0, netops.ErrNotFound},
		{"not a bridge", []string{"veth9"}, 0, netops.ErrNotBridge},
		{"bad name", []string{"a/b"}, 0, netops.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ports, err := List(c, ListOptions{Bridges: tt.bridges})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if len(ports) != tt.want {
				t.Errorf("got %d ports, want %d", len(ports), tt.want)
			}
		})
	}
	ports, _ := List(c, ListOptions{})
	sel, fails := Select(c, ports, []string{"veth2", "veth9", "nope0", "veth2"})
	if len(sel) != 1 || sel[0].Name != "veth2" {
		t.Errorf("selected %v, want [veth2]", sel)
	}
	if len(fails) != 2 || !errors.Is(fails[0].Err(), netops.ErrNotBridgePort) || !errors.Is(fails[1].Err(), netops.ErrNotFound) {
		t.Errorf("failures = %+v, want veth9 not a port, nope0 not found", fails)
	}
	if !strings.Contains(fails[0].Error, "veth9 is not attached to a bridge") {
		t.Errorf("message %q", fails[0].Error)
	}
}

func TestSetHairpinIdempotentAndDryRun(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 3, Restore: "none"})
	c := clienttest.Open(t, l)
	list := func() map[string]bool {
		t.Helper()
		ports, err := List(c, ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, p := range ports {
			m[p.Name] = p.Hairpin
		}
		return m
	}
	ports, _ := List(c, ListOptions{})

	dry := SetHairpin(c, ports, true, true)
	if len(dry.Changed) != 3 || !dry.DryRun {
		t.Fatalf("dry run = %+v", dry)
	}
	for name, on := range list() {
		if on {
			t.Errorf("dry run wrote %s", name)
		}
	}

	res := SetHairpin(c, ports, true, false)
	if len(res.Changed) != 3 || len(res.Unchanged) != 0 || len(res.Failed) != 0 {
		t.Fatalf("enable = %+v", res)
	}
	for name, on := range list() {
		if !on {
			t.Errorf("%s still off after enable", name)
		}
	}
	// Also check the kernel's own view through sysfs-free netlink protinfo.
	pi, err := l.Handle().LinkGetProtinfo(mustLink(t, l, "veth3"))
	if err != nil || !pi.Hairpin {
		t.Errorf("protinfo veth3 = %+v, %v", pi, err)
	}

	ports, _ = List(c, ListOptions{})
	again := SetHairpin(c, ports, true, false)
	if len(again.Changed) != 0 || len(again.Unchanged) != 3 {
		t.Errorf("second enable = %+v, want all unchanged", again)
	}
	off := SetHairpin(c, ports[:1], false, false)
	if !slices.Equal(off.Changed, []string{"veth1"}) {
		t.Errorf("disable veth1 = %+v", off)
	}
	if m := list(); m["veth1"] || !m["veth2"] {
		t.Errorf("after disable veth1: %v", m)
	}
}

func TestSetHairpinPortVanishes(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 4, Restore: "none"})
	c := clienttest.Open(t, l)
	ports, err := List(c, ListOptions{Bridges: []string{"cni0"}})
	if err != nil {
		t.Fatal(err)
	}
	// Pod 2 is deleted and pod 3 leaves the bridge between listing and setting.
	if err := l.Handle().LinkDel(mustLink(t, l, "veth2")); err != nil {
		t.Fatal(err)
	}
	if err := l.Handle().LinkSetNoMaster(mustLink(t, l, "veth3")); err != nil {
		t.Fatal(err)
	}
	res := SetHairpin(c, ports, true, false)
	if !slices.Equal(res.Changed, []string{"veth1", "veth4"}) {
		t.Errorf("changed = %v, want [veth1 veth4]", res.Changed)
	}
	if len(res.Failed) != 2 {
		t.Fatalf("failed = %+v, want veth2 and veth3", res.Failed)
	}
	for _, f := range res.Failed {
		if !errors.Is(f.Err(), netops.ErrVanished) {
			t.Errorf("%s: %v, want ErrVanished", f.Name, f.Err())
		}
	}
	if !strings.Contains(res.Failed[0].Error, "veth2 no longer exists") {
		t.Errorf("message %q", res.Failed[0].Error)
	}
	now, _ := List(c, ListOptions{})
	for _, p := range now {
		if !p.Hairpin {
			t.Errorf("%s not set", p.Name)
		}
	}
}

func TestSetHairpinManyPorts(t *testing.T) {
	// More ports than one window, so ACKs of several windows are matched.
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none"})
	c := clienttest.Open(t, l)
	br, _ := l.Handle().LinkByName("cni0")
	const n = 600
	for i := 0; i < n; i++ {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("m%d", i), MasterIndex: br.Attrs().Index}, PeerName: fmt.Sprintf("m%dp", i)}
		if err := l.Handle().LinkAdd(v); err != nil {
			t.Fatal(err)
		}
	}
	ports, err := List(c, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != n+1 {
		t.Fatalf("%d ports, want %d", len(ports), n+1)
	}
	res := SetHairpin(c, ports, true, false)
	if len(res.Changed) != n+1 || len(res.Failed) != 0 {
		t.Fatalf("changed %d failed %v", len(res.Changed), res.Failed)
	}
	ports, _ = List(c, ListOptions{})
	for _, p := range ports {
		if !p.Hairpin {
			t.Fatalf("%s off", p.Name)
		}
	}
}

func TestWaitForBridges(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none"})
	c := clienttest.Open(t, l)
	if err := WaitForBridges(c, []string{"cni0"}, time.Second); err != nil {
		t.Fatalf("existing bridge: %v", err)
	}
	start := time.Now()
	err := WaitForBridges(c, []string{"late0"}, 300*time.Millisecond)
	if !errors.Is(err, netops.ErrTimeout) || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("missing bridge: %v after %v", err, time.Since(start))
	}
	// The bridge appears, and its first port joins later (the bridge
	// plugin's order): the wait ends with the port, not the bridge.
	joined := make(chan time.Time, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "late0"}}
		_ = l.Handle().LinkAdd(br)
		time.Sleep(300 * time.Millisecond)
		joined <- time.Now()
		_ = l.Handle().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vlate0", MasterIndex: br.Attrs().Index}, PeerName: "vlate0p"})
	}()
	if err := WaitForBridges(c, []string{"late0"}, 10*time.Second); err != nil {
		t.Fatalf("bridge created while waiting: %v", err)
	}
	if at := <-joined; time.Now().Before(at) {
		t.Fatal("returned before the bridge had a port")
	}
	// A bridge that stays empty: the wait ends at the deadline, no error.
	if err := l.Handle().LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "empty0"}}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := WaitForBridges(c, []string{"empty0"}, 300*time.Millisecond); err != nil || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("empty bridge: %v after %v, want nil after the whole wait", err, time.Since(start))
	}
	if err := WaitForBridges(c, []string{"veth1"}, time.Second); !errors.Is(err, netops.ErrNotBridge) {
		t.Fatalf("veth1 as bridge: %v", err)
	}
}

func TestOpenNetnsErrors(t *testing.T) {
	for _, spec := range []string{"no-such-netns-xyz", "/nonexistent/ns/net"} {
		if _, err := netops.Open(spec); !errors.Is(err, netops.ErrNotFound) {
			t.Errorf("Open(%q) = %v, want ErrNotFound", spec, err)
		}
	}
	if _, err := netops.Open("/etc/hostname"); !errors.Is(err, netops.ErrInvalid) {
		t.Errorf("Open(/etc/hostname) = %v, want ErrInvalid", err)
	}
}

func mustLink(t *testing.T, l *lab.Lab, name string) netlink.Link {
	t.Helper()
	lk, err := l.Handle().LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return lk
}
