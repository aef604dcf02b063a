package watch

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/internal/clienttest"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
	"github.com/vishvananda/netlink"
)

// watchRun is a Watch running in the background for one test.
type watchRun struct {
	mu     sync.Mutex
	events []Event
}

// startWatch runs Watch on its own client in l's node namespace until the
// test ends, and waits for it to be ready.
func startWatch(t *testing.T, l *lab.Lab, o Options) *watchRun {
	t.Helper()
	c := clienttest.Open(t, l)
	ctx, cancel := context.WithCancel(context.Background())
	r := &watchRun{}
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, c, o, func(ev Event) {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v after cancel, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Watch did not return within 5s of cancel")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for r.find(func(ev Event) bool { return ev.Kind == KindReady }) == nil {
		select {
		case err := <-done:
			t.Fatalf("Watch ended before ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("Watch not ready after 10s; events: %+v", r.all())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r
}

func (r *watchRun) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *watchRun) find(match func(Event) bool) *Event {
	for _, ev := range r.all() {
		if match(ev) {
			return &ev
		}
	}
	return nil
}

// waitEvent polls for an event until the deadline.
func (r *watchRun) waitEvent(t *testing.T, what string, match func(Event) bool) Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ev := r.find(match); ev != nil {
			return *ev
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event within 10s; events: %+v", what, r.all())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func enabledFor(port, cause string) func(Event) bool {
	return func(ev Event) bool {
		return ev.Kind == KindEnabled && ev.Port == port && (cause == "" || ev.Cause == cause)
	}
}

// hairpinStates reads every port's hairpin mode with one dump, on a
// client of the test's own (the watcher's is not shared).
func hairpinStates(t *testing.T, c *netops.Client) map[string]bool {
	t.Helper()
	ports, err := bridgeports.Dump(c)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, p := range ports {
		m[p.Name] = p.Hairpin
	}
	return m
}

// waitHairpinOn polls until every named port has hairpin on.
func waitHairpinOn(t *testing.T, c *netops.Client, names ...string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for {
		st := hairpinStates(t, c)
		var off []string
		for _, n := range names {
			if !st[n] {
				off = append(off, n)
			}
		}
		if len(off) == 0 {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("hairpin still off after 10s on %d ports: %v", len(off), off[:min(len(off), 10)])
		}
		time.Sleep(time.Millisecond)
	}
}

// addPort adds a veth pair whose first end joins bridge br.
func addPort(t *testing.T, l *lab.Lab, br, name string) {
	t.Helper()
	b, err := l.Handle().LinkByName(br)
	if err != nil {
		t.Fatal(err)
	}
	// Its peer goes to pod 1's namespace: a pod's port, as a CNI plugin
	// makes one, which is what watch keeps on.
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: b.Attrs().Index}, PeerName: name + "p",
		PeerNamespace: netlink.NsFd(int(l.Pod(1).Ns))}
	if err := l.Handle().LinkAdd(v); err != nil {
		t.Fatalf("add %s to %s: %v", name, br, err)
	}
}

func addBridge(t *testing.T, l *lab.Lab, name string) {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := l.Handle().LinkAdd(br); err != nil {
		t.Fatalf("add bridge %s: %v", name, err)
	}
	if err := l.Handle().LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
}

func TestWatchStartAndJoin(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Restore: "none"})
	check := clienttest.Open(t, l)
	addBridge(t, l, "br-other")

	w := startWatch(t, l, Options{Bridges: []string{"cni0"}})
	ready := w.waitEvent(t, "ready", func(ev Event) bool { return ev.Kind == KindReady })
	if ready.Ports != 2 || ready.Bridge != "cni0" {
		t.Errorf("ready = %+v, want 2 ports on cni0", ready)
	}
	for _, p := range []string{"veth1", "veth2"} {
		if ev := w.find(enabledFor(p, CauseStart)); ev == nil || ev.Bridge != "cni0" || ev.Index == 0 {
			t.Errorf("no start event for %s: %+v", p, w.all())
		}
	}
	waitHairpinOn(t, check, "veth1", "veth2")

	// A port of an unselected bridge joins first, then pods on cni0: once
	// the later joins are handled, the earlier one was too, and left alone.
	addPort(t, l, "br-other", "vo1")
	if _, err := l.AddPod(); err != nil {
		t.Fatal(err)
	}
	addPort(t, l, "cni0", "vnew")
	took := waitHairpinOn(t, check, "veth3", "vnew")
	t.Logf("joined ports on within %v", took)
	w.waitEvent(t, "joined veth3", enabledFor("veth3", CauseJoined))
	w.waitEvent(t, "joined vnew", enabledFor("vnew", CauseJoined))
	if hairpinStates(t, check)["vo1"] {
		t.Error("vo1 on br-other (not selected) got hairpin on")
	}
	for _, ev := range w.all() {
		if ev.Kind == KindFailed || ev.Kind == KindError || ev.Port == "vo1" {
			t.Errorf("unexpected event %+v", ev)
		}
	}
	// Each port was written once: no echo or duplicate notification
	// caused a second write. (veth3 may be written twice: lab.AddPod
	// itself sets hairpin off right after the join, a real turn-off.)
	count := map[string]int{}
	for _, ev := range w.all() {
		if ev.Kind == KindEnabled {
			count[ev.Port]++
		}
	}
	for _, p := range []string{"veth1", "veth2", "vnew"} {
		if n := count[p]; n != 1 {
			t.Errorf("%s enabled %d times, want once: %+v", p, n, w.all())
		}
	}
}

