package nlsock

import (
	"os"
	"runtime"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// throwawayNetns makes a network namespace with bridges named links, for
// one test, and returns a handle on it.
func throwawayNetns(t *testing.T, links ...string) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // the thread is now in ns
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // a thread left in the wrong namespace
		}
	}()
	t.Cleanup(func() { ns.Close() })
	for _, name := range links {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	return ns
}

// A link dump on a Conn opened in a namespace streams exactly the links
// the test made there (and lo), twice on the reused buffer.
func TestOpenRouteDumpsLinks(t *testing.T) {
	want := []string{"lo", "nlsk0", "nlsk1", "nlsk2"}
	c, err := OpenRoute(throwawayNetns(t, want[1:]...), 32<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Twice: the second request reuses the buffer and gets its own answers.
	for range 2 {
		req := c.NewRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
		var got []string
		err = req.Stream(unix.RTM_NEWLINK, func(m []byte) {
			attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range attrs {
				if a.Attr.Type == unix.IFLA_IFNAME {
					got = append(got, string(a.Value[:len(a.Value)-1]))
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("dump gave links %v, net.Interfaces %v", got, want)
		}
	}
}

// A request the kernel rejects returns its errno.
func TestStreamReturnsKernelError(t *testing.T) {
	c, err := OpenRoute(throwawayNetns(t), 32<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// RTM_GETLINK for an ifindex no link has: ENODEV.
	req := c.NewRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = 1 << 30
	req.AddData(msg)
	err = req.Stream(unix.RTM_NEWLINK, func([]byte) { t.Error("an answer for a missing link") })
	if err != unix.ENODEV {
		t.Errorf("err = %v, want ENODEV", err)
	}
}
