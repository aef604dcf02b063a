package flows

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// Why hairpinctl owns the event socket instead of calling
// conntrack.Conn.Listen (github.com/ti-mo/conntrack v0.6.0):
//
//   - Listen's worker returns on the first receive error. ENOBUFS (the
//     socket's receive buffer overflowed and the kernel dropped events) is
//     such an error, so after a burst every worker is gone and delivery
//     thins out or stops. The socket itself survives ENOBUFS, but Listen
//     refuses to run twice on one Conn, so going on means a new socket, and
//     whatever happens before it joins the groups is lost without trace.
//   - The Conn hides its file descriptor, so the kernel's count of dropped
//     events for the socket (SK_MEMINFO_DROPS) cannot be read: an overflow
//     could be noticed but never measured.
//   - The error channel is unbuffered and Close waits for the workers, so
//     a worker blocked sending an error or an event hangs Close unless both
//     channels are drained during shutdown.
//   - Receive, by default, peeks every datagram and allocates a buffer for
//     it: two system calls and an allocation per event, for events that are
//     mostly not ours (the kernel multicasts every flow of the namespace).
//
// So the socket is made by mdlayher/netlink in the client's namespace
// (the same Dial conntrack.Dial does) and read here with one recvfrom per
// datagram into a reused buffer. Each message is pre-filtered on its raw
// original tuple; a matching event is decoded in place by decodeFlow,
// which a test holds to the library's decoding (conntrack.Event.Unmarshal)
// because the library's allocations were half the CPU time under a storm.
// Dumps, which are rare, are decoded by the library. ENOBUFS is counted
// and reading goes on on the same socket; a dump on a second socket
// resynchronises.

// Netlink and nfnetlink numbers (include/uapi/linux/netlink.h,
// netfilter/nfnetlink.h, nfnetlink_conntrack.h).
const (
	ctNlmsgHdrLen       = 16
	ctNlmsgNoop         = 1
	ctNlmsgError        = 2
	ctNlmsgDone         = 3
	ctNfnlSubsysCT      = 1 // NFNL_SUBSYS_CTNETLINK
	ctIpctnlMsgCTNew    = 0 // IPCTNL_MSG_CT_NEW
	ctIpctnlMsgCTGet    = 1 // IPCTNL_MSG_CT_GET
	ctIpctnlMsgCTDelete = 2 // IPCTNL_MSG_CT_DELETE
	ctNlmFCreateExcl    = unix.NLM_F_CREATE | unix.NLM_F_EXCL
	conntrackRecvBytes  = 64 << 10 // more than a dump datagram (32 KiB at most)
)

// resyncEvery paces the overflow handling. A resync dump is made once the
// event queue has drained after drops (the table is then read while
// nothing is queued behind it), or after a second of a queue that never
// drains; and at most once a second, because a dump of a big table under
// a storm takes long enough to overflow again, and back-to-back dumps
// would starve the events and flood the output. While the queue stays
// congested the drop counter is read once a second.
const resyncEvery = time.Second

// Stream lists the flows in c's namespace whose original destination is
// o.ServiceIP (unless o.NoDump), then follows the conntrack events for
// them (unless o.NoFollow) until ctx is done, handing each to o.Flow; the
// events already queued when ctx ends are still delivered. It returns nil
// when the dump ended, ctx was done or a callback returned ErrStop, and an
// error when the kernel or a callback failed. The events are
// subscribed to before the dump starts, so nothing falls between the two;
// a flow can show in both.
func Stream(ctx context.Context, c *netops.Client, o Options) (Stats, error) {
	st, err := stream(ctx, c, o)
	if errors.Is(err, ErrStop) {
		err = nil
	}
	return st, err
}

