package flows

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

var updateConntrack = flag.Bool("update-conntrack", false, "rewrite testdata/conntrack from a lab capture")

var labService = netip.MustParseAddr("10.96.0.10")

// newConntrackLab builds a lab whose Service is backed by pod 1 with
// hairpin on, so pod 1 can reach itself. With shortTimeWait TIME_WAIT
// entries expire after a second (the default, 120 s, would keep destroy
// events away).
func newConntrackLab(t *testing.T, shortTimeWait bool) (*lab.Lab, *netops.Client) {
	t.Helper()
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1}, Hairpin: true})
	if shortTimeWait {
		labtest.ShortTimeWait(t, l)
	}
	c, err := netops.Open(l.Node)
	if err != nil {
		t.Fatalf("open netns %s: %v", l.Node, err)
	}
	t.Cleanup(func() { c.Close() })
	return l, c
}

func localPort(c net.Conn) uint16 { return uint16(c.LocalAddr().(*net.TCPAddr).Port) }

// reapExpired dumps the node's table with the library: the kernel evicts
// the expired entries a dump walks over, which sends their destroy events
// now instead of at the next garbage collection (up to a minute away).
func reapExpired(t *testing.T, l *lab.Lab) {
	t.Helper()
	c, err := conntrack.Dial(&netlink.Config{NetNS: int(l.NodeNs)})
	if err != nil {
		t.Fatalf("conntrack dial: %v", err)
	}
	defer c.Close()
	if _, err := c.Dump(nil); err != nil {
		t.Fatalf("conntrack dump: %v", err)
	}
}

// ctRun is Stream running in the background of a test.
type ctRun struct {
	flows     chan Flow
	overflows chan Overflow
	idle      chan struct{}
	done      chan ctResult
	cancel    context.CancelFunc
	// seen keeps what waitFlow read past.
	seen []Flow
}

type ctResult struct {
	stats Stats
	err   error
}

// startConntrack runs Stream on cl with o until the test ends or stop.
// o.Flow, when set, runs before the flow is queued for the test.
func startConntrack(t *testing.T, cl *netops.Client, o Options) *ctRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &ctRun{
		flows:     make(chan Flow, 100000),
		overflows: make(chan Overflow, 100),
		idle:      make(chan struct{}, 1),
		done:      make(chan ctResult, 1),
		cancel:    cancel,
	}
	inner := o.Flow
	o.Flow = func(f Flow) error {
		if inner != nil {
			if err := inner(f); err != nil {
				return err
			}
		}
		select {
		case r.flows <- f:
			return nil
		default:
			return errors.New("test flow queue full")
		}
	}
	o.Overflow = func(ov Overflow) error {
		r.overflows <- ov
		return nil
	}
	o.Idle = func() error {
		select {
		case r.idle <- struct{}{}:
		default:
		}
		return nil
	}
	go func() {
		st, err := Stream(ctx, cl, o)
		r.done <- ctResult{st, err}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Error("Stream did not return after cancel")
		}
	})
	return r
}

// waitIdle waits for the first time the event socket was found empty:
// the subscription is up and the dump delivered.
func (r *ctRun) waitIdle(t *testing.T) {
	t.Helper()
	select {
	case <-r.idle:
	case res := <-r.done:
		t.Fatalf("Stream ended before idle: %+v", res)
	case <-time.After(10 * time.Second):
		t.Fatal("Stream never drained its event socket")
	}
}

// waitFlow returns the first flow, already seen or still to come, that
// satisfies ok; it keeps what it reads in seen. poke, when set, runs every
// 200ms while it waits.
func (r *ctRun) waitFlow(t *testing.T, what string, timeout time.Duration, poke func(), ok func(Flow) bool) Flow {
	t.Helper()
	for _, f := range r.seen {
		if ok(f) {
			return f
		}
	}
	deadline := time.After(timeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case f := <-r.flows:
			r.seen = append(r.seen, f)
			if ok(f) {
				return f
			}
		case <-tick.C:
			if poke != nil {
				poke()
			}
		case res := <-r.done:
			t.Fatalf("waiting for %s: Stream ended: %+v", what, res)
		case <-deadline:
			t.Fatalf("no %s within %v; saw %d flows: %+v", what, timeout, len(r.seen), r.seen)
		}
	}
}

