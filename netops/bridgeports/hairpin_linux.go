package bridgeports

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// SetWindow is how many RTM_SETLINK requests are in flight before their
// ACKs are read. Each ACK echoes the request (about 80 bytes), so a window
// of 128 fits well inside the receive buffer set below: no ACK is lost.
const SetWindow = 128

// setRcvBuf is the receive buffer asked for on the batching socket.
const setRcvBuf = 1 << 20

// SetHairpin turns hairpin mode on or off on ports. Ports already in the
// wanted state are Unchanged and not written. The rest are written from
// this one process with one RTM_SETLINK (AF_BRIDGE, IFLA_PROTINFO/
// IFLA_BRPORT_MODE) per port, pipelined in windows, and every ACK is
// matched to its port by sequence number, so one failure (a pod deleted
// mid-way) costs that port only. With dryRun nothing is written and the
// ports that would change are reported as Changed.
func SetHairpin(c *netops.Client, ports []Port, on, dryRun bool) *SetResult {
	res := NewSetResult()
	res.DryRun = dryRun
	todo := make([]Port, 0, len(ports))
	for _, p := range ports {
		if p.Hairpin == on {
			res.Unchanged = append(res.Unchanged, p.Name)
		} else {
			todo = append(todo, p)
		}
	}
	if dryRun {
		for _, p := range todo {
			res.Changed = append(res.Changed, p.Name)
		}
		return res
	}
	if len(todo) == 0 {
		return res
	}
	// Each queued ACK is charged its skb's truesize (about 768 bytes), not
	// its 36 bytes, so ask for room beyond rmem_max (SO_RCVBUFFORCE, which
	// CAP_NET_ADMIN allows). If refused, a window of 128 still fits the
	// default 208 KiB.
	if err := c.RouteConn().SetReceiveBufferSize(setRcvBuf, true); err != nil {
		_ = c.RouteConn().SetReceiveBufferSize(setRcvBuf, false)
	}
	for start := 0; start < len(todo); start += SetWindow {
		end := min(start+SetWindow, len(todo))
		setWindow(c, todo[start:end], on, res)
	}
	return res
}

// ackTimeout bounds the wait for a window's ACKs; the kernel answers in
// microseconds, so only a wedged socket reaches it.
const ackTimeout = 10 * time.Second

// setWindow sends one request per port, then reads until every request
// has its ACK or error.
func setWindow(c *netops.Client, ports []Port, on bool, res *SetResult) {
	mode := []byte{0}
	if on {
		mode[0] = 1
	}
	pending := make(map[uint32]*Port, len(ports))
	order := make([]uint32, 0, len(ports))
	// All requests of the window go in one datagram: the kernel walks the
	// messages of a datagram in order and ACKs each, so a window costs one
	// sendmsg instead of one per port.
	var buf []byte
	for i := range ports {
		p := &ports[i]
		req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
		req.Seq = c.RouteConn().NextSeq()
		msg := nl.NewIfInfomsg(unix.AF_BRIDGE)
		msg.Index = int32(p.Index)
		req.AddData(msg)
		protinfo := nl.NewRtAttr(unix.IFLA_PROTINFO|unix.NLA_F_NESTED, nil)
		protinfo.AddRtAttr(nl.IFLA_BRPORT_MODE, mode)
		req.AddData(protinfo)
		buf = append(buf, req.Serialize()...)
		pending[req.Seq] = p
		order = append(order, req.Seq)
	}
	if err := unix.Sendto(c.RouteConn().Fd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		for _, seq := range order {
			p := pending[seq]
			res.Fail(p.Name, fmt.Errorf("set hairpin on %s: %w", p.Name, err))
		}
		return
	}
	errs := map[uint32]error{}
	rb := c.RouteConn().RecvBuf()
	deadline := time.Now().Add(ackTimeout)
	for len(errs) < len(pending) {
		msgs, err := c.RouteConn().Recv(rb, deadline)
		if err != nil {
			// Timed out or the socket failed: every unanswered port fails.
			for seq, p := range pending {
				if _, done := errs[seq]; !done {
					errs[seq] = fmt.Errorf("set hairpin on %s: no answer from the kernel: %w", p.Name, err)
				}
			}
			break
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if _, ok := pending[m.Header.Seq]; !ok {
				continue
			}
			code := int32(nl.NativeEndian().Uint32(m.Data[0:4]))
			if code == 0 {
				errs[m.Header.Seq] = nil
			} else {
				errs[m.Header.Seq] = syscall.Errno(-code)
			}
		}
	}
	for _, seq := range order {
		p := pending[seq]
		if err := errs[seq]; err != nil {
			res.Fail(p.Name, setError(p.Name, err))
		} else {
			res.Changed = append(res.Changed, p.Name)
		}
	}
}

