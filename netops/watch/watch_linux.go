package watch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// echoWait bounds how long Watch trusts that an off state in a queued
// notification predates its own write. The kernel answers every hairpin
// write with an AF_BRIDGE RTM_NEWLINK (br_ifinfo_notify) that clears the
// doubt sooner; the bound only matters if that echo were lost.
const echoWait = 2 * time.Second

// updateQueue is the channel between the subscription's reader and the
// reconciler. A full channel stalls the reader, so the kernel queues in
// the socket buffer instead: nothing is lost until that overflows too.
const updateQueue = 1024

// Watch keeps hairpin mode on for the selected ports until ctx is done,
// then returns nil. It subscribes to link notifications (RTNLGRP_LINK)
// first and lists the ports second, so a port joining in between is seen
// by one or the other; every port found off is set on, and from then on
// each port is set on as it joins a selected bridge and again whenever
// something turns it off.
//
// Which notifications matter: the bridge sends an AF_BRIDGE RTM_NEWLINK
// carrying IFLA_PROTINFO (hairpin mode included) when a port joins
// (br_add_if), when its state changes, and after any hairpin write,
// whether by RTM_SETLINK, bridge-slave data (via NETDEV_CHANGE) or sysfs.
// So the notification itself says whether a port is off: no re-read per
// port. AF_UNSPEC notifications only track bridges appearing and going.
//
// The kernel drops notifications when the socket's buffer is full and
// says so once with ENOBUFS, which ends the netlink package's
// subscription. Watch then subscribes again and re-lists every port with
// one AF_BRIDGE dump, so no port is missed. Bridges deleted and
// re-created are followed by name.
//
// emit is called from Watch's goroutine for every action and event.
// Watch returns an error only when it cannot start: a selected name is
// not a bridge, or the first subscription or listing fails.
func Watch(ctx context.Context, c *netops.Client, o Options, emit func(Event)) error {
	if o.All == (len(o.Bridges) > 0) {
		return netops.Errorf(netops.ErrInvalid, "select bridges or all bridges, not both or neither")
	}
	w := &watcher{
		c:       c,
		o:       o,
		emit:    emit,
		want:    map[string]bool{},
		brName:  map[int]string{},
		kinds:   map[int]portClass{},
		skipped: map[int]bool{},
		ports:   map[int]portState{},
		todo:    map[int]queued{},
		rcvbuf:  o.ReceiveBufferSize,
	}
	if w.rcvbuf == 0 {
		w.rcvbuf = DefaultReceiveBuffer
	}
	for _, b := range o.Bridges {
		if err := netops.ValidateIfName(b); err != nil {
			return err
		}
		// A missing bridge is waited for; a name that is some other
		// device is a mistake worth stopping for.
		if _, err := bridgeports.Bridge(c, b); err != nil && !errors.Is(err, netops.ErrNotFound) {
			return err
		}
		w.want[b] = true
	}
	sub, err := w.subscribe()
	if err != nil {
		return fmt.Errorf("subscribe to link updates in netns %s: %w", c.NetnsLabel(), err)
	}
	defer func() { sub.stop() }()
	n, err := w.relist(CauseStart)
	if err != nil {
		return err
	}
	w.started = true
	w.send(Event{Kind: KindReady, Ports: n, Bridge: strings.Join(o.Bridges, ",")})

	var tick <-chan time.Time
	if o.Resync > 0 {
		t := time.NewTicker(o.Resync)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-sub.updates:
			if ok {
				ok = w.take(u, sub.updates)
				w.flush()
			}
			if !ok {
				cause, reason := sub.ended()
				sub.stop()
				if sub = w.resubscribe(ctx); sub == nil {
					return nil
				}
				w.send(Event{Kind: KindResync, Cause: cause, Error: reason})
				if !w.relistUntilDone(ctx, CauseResync) {
					return nil
				}
			}
		case <-tick:
			w.send(Event{Kind: KindResync, Cause: ResyncPeriodic})
			if !w.relistUntilDone(ctx, CauseResync) {
				return nil
			}
		}
	}
}

// portState is what Watch believes about one selected port.
type portState struct {
	master int
	on     bool
	// pendingUntil is set after Watch wrote hairpin on and cleared by the
	// kernel's echo: until then a queued "off" is older than the write.
	pendingUntil time.Time
}

// queued is a port waiting to be set on in the next batch.
type queued struct {
	port  bridgeports.Port
	cause string
}