// stop cancels the run and returns its result, failing if Stream does not
// return.
func (r *ctRun) stop(t *testing.T) ctResult {
	t.Helper()
	r.cancel()
	select {
	case res := <-r.done:
		r.done <- res
		return res
	case <-time.After(5 * time.Second):
		t.Fatal("Stream did not return after cancel")
	}
	return ctResult{}
}

func podIP(p *lab.Pod) netip.Addr { return netip.MustParseAddr(p.IP.String()) }

// The story: flows from another pod and from the endpoint pod
// itself, in the dump and as live events, with the right endpoint, the
// self-connection marked hairpin and SNAT.
func TestConntrackDumpFollowHairpin(t *testing.T) {
	l, cl := newConntrackLab(t, true)
	self, other := l.Pod(1), l.Pod(2)
	ep := podIP(self)

	otherConn, name := labtest.HoldService(t, l, other)
	if name != self.Name {
		t.Fatalf("other → Service answered %q, want %q", name, self.Name)
	}
	selfConn, _ := labtest.HoldService(t, l, self)

	r := startConntrack(t, cl, Options{ServiceIP: labService})
	r.waitIdle(t)
	var existing []Flow
	for len(r.flows) > 0 {
		existing = append(existing, <-r.flows)
	}
	if len(existing) != 2 {
		t.Fatalf("dump: %d flows, want the 2 held connections: %+v", len(existing), existing)
	}
	for _, f := range existing {
		if f.Event != EventExisting || f.Proto != "tcp" || f.Orig.Dst != labService || f.Orig.DPort != 80 {
			t.Errorf("dump flow: %+v", f)
		}
		if !f.DNAT || f.Reply.Src != ep || f.Reply.SPort != 8080 {
			t.Errorf("dump flow not DNATed to %s:8080: %+v", ep, f)
		}
		switch f.Orig.SPort {
		case localPort(otherConn):
			if f.Orig.Src != podIP(other) || f.Hairpin || f.SNAT {
				t.Errorf("other pod's flow: hairpin %v snat %v (%+v)", f.Hairpin, f.SNAT, f)
			}
			// The server closed, the client did not: half closed.
			if f.State != "FIN_WAIT" && f.State != "CLOSE_WAIT" {
				t.Errorf("other pod's held flow state %q, want FIN_WAIT or CLOSE_WAIT", f.State)
			}
		case localPort(selfConn):
			if f.Orig.Src != ep || !f.Hairpin || !f.SNAT {
				t.Errorf("self flow: hairpin %v snat %v (%+v)", f.Hairpin, f.SNAT, f)
			}
		default:
			t.Errorf("dump flow from an unknown connection: %+v", f)
		}
	}

	// Live: a connection from each pod.
	if got, err := l.ConnectService(other, 3*time.Second); err != nil || got != self.Name {
		t.Fatalf("other → Service: %q, %v", got, err)
	}
	if got, err := l.ConnectService(self, 3*time.Second); err != nil || got != self.Name {
		t.Fatalf("self → Service: %q, %v", got, err)
	}
	fromOther := r.waitFlow(t, "new event from the other pod", 5*time.Second, nil, func(f Flow) bool {
		return f.Event == EventNew && f.Orig.Src == podIP(other)
	})
	fromSelf := r.waitFlow(t, "new event from the endpoint pod", 5*time.Second, nil, func(f Flow) bool {
		return f.Event == EventNew && f.Orig.Src == ep
	})
	if fromOther.Reply.Src != ep || fromOther.Reply.SPort != 8080 || !fromOther.DNAT || fromOther.Hairpin || fromOther.SNAT {
		t.Errorf("new from other pod: %+v", fromOther)
	}
	if fromOther.State != "SYN_SENT" || fromOther.ID == 0 {
		t.Errorf("new from other pod: state %q id %d", fromOther.State, fromOther.ID)
	}
	if !fromSelf.Hairpin || !fromSelf.SNAT || !fromSelf.DNAT || fromSelf.Reply.Src != ep {
		t.Errorf("new from the endpoint pod itself: %+v", fromSelf)
	}
	// The masquerade address is the node's bridge address.
	if fromSelf.Reply.Dst != netip.MustParseAddr("10.244.0.1") {
		t.Errorf("self flow SNATed to %s, want the bridge's 10.244.0.1", fromSelf.Reply.Dst)
	}

	// Both end: TIME_WAIT lasts a second here, and a dump reaps it.
	reap := func() { reapExpired(t, l) }
	for _, n := range []Flow{fromOther, fromSelf} {
		d := r.waitFlow(t, fmt.Sprintf("destroy of flow %d", n.ID), 15*time.Second, reap, func(f Flow) bool {
			return f.Event == EventDestroy && f.ID == n.ID
		})
		if d.Orig != n.Orig || d.Reply != n.Reply || d.Hairpin != n.Hairpin || d.SNAT != n.SNAT {
			t.Errorf("destroy %+v does not match new %+v", d, n)
		}
	}
	var updates int
	for _, f := range r.seen {
		if f.Event == EventUpdate && f.ID == fromOther.ID {
			updates++
		}
	}
	if updates == 0 {
		t.Errorf("no update events for flow %d (the handshake and close)", fromOther.ID)
	}

	res := r.stop(t)
	if res.err != nil {
		t.Fatalf("Stream: %v", res.err)
	}
	want := len(existing) + len(r.seen) + len(r.flows)
	if res.stats.Flows != want || res.stats.Overflows != 0 || res.stats.Lost != 0 {
		t.Errorf("stats %+v, want %d flows and no overflow", res.stats, want)
	}
}