func stream(ctx context.Context, c *netops.Client, o Options) (Stats, error) {
	w := &ctWatch{c: c, o: o, m: newFlowMatcher(o.ServiceIP, o.Port, o.Proto), buf: make([]byte, conntrackRecvBytes)}
	if !o.ServiceIP.IsValid() {
		return w.stats, netops.Errorf(netops.ErrInvalid, "conntrack: no Service IP given")
	}
	if o.Flow == nil {
		return w.stats, netops.Errorf(netops.ErrInvalid, "conntrack: no Flow callback")
	}
	if ctx.Err() != nil {
		return w.stats, nil
	}
	if !o.NoFollow {
		ev, err := listen(c, o.ReadBuffer)
		if err != nil {
			return w.stats, err
		}
		defer ev.Close()
		w.ev = ev
		// Cancelling ctx expires the read deadline, which wakes a read
		// parked in the runtime poller at once.
		defer context.AfterFunc(ctx, func() { _ = ev.SetReadDeadline(time.Unix(1, 0)) })()
	}
	if !o.NoDump {
		if err := w.dump(ctx, false); err != nil {
			return w.finish(err)
		}
	}
	if o.NoFollow || ctx.Err() != nil {
		return w.finish(nil)
	}
	return w.finish(w.follow(ctx))
}

// ctWatch is one Stream run.
type ctWatch struct {
	c     *netops.Client
	o     Options
	m     flowMatcher
	ev    *netlink.Conn
	buf   []byte
	stats Stats

	// The overflow bookkeeping. The kernel reports ENOBUFS once per
	// congestion: until the receive queue is empty again it drops without
	// telling, so the drop counter (SK_MEMINFO_DROPS) is the truth and is
	// read again when the queue drains.
	congested     bool      // an ENOBUFS came and the queue has not drained since
	lastDropCheck time.Time // when the drop counter was last read
	reportedDrops uint64    // the counter at the last overflow report
	resyncDrops   uint64    // the counter when the last resync dump started
	resyncPending bool      // drops happened after the last resync dump started
	pendingSince  time.Time
	lastResync    time.Time // when the last resync dump ended
}

// dial opens a NETLINK_NETFILTER socket in c's namespace: the
// conntrack event socket, and a second one for each dump.
func dial(c *netops.Client) (*netlink.Conn, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, c.NetlinkConfig())
	if err != nil {
		return nil, sockErr(c, "open conntrack netlink socket", err)
	}
	return conn, nil
}

// listen opens the event socket: a large receive buffer (past rmem_max
// when privileged, SO_RCVBUFFORCE), and the three conntrack multicast
// groups.
func listen(c *netops.Client, rcvbuf int) (*netlink.Conn, error) {
	conn, err := dial(c)
	if err != nil {
		return nil, err
	}
	if rcvbuf <= 0 {
		rcvbuf = DefaultReadBuffer
	}
	if err := conn.SetReadBuffer(rcvbuf); err != nil {
		conn.Close()
		return nil, sockErr(c, "set conntrack socket receive buffer", err)
	}
	for _, g := range netfilter.GroupsCT {
		if err := conn.JoinGroup(uint32(g)); err != nil {
			conn.Close()
			return nil, sockErr(c, "subscribe to conntrack events", err)
		}
	}
	return conn, nil
}

// sockErr names the namespace and turns EPERM into ErrPermission.
func sockErr(c *netops.Client, what string, err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return netops.Errorf(netops.ErrPermission, "%s in netns %s: needs CAP_NET_ADMIN there: run as root", what, c.NetnsLabel())
	}
	return fmt.Errorf("%s in netns %s: %w", what, c.NetnsLabel(), err)
}

// finish reads the final drop count and returns the stats with err.
func (w *ctWatch) finish(err error) (Stats, error) {
	if w.ev != nil {
		if raw, rerr := w.ev.SyscallConn(); rerr == nil {
			_ = raw.Control(func(fd uintptr) {
				if d, ok := ctSocketDrops(fd); ok {
					w.stats.Lost = d
				}
			})
		}
	}
	return w.stats, err
}