type watcher struct {
	c      *netops.Client
	o      Options
	emit   func(Event)
	rcvbuf int
	// want holds the selected bridge names (empty with All).
	want map[string]bool
	// brName maps a bridge's ifindex to its name, for every bridge seen.
	brName map[int]string
	ports  map[int]portState
	todo   map[int]queued
	order  []int
	// started is false during the first listing, whose bridge changes
	// are not news.
	started bool
	// kinds caches what each port is (from AF_UNSPEC notifications and
	// lookups); skipped holds the ports already reported as skipped.
	kinds   map[int]portClass
	skipped map[int]bool
}

// portClass is what watch knows of a link: its kind and whether its veth
// peer is in another namespace.
type portClass struct {
	kind    string
	otherNs bool
}

// skip reports whether p is left alone (not a pod's port, without
// AnyPort), saying so once per port.
func (w *watcher) skip(p bridgeports.Port) bool {
	if w.o.AnyPort {
		return false
	}
	cl, ok := w.kinds[p.Index]
	if !ok || !(cl.kind == "veth" && cl.otherNs) {
		// Not seen yet, or not a pod's port when last seen: a runtime may
		// move the veth's peer away after creating it here, without a
		// notification for this end, so ask the kernel now.
		if l, err := w.c.Handle().LinkByIndex(p.Index); err == nil {
			cl = portClass{kind: l.Type(), otherNs: l.Attrs().NetNsID >= 0}
			if _, isDevice := l.(*netlink.Device); isDevice {
				cl.kind = ""
			}
			w.kinds[p.Index] = cl
		}
	}
	p.Kind, p.PodPort = cl.kind, cl.kind == "veth" && cl.otherNs
	why := bridgeports.NotPodPort(p)
	if why != "" && !w.skipped[p.Index] {
		w.skipped[p.Index] = true
		w.send(Event{Kind: KindSkipped, Port: p.Name, Index: p.Index, Bridge: p.Bridge, Error: why})
	}
	return why != ""
}

func (w *watcher) send(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if w.emit != nil {
		w.emit(ev)
	}
}

// watchSub is one netlink subscription.
type watchSub struct {
	updates chan netlink.LinkUpdate
	done    chan struct{}
	mu      sync.Mutex
	err     error
}

func (s *watchSub) setErr(err error) {
	// The last error is the one that ended the subscription.
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

// ended says why the subscription's channel closed. The netlink package
// hands the socket error to the callback as text ("Receive failed: no
// buffer space available"), so ENOBUFS is recognised by its message.
func (s *watchSub) ended() (cause, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		return ResyncSubscription, "subscription closed"
	}
	reason = s.err.Error()
	if strings.Contains(reason, unix.ENOBUFS.Error()) {
		return ResyncOverflow, reason
	}
	return ResyncSubscription, reason
}

// stop closes the socket and drains the channel, so the netlink
// package's reader (possibly blocked sending to it) can finish.
func (s *watchSub) stop() {
	if s == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	close(s.done)
	go func() {
		for range s.updates {
		}
	}()
}