// Every way of turning hairpin off is undone: RTM_SETLINK on the port
// (what `bridge link set` and the netlink package do), bridge-slave data
// (`ip link set type bridge_slave`), and sysfs.
func TestWatchFlipsBack(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 3, Restore: "none"})
	check := clienttest.Open(t, l)
	w := startWatch(t, l, Options{Bridges: []string{"cni0"}})
	waitHairpinOn(t, check, "veth1", "veth2", "veth3")

	ways := []struct {
		name, port string
		off        func() error
	}{
		{"netlink RTM_SETLINK", "veth1", func() error {
			lk, err := l.Handle().LinkByName("veth1")
			if err != nil {
				return err
			}
			return l.Handle().LinkSetHairpin(lk, false)
		}},
		{"ip link bridge_slave", "veth2", func() error {
			out, err := exec.Command("ip", "-n", l.Node, "link", "set", "veth2", "type", "bridge_slave", "hairpin", "off").CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		}},
		{"sysfs", "veth3", func() error {
			out, err := exec.Command("ip", "netns", "exec", l.Node, "sh", "-c", "echo 0 > /sys/class/net/veth3/brport/hairpin_mode").CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		}},
	}
	for _, way := range ways {
		t.Run(way.name, func(t *testing.T) {
			if err := way.off(); err != nil {
				t.Fatalf("turn %s off: %v", way.port, err)
			}
			w.waitEvent(t, "turned-off "+way.port, enabledFor(way.port, CauseTurnedOff))
			waitHairpinOn(t, check, way.port)
		})
	}
}

// With a receive buffer too small for one veth pair's notifications, a
// burst of joins overflows the subscription again and again: only the
// resubscribe-and-re-list path can find the ports whose notifications
// the kernel dropped.
func TestWatchSurvivesOverflow(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none"})
	check := clienttest.Open(t, l)
	w := startWatch(t, l, Options{Bridges: []string{"cni0"}, ReceiveBufferSize: 1})

	const n = 60
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("vb%d", i)
		addPort(t, l, "cni0", names[i])
	}
	waitHairpinOn(t, check, append(names, "veth1")...)
	ev := w.waitEvent(t, "overflow resync", func(ev Event) bool { return ev.Kind == KindResync && ev.Cause == ResyncOverflow })
	if ev.Error == "" {
		t.Errorf("overflow resync without the socket error: %+v", ev)
	}
	w.waitEvent(t, "a port found by re-listing", func(ev Event) bool { return ev.Kind == KindEnabled && ev.Cause == CauseResync })
	for _, ev := range w.all() {
		if ev.Kind == KindFailed || ev.Kind == KindError {
			t.Errorf("unexpected event %+v", ev)
		}
	}
}

func TestWatchBridgeRecreated(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none"})
	check := clienttest.Open(t, l)
	w := startWatch(t, l, Options{Bridges: []string{"cni0", "late0"}})
	w.waitEvent(t, "late0 missing", func(ev Event) bool { return ev.Kind == KindBridgeMissing && ev.Bridge == "late0" })
	waitHairpinOn(t, check, "veth1")

	// A bridge that did not exist at start.
	addBridge(t, l, "late0")
	w.waitEvent(t, "late0 added", func(ev Event) bool { return ev.Kind == KindBridgeAdded && ev.Bridge == "late0" })
	addPort(t, l, "late0", "vl1")
	waitHairpinOn(t, check, "vl1")

	// cni0 deleted: its ports are released with hairpin still on.
	br, err := l.Handle().LinkByName("cni0")
	if err != nil {
		t.Fatal(err)
	}
	oldIndex := br.Attrs().Index
	if err := l.Handle().LinkDel(br); err != nil {
		t.Fatal(err)
	}
	w.waitEvent(t, "cni0 removed", func(ev Event) bool { return ev.Kind == KindBridgeRemoved && ev.Bridge == "cni0" })

	// Re-created under the same name, a new ifindex; an old port rejoins
	// (a new bridge port starts with hairpin off) and a new one joins.
	addBridge(t, l, "cni0")
	w.waitEvent(t, "cni0 re-added", func(ev Event) bool {
		return ev.Kind == KindBridgeAdded && ev.Bridge == "cni0" && ev.Index != oldIndex
	})
	br, err = l.Handle().LinkByName("cni0")
	if err != nil {
		t.Fatal(err)
	}
	v1, err := l.Handle().LinkByName("veth1")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Handle().LinkSetMaster(v1, br); err != nil {
		t.Fatal(err)
	}
	addPort(t, l, "cni0", "vr1")
	waitHairpinOn(t, check, "veth1", "vr1")
	w.waitEvent(t, "veth1 rejoined", func(ev Event) bool {
		return ev.Kind == KindEnabled && ev.Port == "veth1" && ev.Cause == CauseJoined && ev.Bridge == "cni0"
	})
}