// Filters: port, protocol and address are all honoured, in the dump and
// in events; a UDP Service shows with its own state.
func TestConntrackFilters(t *testing.T) {
	l, cl := newConntrackLab(t, true)
	self, other := l.Pod(1), l.Pod(2)
	labtest.HoldService(t, l, other)
	// A UDP Service port: DNAT only, nobody listens (the flow stays UNREPLIED).
	if _, err := l.Exec("", "iptables", "-t", "nat", "-I", "PREROUTING", "-p", "udp", "-d", "10.96.0.10", "--dport", "53",
		"-j", "DNAT", "--to-destination", self.IP.String()+":5353"); err != nil {
		t.Skipf("iptables UDP DNAT: %v", err)
	}
	sendUDP := func() {
		err := lab.In(other.Ns, func() error {
			c, err := net.Dial("udp4", "10.96.0.10:53")
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("x"))
			return err
		})
		if err != nil {
			t.Fatalf("udp send: %v", err)
		}
	}
	sendUDP()

	dump := func(o Options) []Flow {
		t.Helper()
		var got []Flow
		o.NoFollow = true
		o.Flow = func(f Flow) error { got = append(got, f); return nil }
		if _, err := Stream(context.Background(), cl, o); err != nil {
			t.Fatalf("dump %+v: %v", o, err)
		}
		return got
	}
	tests := []struct {
		name   string
		o      Options
		protos string
	}{
		{"all", Options{ServiceIP: labService}, "tcp,udp"},
		{"port 80", Options{ServiceIP: labService, Port: 80}, "tcp"},
		{"port 53", Options{ServiceIP: labService, Port: 53}, "udp"},
		{"port 81", Options{ServiceIP: labService, Port: 81}, ""},
		{"tcp", Options{ServiceIP: labService, Proto: ProtoTCP}, "tcp"},
		{"udp", Options{ServiceIP: labService, Proto: ProtoUDP}, "udp"},
		{"sctp", Options{ServiceIP: labService, Proto: ProtoSCTP}, ""},
		{"udp port 80", Options{ServiceIP: labService, Proto: ProtoUDP, Port: 80}, ""},
		{"other IP", Options{ServiceIP: netip.MustParseAddr("10.96.0.11")}, ""},
		{"the endpoint IP", Options{ServiceIP: podIP(self)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var protos []string
			for _, f := range dump(tt.o) {
				protos = append(protos, f.Proto)
				if f.Proto == "udp" && (f.State != "UNREPLIED" || f.Reply.Src != podIP(self) || f.Reply.SPort != 5353) {
					t.Errorf("udp flow: %+v", f)
				}
			}
			slices.Sort(protos)
			if got := strings.Join(protos, ","); got != tt.protos {
				t.Errorf("protocols %q, want %q", got, tt.protos)
			}
		})
	}

	// Events are filtered the same way: follow UDP only, then make a TCP
	// and a UDP flow; only the UDP one arrives.
	r := startConntrack(t, cl, Options{ServiceIP: labService, Proto: ProtoUDP, NoDump: true})
	r.waitIdle(t)
	if _, err := l.ConnectService(other, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	sendUDP()
	r.waitFlow(t, "udp new event", 5*time.Second, nil, func(f Flow) bool { return f.Event == EventNew && f.Proto == "udp" })
	r.stop(t)
	for _, f := range append(r.seen, drain(r.flows)...) {
		if f.Proto != "udp" {
			t.Errorf("--proto udp let through %+v", f)
		}
	}
}

