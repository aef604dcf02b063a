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

// Count is how many events were seen so far, and the listener's error.
func (r *ConntrackEvents) Count() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events, r.err
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
	return c, strings.TrimSpace(name)
}
