package labtest

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// ConntrackEvents counts the conntrack events of the flows to the lab's
// Service with ti-mo/conntrack's own Listen on a 32 MiB buffer: an
// independent count of what the kernel sent, to hold hairpinctl's
// delivered + lost to.
type ConntrackEvents struct {
	mu     sync.Mutex
	events int
	// others counts the events of other flows (the bridge's IGMP reports,
	// say): the kernel's drop counter for a socket counts them too.
	others int
	// timeWait has the client ports whose flow reached TIME_WAIT.
	timeWait map[uint16]bool
	err      error
}

// ListenConntrack starts counting in l's node namespace until t ends.
func ListenConntrack(t testing.TB, l *lab.Lab) *ConntrackEvents {
	t.Helper()
	c, err := conntrack.Dial(&netlink.Config{NetNS: int(l.NodeNs)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadBuffer(32 << 20); err != nil {
		t.Fatal(err)
	}
	evCh := make(chan conntrack.Event, 1<<16)
	errCh, err := c.Listen(evCh, 1, netfilter.GroupsCT)
	if err != nil {
		t.Fatal(err)
	}
	svc := netip.MustParseAddr(l.ServiceIP.String())
	ref := &ConntrackEvents{timeWait: map[uint16]bool{}}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case ev := <-evCh:
				if ev.Flow == nil || ev.Flow.TupleOrig.IP.DestinationAddress != svc {
					ref.mu.Lock()
					ref.others++
					ref.mu.Unlock()
					continue
				}
				ref.mu.Lock()
				ref.events++
				if pi := ev.Flow.ProtoInfo.TCP; pi != nil && pi.State == 7 { // TIME_WAIT
					ref.timeWait[ev.Flow.TupleOrig.Proto.SourcePort] = true
				}
				ref.mu.Unlock()
			case err := <-errCh:
				ref.mu.Lock()
				ref.err = err
				ref.mu.Unlock()
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-stopped
		// The library's trap: Close waits for its worker, which may be
		// blocked sending on either channel, so keep draining both.
		closed := make(chan struct{})
		go func() {
			for {
				select {
				case <-evCh:
				case <-errCh:
				case <-closed:
					return
				}
			}
		}()
		c.Close()
		close(closed)
	})
	return ref
}

// Accounted fails t unless the events delivered for the Service plus the
// socket's lost count make what the kernel sent: every Service event, and
// at most the events of other flows on top, which the drop counter counts
// when they were lost but no filter delivers. It returns the Service
// events sent.
func (r *ConntrackEvents) Accounted(t testing.TB, delivered, lost uint64) uint64 {
	t.Helper()
	r.mu.Lock()
	sent, others, err := uint64(r.events), uint64(r.others), r.err
	r.mu.Unlock()
	if err != nil {
		t.Fatalf("reference conntrack listener: %v", err)
	}
	if got := delivered + lost; got < sent || got > sent+others {
		t.Errorf("%d events delivered + %d lost != %d the kernel sent for the Service (+ up to %d of other flows): a silent loss or a miscount",
			delivered, lost, sent, others)
	}
	return sent
}

// WaitTimeWait waits until the flow from client port reached TIME_WAIT,
// its last event: every event before it was sent.
func (r *ConntrackEvents) WaitTimeWait(t testing.TB, port uint16) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		ok, err := r.timeWait[port], r.err
		r.mu.Unlock()
		switch {
		case err != nil:
			t.Fatalf("reference conntrack listener: %v", err)
		case ok:
			return
		case time.Now().After(deadline):
			t.Fatalf("reference conntrack listener never saw port %d reach TIME_WAIT", port)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// ShortTimeWait makes TIME_WAIT conntrack entries in l's node namespace
// expire after a second (the default, 120 s, would keep their destroy
// events out of a test).
func ShortTimeWait(t testing.TB, l *lab.Lab) {
	t.Helper()
	err := lab.In(l.NodeNs, func() error {
		return os.WriteFile("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait", []byte("1"), 0o644)
	})
	if err != nil {
		t.Fatalf("conntrack TIME_WAIT timeout: %v", err)
	}
}

// HoldService connects pod to l's Service, reads the serving pod's
// greeting (its name) and returns the open connection, closed when t
// ends: a flow that stays in the conntrack table.
func HoldService(t testing.TB, l *lab.Lab, pod *lab.Pod) (net.Conn, string) {
	t.Helper()
	var c net.Conn
	err := lab.In(pod.Ns, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", net.JoinHostPort(l.ServiceIP.String(), fmt.Sprint(l.ServicePort)), 3*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("%s → Service: %v", pod.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	name, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("%s → Service: no answer: %v", pod.Name, err)
	}
	settle(t, l, uint16(c.LocalAddr().(*net.TCPAddr).Port))
	return c, strings.TrimSpace(name)
}

// settle waits until the held flow from client port is in CLOSE_WAIT in
// the node's conntrack table: the server closes after its greeting, and
// the FIN and its ACK reach conntrack after the client read the greeting.
// Once settled the flow sends no event until the client closes, so a
// listener started afterwards sees none of the handshake's tail.
func settle(t testing.TB, l *lab.Lab, port uint16) {
	t.Helper()
	c, err := conntrack.Dial(&netlink.Config{NetNS: int(l.NodeNs)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc := netip.MustParseAddr(l.ServiceIP.String())
	deadline := time.Now().Add(5 * time.Second)
	for {
		flows, err := c.Dump(nil)
		if err != nil {
			t.Fatalf("conntrack dump: %v", err)
		}
		state := -1
		for _, f := range flows {
			if f.TupleOrig.IP.DestinationAddress == svc && f.TupleOrig.Proto.SourcePort == port && f.ProtoInfo.TCP != nil {
				state = int(f.ProtoInfo.TCP.State)
			}
		}
		if state == 5 { // CLOSE_WAIT
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("held flow from port %d never reached CLOSE_WAIT (state %d)", port, state)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}