// ctSocketDrops reads the kernel's count of datagrams dropped for the socket
// (SO_MEMINFO, Linux 4.12): for a netlink socket, the events that did not
// fit its receive buffer.
func ctSocketDrops(fd uintptr) (uint64, bool) {
	var mi [unix.SK_MEMINFO_VARS]uint32
	l := uint32(unsafe.Sizeof(mi))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&mi[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 || l <= unix.SK_MEMINFO_DROPS*4 {
		return 0, false
	}
	return uint64(mi[unix.SK_MEMINFO_DROPS]), true
}

// ctRecvDontWait reads one datagram without blocking. MSG_TRUNC makes the
// kernel return the datagram's full length, so truncation shows. It calls
// recvfrom directly because unix.Recvfrom allocates the sender's address.
func ctRecvDontWait(fd uintptr, b []byte) (int, syscall.Errno) {
	n, _, e := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
	return int(n), e
}

// follow reads the event socket until ctx is done, then drains it.
func (w *ctWatch) follow(ctx context.Context) error {
	raw, err := w.ev.SyscallConn()
	if err != nil {
		return fmt.Errorf("conntrack event socket: %w", err)
	}
	stop := func() bool { return ctx.Err() != nil || w.maintenanceDue(false) }
	// parked is set once the socket was found empty and the idle work
	// done: the next EAGAIN waits in the poller instead of returning.
	// timer is set while a read deadline is armed for a resync that is
	// not due yet; the deadline wakes the parked read when it is.
	parked, timer := false, false
	// One closure for the whole run: a new one per wakeup would allocate
	// tens of thousands of times a second under a storm.
	var ferr error
	var empty bool
	read := func(fd uintptr) bool {
		n, e, err := w.readQueued(fd, stop)
		switch {
		case err != nil:
			ferr = err
		case e && n == 0 && parked:
			return false
		case e:
			empty = true
		}
		return true
	}
	for {
		ferr, empty = nil, false
		rerr := raw.Read(read)
		switch {
		case ctx.Err() != nil:
			return w.drain(raw)
		case ferr != nil:
			return ferr
		case rerr != nil && timer && errors.Is(rerr, os.ErrDeadlineExceeded):
			timer = false
			if err := w.setDeadline(ctx, time.Time{}); err != nil {
				return w.drain(raw)
			}
		case rerr != nil:
			return sockErr(w.c, "read conntrack events", rerr)
		}
		if empty {
			parked = true
			if w.o.Idle != nil {
				if err := w.o.Idle(); err != nil {
					return err
				}
			}
		}
		if w.congested && (empty || time.Since(w.lastDropCheck) >= resyncEvery) {
			if err := w.checkDrops(raw, empty); err != nil {
				return err
			}
		}
		switch {
		case w.maintenanceDue(empty) && w.resyncPending:
			if timer {
				timer = false
				if err := w.setDeadline(ctx, time.Time{}); err != nil {
					return w.drain(raw)
				}
			}
			if err := w.resync(ctx, raw); err != nil {
				return err
			}
			// The dump took time; events may be queued again.
			parked = false
		case w.resyncPending && empty && !timer:
			timer = true
			if err := w.setDeadline(ctx, w.lastResync.Add(resyncEvery)); err != nil {
				return w.drain(raw)
			}
		}
	}
}

// maintenanceDue reports whether reading should pause for overflow work:
// a resync that is due, or a congested queue whose drop counter was not
// read for a second. idle says the queue was just found empty.
func (w *ctWatch) maintenanceDue(idle bool) bool {
	if !w.resyncPending && !w.congested {
		return false
	}
	if w.congested && time.Since(w.lastDropCheck) >= resyncEvery {
		return true
	}
	return w.resyncPending && time.Since(w.lastResync) >= resyncEvery &&
		(idle || time.Since(w.pendingSince) >= resyncEvery)
}

// checkDrops reads the drop counter: drops since the last report are
// reported as another overflow (the kernel said ENOBUFS only once), and
// drops since the last resync started call for another resync.
func (w *ctWatch) checkDrops(raw syscall.RawConn, drained bool) error {
	var drops uint64
	var ok bool
	_ = raw.Control(func(fd uintptr) { drops, ok = ctSocketDrops(fd) })
	w.lastDropCheck = time.Now()
	if drained {
		w.congested = false
	}
	if !ok || drops <= w.reportedDrops {
		return nil
	}
	return w.overflow(drops)
}

// resync dumps the table after drops, noting the drop counter first: a
// drop after that point needs another resync.
func (w *ctWatch) resync(ctx context.Context, raw syscall.RawConn) error {
	_ = raw.Control(func(fd uintptr) {
		if d, ok := ctSocketDrops(fd); ok {
			w.resyncDrops = d
		}
	})
	w.resyncPending = false
	return w.dump(ctx, true)
}

// setDeadline sets the event socket's read deadline, racing with the
// AfterFunc that expires it when ctx ends: it checks ctx after setting,
// and an error means ctx ended and the deadline may have been overwritten.
func (w *ctWatch) setDeadline(ctx context.Context, t time.Time) error {
	_ = w.ev.SetReadDeadline(t)
	return ctx.Err()
}

// ctDrainFor bounds the drain after ctx ends, so Ctrl-C ends the run within
// a second even under a storm that keeps the socket full.
const ctDrainFor = 500 * time.Millisecond

// drain delivers what is already queued on the event socket when ctx
// ends: events that happened before a --timeout or Ctrl-C are shown, not
// cut off at the last read. Control, not Read: the expired deadline would
// fail a Read at once, and nothing here waits.
func (w *ctWatch) drain(raw syscall.RawConn) error {
	until := time.Now().Add(ctDrainFor)
	var err error
	cerr := raw.Control(func(fd uintptr) {
		var empty bool
		_, empty, err = w.readQueued(fd, func() bool { return time.Now().After(until) })
		if err == nil && !empty {
			w.stats.Cut = true
		}
	})
	if err != nil {
		return err
	}
	if cerr != nil {
		return sockErr(w.c, "read conntrack events", cerr)
	}
	return nil
}

// readQueued reads and delivers the datagrams queued on the event socket
// without blocking, until it is empty or stop says so. It returns how many
// it read and whether it found the socket empty.
func (w *ctWatch) readQueued(fd uintptr, stop func() bool) (n int, empty bool, err error) {
	for !stop() {
		l, errno := ctRecvDontWait(fd, w.buf)
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return n, true, nil
		case unix.ENOBUFS:
			// The kernel reports an overflow once, then keeps the socket
			// subscribed: count it and go on reading.
			drops, _ := ctSocketDrops(fd)
			w.congested, w.lastDropCheck = true, time.Now()
			if err := w.overflow(drops); err != nil {
				return n, false, err
			}
			continue
		default:
			return n, false, sockErr(w.c, "read conntrack events", os.NewSyscallError("recvfrom", errno))
		}
		if l > len(w.buf) {
			return n, false, fmt.Errorf("read conntrack events in netns %s: a %d-byte datagram does not fit %d bytes", w.c.NetnsLabel(), l, len(w.buf))
		}
		n++
		if _, err := w.handle(w.buf[:l], EventNew, false, 0); err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

// overflow reports drops: an ENOBUFS, or drops found by checkDrops.
// drops is the kernel's counter for the socket.
func (w *ctWatch) overflow(drops uint64) error {
	w.stats.Overflows++
	w.stats.Lost = max(w.stats.Lost, drops)
	w.reportedDrops = max(w.reportedDrops, drops)
	if drops > w.resyncDrops || drops == 0 {
		if !w.resyncPending {
			w.pendingSince = time.Now()
		}
		w.resyncPending = true
	}
	if w.o.Overflow == nil {
		return nil
	}
	return w.o.Overflow(Overflow{Time: time.Now(), Event: EventOverflow, Overflows: w.stats.Overflows, Lost: w.stats.Lost})
}

// handle walks the netlink messages of one datagram and delivers the
// matching conntrack flows. For a dump (event EventExisting) it reports
// when the dump's NLMSG_DONE arrived and fails on its NLMSG_ERROR; seq
// selects the dump's replies.
func (w *ctWatch) handle(b []byte, event string, resync bool, seq uint32) (done bool, err error) {
	var now time.Time
	for len(b) >= ctNlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(b))
		if l < ctNlmsgHdrLen || l > len(b) {
			return false, fmt.Errorf("conntrack netlink message of %d bytes in a %d-byte datagram", l, len(b))
		}
		typ := binary.NativeEndian.Uint16(b[4:])
		flags := binary.NativeEndian.Uint16(b[6:])
		mseq := binary.NativeEndian.Uint32(b[8:])
		msg := b[:l]
		b = b[min((l+3)&^3, len(b)):]
		if event == EventExisting && mseq != seq {
			continue
		}
		switch typ {
		case ctNlmsgDone:
			return true, nil
		case ctNlmsgError:
			if len(msg) >= ctNlmsgHdrLen+4 {
				if code := int32(binary.NativeEndian.Uint32(msg[ctNlmsgHdrLen:])); code < 0 {
					return true, sockErr(w.c, "dump conntrack table", syscall.Errno(-code))
				}
			}
			continue
		case ctNlmsgNoop:
			continue
		}
		if typ>>8 != ctNfnlSubsysCT || len(msg) < ctNlmsgHdrLen+ctNfgenmsgLen {
			continue
		}
		if !w.m.match(msg[ctNlmsgHdrLen+ctNfgenmsgLen:]) {
			continue
		}
		kind := event
		if event != EventExisting {
			switch typ & 0xff {
			case ctIpctnlMsgCTNew:
				kind = EventUpdate
				if flags&ctNlmFCreateExcl != 0 {
					kind = EventNew
				}
			case ctIpctnlMsgCTDelete:
				kind = EventDestroy
			default:
				continue
			}
		}
		if now.IsZero() {
			now = time.Now()
		}
		var f Flow
		if event == EventExisting {
			// Dumps are rare: the library decodes them.
			var ev conntrack.Event
			nm := netlink.Message{
				Header: netlink.Header{Length: uint32(l), Type: netlink.HeaderType(typ), Flags: netlink.HeaderFlags(flags), Sequence: mseq},
				Data:   msg[ctNlmsgHdrLen:],
			}
			if err := ev.Unmarshal(nm); err != nil || ev.Flow == nil {
				return false, fmt.Errorf("decode conntrack dump message: %v", err)
			}
			f = newFlow(ev.Flow, kind, now)
		} else {
			// Events come by the ten thousand a second: decoded in place.
			var err error
			if f, err = decodeFlow(msg[ctNlmsgHdrLen+ctNfgenmsgLen:], kind, now); err != nil {
				return false, fmt.Errorf("decode conntrack %s event: %w", kind, err)
			}
		}
		f.Resync = resync
		w.stats.Flows++
		if err := w.o.Flow(f); err != nil {
			return false, err
		}
	}
	return false, nil
}