func drain(ch chan Flow) []Flow {
	var out []Flow
	for {
		select {
		case f := <-ch:
			out = append(out, f)
		default:
			return out
		}
	}
}

// A tiny receive buffer and a reader held up while a burst of
// connections happens: the overflow is reported with the kernel's count of
// lost events, a dump resynchronises, and following goes on. Nothing is
// lost silently: delivered + lost equals what an independent listener
// counted.
func TestConntrackOverflow(t *testing.T) {
	l, cl := newConntrackLab(t, false)
	other := l.Pod(2)
	ref := labtest.ListenConntrack(t, l)
	held, release := make(chan struct{}), make(chan struct{})
	first := true
	o := Options{
		ServiceIP:  labService,
		NoDump:     true,
		ReadBuffer: 1, // the kernel rounds it up to its minimum, a few KiB
		Flow: func(f Flow) error {
			if first {
				first = false
				close(held)
				<-release
			}
			return nil
		},
	}
	r := startConntrack(t, cl, o)
	r.waitIdle(t)
	if _, err := l.ConnectService(other, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	<-held
	// The reader is blocked in the callback: a burst now has only the
	// socket buffer to go to.
	const burst = 40
	for i := 0; i < burst; i++ {
		if _, err := l.ConnectService(other, 3*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	close(release)

	var ov Overflow
	select {
	case ov = <-r.overflows:
	case <-time.After(10 * time.Second):
		t.Fatal("no overflow reported after a burst into a tiny buffer")
	}
	if ov.Event != EventOverflow || ov.Overflows != 1 || ov.Lost == 0 {
		t.Errorf("overflow report %+v: want the first, with lost events counted", ov)
	}
	// The resync dump lists the burst's flows, in TIME_WAIT.
	r.waitFlow(t, "a resync flow", 10*time.Second, nil, func(f Flow) bool {
		return f.Event == EventExisting && f.Resync && f.State == "TIME_WAIT"
	})
	// Following goes on after the overflow: a live event of a new
	// connection arrives. Which one is not fixed: the buffer is a few KiB,
	// so on a loaded machine even this connection's first events can
	// overflow it again (and are counted as lost below).
	c, _ := labtest.HoldService(t, l, other)
	r.waitFlow(t, "an event of a new connection after the overflow", 10*time.Second, nil, func(f Flow) bool {
		return f.Event != EventExisting && f.Orig.SPort == localPort(c)
	})
	c.Close()
	ref.WaitTimeWait(t, localPort(c))
	res := r.stop(t) // delivers what is still queued
	if res.err != nil {
		t.Fatal(res.err)
	}
	live := 0
	for _, f := range append(r.seen, drain(r.flows)...) {
		if f.Event != EventExisting {
			live++
		}
	}
	sent := ref.Accounted(t, uint64(live), res.stats.Lost)
	if res.stats.Overflows < 1 || res.stats.Resyncs < 1 || res.stats.Lost < ov.Lost || res.stats.Cut {
		t.Errorf("stats %+v after overflow %+v", res.stats, ov)
	}
	t.Logf("kernel sent %d events: %d delivered, %d lost in %d overflows", sent, live, res.stats.Lost, res.stats.Overflows)
}

// Cancelling ends a follow parked on an idle socket at once, and
// NoFollow ends by itself after the dump.
func TestConntrackStops(t *testing.T) {
	l, cl := newConntrackLab(t, true)
	labtest.HoldService(t, l, l.Pod(2))
	r := startConntrack(t, cl, Options{ServiceIP: labService})
	r.waitIdle(t)
	// The held flow is in the dump; the lab's server closes its side after
	// answering, so that flow's FIN updates may also arrive as events: at
	// least the dumped one, then a clean stop on cancel.
	if res := r.stop(t); res.err != nil || res.stats.Flows < 1 {
		t.Errorf("after cancel: %+v", res)
	}

	done := make(chan error, 1)
	go func() {
		_, err := Stream(context.Background(), cl, Options{
			ServiceIP: labService, NoFollow: true, Flow: func(Flow) error { return nil }})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("NoFollow did not return after the dump")
	}

	// A callback error ends the run and comes back.
	boom := errors.New("boom")
	_, err := Stream(context.Background(), cl, Options{
		ServiceIP: labService, Flow: func(Flow) error { return boom }})
	if !errors.Is(err, boom) {
		t.Errorf("callback error: got %v", err)
	}
}

// captureFile holds raw conntrack messages from a lab, one hex line
// each, for the decoder tests that run without root.
var captureFile = filepath.Join("testdata", "conntrack", "messages.hex")

// Every event the kernel sends for the lab's flows decodes the same with
// decodeFlow as with the library; -update-conntrack saves them.
func TestConntrackDecodeMatchesLibrary(t *testing.T) {
	l, cl := newConntrackLab(t, true)
	self, other := l.Pod(1), l.Pod(2)
	ev, err := listen(cl, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()

	labtest.HoldService(t, l, other)
	labtest.HoldService(t, l, self)
	if _, err := l.ConnectService(other, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := l.ConnectService(self, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Exec("", "iptables", "-t", "nat", "-I", "PREROUTING", "-p", "udp", "-d", "10.96.0.10", "--dport", "53",
		"-j", "DNAT", "--to-destination", self.IP.String()+":5353"); err != nil {
		t.Fatal(err)
	}
	err = lab.In(other.Ns, func() error {
		c, err := net.Dial("udp4", "10.96.0.10:53")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	var raw [][]byte
	kinds := map[string]int{}
	// Destroys: wait out TIME_WAIT (a second) and reap with a dump.
	deadline := time.Now().Add(15 * time.Second)
	for kinds[EventDestroy] < 2 && time.Now().Before(deadline) {
		_ = ev.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		msgs, err := ev.Receive()
		if err != nil {
			reapExpired(t, l)
			continue
		}
		for _, m := range msgs {
			b, err := m.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			raw = append(raw, b)
			kinds[eventKind(b)]++
		}
	}
	if kinds[EventNew] < 3 || kinds[EventUpdate] == 0 || kinds[EventDestroy] < 2 {
		t.Fatalf("captured %v, want news, updates and destroys", kinds)
	}

	// And a dump's messages.
	dc, err := dial(cl)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	req, _ := netfilter.MarshalNetlink(netfilter.Header{SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: netfilter.MessageType(ctIpctnlMsgCTGet), Family: netfilter.ProtoIPv4,
		Flags: netlink.Request | netlink.Dump}, nil)
	msgs, err := dc.Execute(req)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		b, _ := m.MarshalBinary()
		raw = append(raw, b)
	}

	for i, b := range raw {
		checkDecode(t, i, b)
	}
	if *updateConntrack {
		var sb strings.Builder
		sb.WriteString("# Raw conntrack netlink messages from a lab (see TestConntrackDecodeMatchesLibrary):\n")
		sb.WriteString("# TCP from another pod and from the endpoint pod itself (hairpin) to 10.96.0.10:80,\n")
		sb.WriteString("# UDP to 10.96.0.10:53 DNATed to 10.244.0.11:5353, events then a dump.\n")
		for _, b := range raw {
			sb.WriteString(hex.EncodeToString(b))
			sb.WriteByte('\n')
		}
		if err := os.MkdirAll(filepath.Dir(captureFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(captureFile, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %d messages to %s", len(raw), captureFile)
	}
}

// Reading an event, filtering, decoding and delivering it allocates
// nothing: under a storm every allocation is paid tens of thousands of
// times a second, and memory must stay flat while following.
func TestConntrackEventPathAllocs(t *testing.T) {
	var events [][]byte
	for _, b := range readCapture(t) {
		if k := eventKind(b); k != "" && k != EventExisting {
			events = append(events, b)
		}
	}
	delivered := 0
	w := &ctWatch{c: &netops.Client{}, m: newFlowMatcher(labService, 0, 0), o: Options{
		ServiceIP: labService,
		Flow:      func(Flow) error { delivered++; return nil },
	}}
	allocs := testing.AllocsPerRun(100, func() {
		for _, b := range events {
			if _, err := w.handle(b, EventNew, false, 0); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 || delivered == 0 {
		t.Errorf("%v allocations per %d events (%d delivered)", allocs, len(events), delivered)
	}
}