func (w *watcher) subscribe() (*watchSub, error) {
	s := &watchSub{updates: make(chan netlink.LinkUpdate, updateQueue), done: make(chan struct{})}
	nsp := w.c.SubscribeNetns()
	err := netlink.LinkSubscribeWithOptions(s.updates, s.done, netlink.LinkSubscribeOptions{
		Namespace:         nsp,
		ErrorCallback:     s.setErr,
		ReceiveBufferSize: w.rcvbuf,
		// SO_RCVBUFFORCE passes net.core.rmem_max (often 208 KiB) and
		// needs CAP_NET_ADMIN, which setting hairpin needs anyway.
		ReceiveBufferForceSize: netops.HasNetAdmin(),
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// resubscribe subscribes again, retrying with backoff; nil when ctx ends.
func (w *watcher) resubscribe(ctx context.Context) *watchSub {
	backoff := 10 * time.Millisecond
	for {
		s, err := w.subscribe()
		if err == nil {
			return s
		}
		w.send(Event{Kind: KindError, Error: fmt.Sprintf("resubscribe to link updates in netns %s: %v (retrying in %s)", w.c.NetnsLabel(), err, backoff)})
		if !sleepCtx(ctx, backoff) {
			return nil
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// relistUntilDone re-lists, retrying with backoff; false when ctx ends.
func (w *watcher) relistUntilDone(ctx context.Context, cause string) bool {
	backoff := 10 * time.Millisecond
	for {
		_, err := w.relist(cause)
		if err == nil {
			return true
		}
		w.send(Event{Kind: KindError, Error: fmt.Sprintf("%v (retrying in %s)", err, backoff)})
		if !sleepCtx(ctx, backoff) {
			return false
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// relist reads every port with one AF_BRIDGE dump, replaces what Watch
// believes with it, and sets on every selected port found off. It returns
// how many ports are selected.
func (w *watcher) relist(cause string) (int, error) {
	if err := w.refreshBridges(); err != nil {
		return 0, err
	}
	ports, err := bridgeports.Dump(w.c)
	if err != nil {
		return 0, err
	}
	// Queued work predates the listing, which supersedes it.
	w.todo = map[int]queued{}
	w.order = w.order[:0]
	believed := make(map[int]portState, len(ports))
	n := 0
	for _, p := range ports {
		br, ok := w.selected(p.BridgeIndex)
		if !ok {
			continue
		}
		p.Bridge = br
		if w.skip(p) {
			continue
		}
		n++
		believed[p.Index] = portState{master: p.BridgeIndex, on: p.Hairpin}
		if !p.Hairpin {
			w.queue(p, cause)
		}
	}
	w.ports = believed
	w.flush()
	return n, nil
}

// refreshBridges looks the selected bridges up by name. Watch follows
// bridges through notifications; this catches up after lost ones.
func (w *watcher) refreshBridges() error {
	if w.o.All {
		// Names are learnt on demand in selected.
		w.brName = map[int]string{}
		return nil
	}
	for name := range w.want {
		old, had := w.indexOf(name)
		l, err := w.c.Handle().LinkByName(name)
		var nf netlink.LinkNotFoundError
		switch {
		case err == nil && l.Type() == "bridge":
			idx := l.Attrs().Index
			if had && old == idx {
				continue
			}
			if had {
				delete(w.brName, old)
			}
			w.brName[idx] = name
			if w.started {
				w.send(Event{Kind: KindBridgeAdded, Bridge: name, Index: idx})
			}
		case err == nil, errors.As(err, &nf), errors.Is(err, unix.ENODEV):
			// Gone, or now some other kind of device.
			if had {
				delete(w.brName, old)
				w.send(Event{Kind: KindBridgeRemoved, Bridge: name, Index: old})
			} else if !w.started {
				w.send(Event{Kind: KindBridgeMissing, Bridge: name})
			}
		default:
			return fmt.Errorf("look up bridge %s in netns %s: %w", name, w.c.NetnsLabel(), err)
		}
	}
	return nil
}

func (w *watcher) indexOf(name string) (int, bool) {
	for idx, n := range w.brName {
		if n == name {
			return idx, true
		}
	}
	return 0, false
}

// selected reports whether the bridge with ifindex idx is watched, and its name.
func (w *watcher) selected(idx int) (string, bool) {
	name, ok := w.brName[idx]
	if w.o.All && !ok {
		// A bridge not seen yet: one lookup, then cached until it goes.
		if l, err := w.c.Handle().LinkByIndex(idx); err == nil && l.Type() == "bridge" {
			name, ok = l.Attrs().Name, true
			w.brName[idx] = name
		}
	}
	if !ok {
		return "", false
	}
	return name, w.o.All || w.want[name]
}

// take handles first and whatever else is already queued, up to one
// batch, so a burst of joins is written in one pipelined SetHairpin. It
// returns false when the channel closed.
func (w *watcher) take(first netlink.LinkUpdate, ch <-chan netlink.LinkUpdate) bool {
	w.handle(first)
	for len(w.order) < bridgeports.SetWindow {
		select {
		case u, ok := <-ch:
			if !ok {
				return false
			}
			w.handle(u)
		default:
			return true
		}
	}
	return true
}

func (w *watcher) handle(u netlink.LinkUpdate) {
	if u.Link == nil {
		return
	}
	if u.IfInfomsg.Family == unix.AF_BRIDGE {
		w.handlePort(u)
	} else {
		w.handleLink(u)
	}
}

// handlePort handles an AF_BRIDGE notification: a bridge port's state,
// hairpin mode included.
func (w *watcher) handlePort(u netlink.LinkUpdate) {
	a := u.Attrs()
	idx := a.Index
	if u.Header.Type == unix.RTM_DELLINK {
		// The port left its bridge.
		delete(w.ports, idx)
		w.unqueue(idx)
		return
	}
	if a.Protinfo == nil || a.MasterIndex == 0 {
		return // the bridge device itself
	}
	br, ok := w.selected(a.MasterIndex)
	if !ok {
		delete(w.ports, idx)
		w.unqueue(idx)
		return
	}
	st, known := w.ports[idx]
	if known && st.master != a.MasterIndex {
		known = false // moved to another bridge: a join
	}
	if a.Protinfo.Hairpin {
		w.ports[idx] = portState{master: a.MasterIndex, on: true}
		w.unqueue(idx)
		return
	}
	if known && !st.pendingUntil.IsZero() && time.Now().Before(st.pendingUntil) {
		return // sent before Watch's own write; its echo is on the way
	}
	cause := CauseJoined
	if known && st.on {
		cause = CauseTurnedOff
	}
	p := bridgeports.Port{Name: a.Name, Index: idx, Bridge: br, BridgeIndex: a.MasterIndex, PodIPs: []string{}}
	if w.skip(p) {
		return
	}
	w.ports[idx] = portState{master: a.MasterIndex}
	w.queue(p, cause)
}

// handleLink handles an AF_UNSPEC notification: it follows bridges by name
// and forgets deleted links.
func (w *watcher) handleLink(u netlink.LinkUpdate) {
	a := u.Attrs()
	idx := a.Index
	isBridge := u.Link.Type() == "bridge"
	if u.Header.Type == unix.RTM_DELLINK {
		delete(w.kinds, idx)
		delete(w.skipped, idx)
		delete(w.ports, idx)
		w.unqueue(idx)
		name, known := w.brName[idx]
		delete(w.brName, idx)
		if !known && isBridge && w.o.All {
			name, known = a.Name, true // a bridge whose name was never needed
		}
		if known && (w.o.All || w.want[name]) {
			w.send(Event{Kind: KindBridgeRemoved, Bridge: name, Index: idx})
		}
		return
	}
	if !isBridge {
		cl := portClass{kind: u.Link.Type(), otherNs: a.NetNsID >= 0}
		if _, isDevice := u.Link.(*netlink.Device); isDevice {
			cl.kind = "" // no IFLA_INFO_KIND: a physical NIC
		}
		w.kinds[idx] = cl
		return
	}
	name := a.Name
	old, known := w.brName[idx]
	if known && old == name {
		return
	}
	if w.o.All {
		w.brName[idx] = name
		// A device's first notification (register_netdevice) reports
		// every flag as changed; later ones only what changed.
		if u.IfInfomsg.Change == ^uint32(0) {
			w.send(Event{Kind: KindBridgeAdded, Bridge: name, Index: idx})
		}
		return
	}
	// With --bridge, brName holds the selected names only.
	if known {
		delete(w.brName, idx)
		w.send(Event{Kind: KindBridgeRemoved, Bridge: old, Index: idx}) // renamed away
	}
	if !w.want[name] {
		return
	}
	if prev, had := w.indexOf(name); had {
		delete(w.brName, prev)
	}
	w.brName[idx] = name
	w.send(Event{Kind: KindBridgeAdded, Bridge: name, Index: idx})
}

func (w *watcher) queue(p bridgeports.Port, cause string) {
	if _, ok := w.todo[p.Index]; ok {
		return
	}
	w.todo[p.Index] = queued{port: p, cause: cause}
	w.order = append(w.order, p.Index)
}

func (w *watcher) unqueue(idx int) {
	if _, ok := w.todo[idx]; !ok {
		return
	}
	delete(w.todo, idx)
	for i, x := range w.order {
		if x == idx {
			w.order = append(w.order[:i], w.order[i+1:]...)
			break
		}
	}
}

// flush sets the queued ports on with one pipelined SetHairpin and
// reports each outcome.
func (w *watcher) flush() {
	if len(w.order) == 0 {
		return
	}
	batch := make([]bridgeports.Port, 0, len(w.order))
	byName := make(map[string]queued, len(w.order))
	for _, idx := range w.order {
		q := w.todo[idx]
		batch = append(batch, q.port)
		byName[q.port.Name] = q
	}
	w.todo = map[int]queued{}
	w.order = w.order[:0]
	res := bridgeports.SetHairpin(w.c, batch, true, false)
	until := time.Now().Add(echoWait)
	for _, name := range res.Changed {
		q := byName[name]
		p := q.port
		w.ports[p.Index] = portState{master: p.BridgeIndex, on: true, pendingUntil: until}
		w.send(Event{Kind: KindEnabled, Port: p.Name, Index: p.Index, Bridge: p.Bridge, Cause: q.cause})
	}
	for _, f := range res.Failed {
		q := byName[f.Name]
		p := q.port
		if errors.Is(f.Err(), netops.ErrVanished) {
			delete(w.ports, p.Index)
		} else {
			w.ports[p.Index] = portState{master: p.BridgeIndex}
		}
		w.send(Event{Kind: KindFailed, Port: p.Name, Index: p.Index, Bridge: p.Bridge, Cause: q.cause, Error: f.Error})
	}
}