// dump lists the table on a second socket: a socket that joined multicast
// groups keeps receiving events between the dump's replies, and the
// library refuses queries on it for that reason. The replies are decoded
// datagram by datagram as they arrive, so memory does not grow with the
// table (conntrack.Conn.Dump would hold all of it).
func (w *ctWatch) dump(ctx context.Context, resync bool) error {
	conn, err := dial(w.c)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })()
	family := netfilter.ProtoIPv4
	if !w.m.is4 {
		family = netfilter.ProtoIPv6
	}
	req, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: netfilter.MessageType(ctIpctnlMsgCTGet),
		Family:      family,
		Flags:       netlink.Request | netlink.Dump,
	}, nil)
	if err != nil {
		return fmt.Errorf("conntrack dump request: %w", err)
	}
	sent, err := conn.Send(req)
	if err != nil {
		return sockErr(w.c, "dump conntrack table", err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("conntrack dump socket: %w", err)
	}
	if resync {
		w.stats.Resyncs++
		defer func() { w.lastResync = time.Now() }()
	}
	event := EventExisting
	for {
		var done bool
		var herr error
		rerr := raw.Read(func(fd uintptr) bool {
			for {
				if ctx.Err() != nil {
					return true
				}
				n, errno := ctRecvDontWait(fd, w.buf)
				switch errno {
				case 0:
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					return false
				default:
					herr = sockErr(w.c, "dump conntrack table", os.NewSyscallError("recvfrom", errno))
					return true
				}
				if n > len(w.buf) {
					herr = fmt.Errorf("dump conntrack table: a %d-byte datagram does not fit %d bytes", n, len(w.buf))
					return true
				}
				done, herr = w.handle(w.buf[:n], event, resync, sent.Header.Sequence)
				if done || herr != nil {
					return true
				}
			}
		})
		switch {
		case ctx.Err() != nil:
			return nil
		case herr != nil:
			return herr
		case rerr != nil:
			return sockErr(w.c, "dump conntrack table", rerr)
		case done:
			return nil
		}
	}
}