// setError explains a failed RTM_SETLINK in the user's terms.
func setError(name string, err error) error {
	switch errnoOf(err) {
	case unix.ENODEV:
		return netops.Errorf(netops.ErrVanished, "%s no longer exists", name)
	case unix.EOPNOTSUPP:
		// rtnl_bridge_setlink: the device has no bridge master any more.
		return netops.Errorf(netops.ErrVanished, "%s is no longer attached to a bridge", name)
	case unix.EPERM, unix.EACCES:
		return netops.Errorf(netops.ErrPermission, "set hairpin on %s needs CAP_NET_ADMIN: run as root", name)
	}
	return fmt.Errorf("set hairpin on %s: %w", name, err)
}

// WaitForBridges blocks until every named bridge exists in the client's
// namespace and has a port, or timeout passes. At boot the bridge plugin
// creates cni0 for the first pod and attaches its veth a moment later:
// returning when the bridge appears would find no port to set. When time
// runs out, a bridge that exists without ports is not an error (a node
// with no pods yet); one that does not exist is ErrTimeout. It subscribes
// to link updates before looking, so a change in between is not missed.
func WaitForBridges(c *netops.Client, names []string, timeout time.Duration) error {
	w := bridgeWait{c: c, missing: map[string]bool{}, present: map[string]bool{}}
	for _, n := range names {
		if err := netops.ValidateIfName(n); err != nil {
			return err
		}
		w.missing[n] = true
	}
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	// The library's reader sends without a select: keep receiving until it
	// closes the channel, or a burst of updates at return blocks it forever.
	defer func() {
		close(done)
		for range updates {
		}
	}()
	nsp := c.SubscribeNetns()
	subErr := make(chan error, 1)
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		Namespace: nsp,
		ErrorCallback: func(err error) {
			select {
			case subErr <- err:
			default:
			}
		},
	})
	if err != nil {
		return fmt.Errorf("subscribe to link updates in netns %s: %w", c.NetnsLabel(), err)
	}
	if err := w.check(); err != nil {
		return err
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// A slow poll covers an update lost to a subscription error.
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	recv := updates // nil once closed; the deferred drain keeps updates
	for len(w.missing) > 0 {
		select {
		case u, ok := <-recv:
			if !ok {
				recv = nil
				continue
			}
			// A bridge of ours appearing, or any port joining a bridge.
			if a := u.Attrs(); !w.missing[a.Name] && a.MasterIndex == 0 {
				continue
			}
		case <-subErr:
		case <-poll.C:
		case <-deadline.C:
			return w.timedOut(timeout)
		}
		if err := w.check(); err != nil {
			return err
		}
	}
	return nil
}

// bridgeWait is what WaitForBridges still waits for.
type bridgeWait struct {
	c *netops.Client
	// missing are the named bridges not yet there with a port.
	missing map[string]bool
	// present are the named bridges that exist, without a port yet.
	present map[string]bool
}

// check lists the links once and strikes off each bridge that has a port.
func (w *bridgeWait) check() error {
	c := w.c
	links, err := c.Handle().LinkList()
	if err != nil {
		return fmt.Errorf("list links in netns %s: %w", c.NetnsLabel(), err)
	}
	bridges, masters := map[string]int{}, map[int]bool{}
	for _, l := range links {
		a := l.Attrs()
		if l.Type() == "bridge" {
			bridges[a.Name] = a.Index
		}
		if a.MasterIndex != 0 {
			masters[a.MasterIndex] = true
		}
	}
	for n := range w.missing {
		i, ok := bridges[n]
		if !ok {
			// Absent, or there but no bridge: that is an error.
			if _, err := Bridge(c, n); err != nil && !errors.Is(err, netops.ErrNotFound) {
				return err
			}
			continue
		}
		w.present[n] = true
		if masters[i] {
			delete(w.missing, n)
		}
	}
	return nil
}

// timedOut is the outcome when time runs out: a bridge there without
// ports is no error (nothing to set yet); an absent one is ErrTimeout.
func (w *bridgeWait) timedOut(timeout time.Duration) error {
	absent := map[string]bool{}
	for n := range w.missing {
		if !w.present[n] {
			absent[n] = true
		}
	}
	if len(absent) == 0 {
		return nil
	}
	return netops.Errorf(netops.ErrTimeout, "bridge %s did not appear in netns %s within %s", setString(absent), w.c.NetnsLabel(), timeout)
}

func setString(m map[string]bool) string {
	s := ""
	for k := range m {
		if s != "" {
			s += ", "
		}
		s += k
	}
	return s
}