func TestWatchAllBridges(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none"})
	check := clienttest.Open(t, l)
	addBridge(t, l, "br1")
	addPort(t, l, "br1", "va1")
	addBridge(t, l, "br-idle") // no ports: its name is never looked up
	w := startWatch(t, l, Options{All: true})
	waitHairpinOn(t, check, "veth1", "va1")

	// An existing bridge changing state is no news; a new one is.
	idle, err := l.Handle().LinkByName("br-idle")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Handle().LinkSetDown(idle); err != nil {
		t.Fatal(err)
	}
	addBridge(t, l, "br2")
	addPort(t, l, "br2", "va2")
	waitHairpinOn(t, check, "va2")
	if ev := w.waitEvent(t, "va2 joined", enabledFor("va2", CauseJoined)); ev.Bridge != "br2" {
		t.Errorf("va2 event names bridge %q, want br2", ev.Bridge)
	}
	added := 0
	for _, ev := range w.all() {
		if ev.Kind == KindBridgeAdded {
			added++
			if ev.Bridge != "br2" {
				t.Errorf("bridge-added for %s, which existed at start", ev.Bridge)
			}
		}
	}
	if added != 1 {
		t.Errorf("%d bridge-added events, want 1 (br2): %+v", added, w.all())
	}
	if err := l.Handle().LinkDel(idle); err != nil {
		t.Fatal(err)
	}
	w.waitEvent(t, "br-idle removed", func(ev Event) bool { return ev.Kind == KindBridgeRemoved && ev.Bridge == "br-idle" })
}

func TestWatchBadOptions(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none"})
	c := clienttest.Open(t, l)
	tests := []struct {
		name string
		o    Options
		kind error
	}{
		{"neither", Options{}, netops.ErrInvalid},
		{"both", Options{All: true, Bridges: []string{"cni0"}}, netops.ErrInvalid},
		{"not a bridge", Options{Bridges: []string{"veth1"}}, netops.ErrNotBridge},
		{"bad name", Options{Bridges: []string{"a/b"}}, netops.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := Watch(ctx, c, tt.o, nil)
			if !errors.Is(err, tt.kind) {
				t.Errorf("Watch(%+v) = %v, want %v", tt.o, err, tt.kind)
			}
		})
	}
}

// Watch keeps pods' ports on and leaves an uplink alone, saying so once;
// with AnyPort it keeps the uplink on too.
func TestWatchSkipsUplinks(t *testing.T) {
	for _, anyPort := range []bool{false, true} {
		t.Run(fmt.Sprintf("AnyPort=%v", anyPort), func(t *testing.T) {
			l := labtest.New(t, lab.Options{Pods: 1, Restore: "none"})
			check := clienttest.Open(t, l)
			br, err := l.Handle().LinkByName(l.Bridge)
			if err != nil {
				t.Fatal(err)
			}
			vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx0", MasterIndex: br.Attrs().Index}, VxlanId: 7, Port: 4789}
			if err := l.Handle().LinkAdd(vx); err != nil {
				t.Fatal(err)
			}
			w := startWatch(t, l, Options{Bridges: []string{l.Bridge}, AnyPort: anyPort})
			addPort(t, l, l.Bridge, "vnew")
			waitHairpinOn(t, check, "veth1", "vnew")
			if anyPort {
				waitHairpinOn(t, check, "vx0")
				return
			}
			w.waitEvent(t, "vx0 skipped", func(ev Event) bool {
				return ev.Kind == KindSkipped && ev.Port == "vx0" && ev.Error == "not a pod's port: a vxlan uplink"
			})
			ports, err := bridgeports.List(check, bridgeports.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ports {
				if p.Name == "vx0" && p.Hairpin {
					t.Error("vx0, an uplink, has hairpin on")
				}
			}
		})
	}
}
