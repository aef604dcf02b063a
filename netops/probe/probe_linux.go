package probe

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/flows"
	"github.com/hairpinctl/hairpinctl/netops/internal/nsenter"
	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// target is what a probe connects from and to, resolved once.
type target struct {
	port  bridgeports.Port
	podIP netip.Addr
	ns    netns.NsHandle
	path  string
	svc   kubeproxy.Service
	model *kubeproxy.Result
	proto uint8
}

// Run probes once: it resolves the pod and the Service, makes the
// connections and explains the failures. An error means it could not
// probe (bad input: the netops sentinels; the kernel refused); failed
// connections are not errors, they are the report's findings.
func Run(ctx context.Context, c *netops.Client, o Options) (*Report, error) {
	o.defaults()
	t, err := resolve(c, o)
	if err != nil {
		return nil, err
	}
	defer t.ns.Close()
	return run(ctx, c, o, t)
}

// RunFix probes, applies the one fix that applies (hairpin on the pod's
// port, when the probe found it off and to blame) and probes again. When
// the probe after the fix fails or ctx ends during it, the result still
// says what was applied and how to undo it, beside the error.
func RunFix(ctx context.Context, c *netops.Client, o Options) (*FixResult, error) {
	o.defaults()
	t, err := resolve(c, o)
	if err != nil {
		return nil, err
	}
	defer t.ns.Close()
	before, err := run(ctx, c, o, t)
	if err != nil {
		return nil, err
	}
	res := &FixResult{Before: before}
	if !hasFinding(before, FindingHairpinOff) || ctx.Err() != nil {
		return res, nil
	}
	sr := bridgeports.SetHairpin(c, []bridgeports.Port{t.port}, true, false)
	if len(sr.Failed) > 0 {
		err := sr.Failed[0].Err()
		if err == nil {
			err = errors.New(sr.Failed[0].Error)
		}
		return res, fmt.Errorf("fix: hairpin on %s: %w", t.port.Name, err)
	}
	res.Applied = "hairpin on " + t.port.Name
	res.Undo = seeCmd(c, "disable "+t.port.Name)
	t.port.Hairpin = true
	after, err := run(ctx, c, o, t)
	if err != nil {
		return res, fmt.Errorf("probe after the fix: %w", err)
	}
	res.After = after
	return res, nil
}

func hasFinding(r *Report, id string) bool {
	for _, f := range r.Findings {
		if f.ID == id {
			return true
		}
	}
	return false
}

func (o *Options) defaults() {
	if o.Count <= 0 {
		o.Count = DefaultCount
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
}

// resolve finds the pod's port, its address, its namespace, and the one
// Service port the selector names in the pod's address family.
func resolve(c *netops.Client, o Options) (*target, error) {
	if o.Count > MaxCount {
		return nil, netops.Errorf(netops.ErrInvalid, "--count %d is more than %d", o.Count, MaxCount)
	}
	port, err := resolvePort(c, o)
	if err != nil {
		return nil, err
	}
	t := &target{port: port}
	so, err := servicesOptions([]string{o.Service}, o.Backend)
	if err != nil {
		return nil, err
	}
	t.model, err = kubeproxy.Services(c, so)
	if err != nil {
		return nil, err
	}
	if err := t.chooseService(c, o); err != nil {
		return nil, err
	}
	return t, t.finish(c)
}

// resolvePort finds the one pod's port o.Pod names.
func resolvePort(c *netops.Client, o Options) (bridgeports.Port, error) {
	if err := bridgeports.ValidatePortArg(o.Pod); err != nil {
		return bridgeports.Port{}, err
	}
	ports, err := bridgeports.List(c, bridgeports.ListOptions{PodIPs: true, Kinds: true, Pods: &bridgeports.PodOptions{CacheDir: o.CacheDir}})
	if err != nil {
		return bridgeports.Port{}, err
	}
	for _, p := range ports {
		if p.Bridge == o.Pod {
			return bridgeports.Port{}, netops.Errorf(netops.ErrInvalid, "%s is a bridge, not a pod's port: name the pod (pod/NS/NAME), its IP or its port %s", o.Pod, c.SeeHint("ports"))
		}
	}
	sel, fails := bridgeports.Select(c, ports, []string{o.Pod})
	if len(fails) > 0 {
		return bridgeports.Port{}, fails[0].Err()
	}
	if len(sel) != 1 {
		names := make([]string, len(sel))
		for i, p := range sel {
			names[i] = p.Name
		}
		return bridgeports.Port{}, netops.Errorf(netops.ErrInvalid, "%s has %d bridge ports (%s): name one", o.Pod, len(sel), strings.Join(names, ", "))
	}
	if !sel[0].PodPort {
		return bridgeports.Port{}, netops.Errorf(netops.ErrInvalid, "%s is %s", sel[0].Name, bridgeports.NotPodPort(sel[0]))
	}
	return sel[0], nil
}

// chooseService picks, of the Service ports t.model holds, the one in an
// address family of the pod (IPv4 for a dual-stack Service named by
// name), and the pod's address in that family.
func (t *target) chooseService(c *netops.Client, o Options) error {
	var addrs []netip.Addr
	for _, s := range t.port.PodIPs {
		if a, err := netip.ParseAddr(s); err == nil {
			addrs = append(addrs, a.Unmap())
		}
	}
	var cands []kubeproxy.Service
	for _, s := range t.model.Services {
		for _, a := range addrs {
			if (a.Is4() && s.Family == 4) || (a.Is6() && s.Family == 6) {
				cands = append(cands, s)
				if !t.podIP.IsValid() || t.podIP.Is6() && a.Is4() {
					t.podIP = a
				}
				break
			}
		}
	}
	// A dual-stack Service selected by name is probed over IPv4.
	if len(cands) > 1 {
		var v4 []kubeproxy.Service
		for _, s := range cands {
			if s.Family == 4 {
				v4 = append(v4, s)
			}
		}
		if len(v4) > 0 && len(v4) < len(cands) {
			cands = v4
		}
	}
	switch {
	case len(t.model.Services) == 0:
		return netops.Errorf(netops.ErrNotFound, "no Service port matches %s in kube-proxy's rules %s", o.Service, c.SeeHint("services"))
	case len(cands) == 0:
		return netops.Errorf(netops.ErrInvalid, "%s has no address in the family of %s (%s)", t.port.Name, o.Service, strings.Join(t.port.PodIPs, ", "))
	case len(cands) > 1:
		var names []string
		for _, s := range cands {
			names = append(names, svcLabel(&s))
		}
		return netops.Errorf(netops.ErrInvalid, "%s selects %d Service ports (%s): name one, as NS/NAME:PORT", o.Service, len(cands), strings.Join(names, ", "))
	}
	t.svc = cands[0]
	if t.podIP.Is6() != (t.svc.Family == 6) {
		for _, a := range addrs {
			if a.Is6() == (t.svc.Family == 6) {
				t.podIP = a
			}
		}
	}
	return nil
}

// finish reads the target's protocol and opens its pod's namespace.
func (t *target) finish(c *netops.Client) error {
	var err error
	switch strings.ToUpper(t.svc.Protocol) {
	case "TCP":
		t.proto = flows.ProtoTCP
	case "UDP":
		t.proto = flows.ProtoUDP
	default:
		return netops.Errorf(netops.ErrInvalid, "%s is %s: only TCP and UDP can be probed", svcLabel(&t.svc), t.svc.Protocol)
	}
	t.ns, t.path, err = bridgeports.PortNetns(c, t.port)
	if err != nil {
		// The port is a pod's (checked before), so this is no bad input
		// but a namespace that cannot be entered: a runtime error, not
		// ErrNotFound's usage error.
		return fmt.Errorf("cannot enter the network namespace of %s: %v: is the pod's sandbox running? (see: crictl pods)", t.port.Name, err)
	}
	if err := t.checkRoute(c); err != nil {
		t.ns.Close()
		return err
	}
	return nil
}

// checkRoute refuses a port whose connections would not pass it: a pod
// with a second interface (net1) behind this port reaches the Service by
// its default route, through another interface, whatever address the
// probe binds. What the kernel cannot say is left to the probe to show.
func (t *target) checkRoute(c *netops.Client) error {
	dst, err := netip.ParseAddr(t.svc.ClusterIP)
	if err != nil {
		return nil
	}
	h, err := netlink.NewHandleAt(t.ns)
	if err != nil {
		return nil
	}
	defer h.Close()
	routes, err := h.RouteGetWithOptions(net.IP(dst.Unmap().AsSlice()), &netlink.RouteGetOptions{SrcAddr: net.IP(t.podIP.AsSlice())})
	if err != nil || len(routes) == 0 {
		return nil
	}
	out, err := h.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return nil
	}
	fam := netlink.FAMILY_V4
	if t.podIP.Is6() {
		fam = netlink.FAMILY_V6
	}
	links, err := h.LinkList()
	if err != nil {
		return nil
	}
	for _, lk := range links {
		addrs, err := h.AddrList(lk, fam)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || ip.Unmap() != t.podIP {
				continue
			}
			if lk.Attrs().Index == out.Attrs().Index {
				return nil
			}
			return netops.Errorf(netops.ErrInvalid, "%s: the pod's route to %s leaves by its interface %s, not by %s (the one with %s, behind %s): the probe's connections would not pass %s; probe the pod's port behind %s %s",
				t.port.Name, dst, out.Attrs().Name, lk.Attrs().Name, t.podIP, t.port.Name, t.port.Name, out.Attrs().Name, c.SeeHint("ports -o wide"))
		}
	}
	return nil
}

// servicesOptions turns Service selectors (IP:PORT or NS/NAME[:PORT])
// into what netops.Client.Services selects by.
func servicesOptions(sels []string, backend string) (kubeproxy.Options, error) {
	so := kubeproxy.Options{Backend: backend}
	for _, s := range sels {
		ip, name, err := kubeproxy.ParseServiceArg(s)
		if err != nil {
			return so, err
		}
		if ip != "" {
			so.ClusterIPs = append(so.ClusterIPs, ip)
		} else {
			so.Names = append(so.Names, name)
		}
	}
	return so, nil
}

func svcLabel(s *kubeproxy.Service) string {
	if s.Name == "" {
		return s.ClusterIP + ":" + strconv.Itoa(s.Port)
	}
	n := s.Namespace + "/" + s.Name
	if s.PortName != "" {
		n += ":" + s.PortName
	}
	return n
}

// run makes one round of connections from the resolved pod and explains it.
func run(ctx context.Context, c *netops.Client, o Options, t *target) (*Report, error) {
	svcIP, err := netip.ParseAddr(t.svc.ClusterIP)
	if err != nil {
		return nil, fmt.Errorf("the Service %s has no usable ClusterIP %q", svcLabel(&t.svc), t.svc.ClusterIP)
	}
	r := newReport(c, o, t, svcIP)

	// Entries left by earlier connections from the pod to the Service
	// (an earlier probe's, say): a new connection with the 4-tuple of one
	// would inherit its endpoint, so their source ports are not used and
	// their IDs are not taken for the probe's own.
	stale, err := existingFlows(ctx, c, svcIP, t)
	if err != nil {
		r.Facts.ConntrackError = err.Error()
	}
	socks, err := openSockets(t.ns, t.podIP, t.proto, o.Count, stale.ports)
	defer func() {
		for _, s := range socks {
			unix.Close(s.fd)
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("sockets in the namespace of %s: %w", t.port.Name, err)
	}
	sports := make([]uint16, len(socks))
	for i, s := range socks {
		sports[i] = s.port
	}
	var tr *trace
	if !o.NoTrace {
		tr, err = startTrace(c, t.port.Name, t.podIP, t.proto, sports)
		if err != nil {
			r.Facts.TraceError = err.Error()
		} else {
			r.Facts.Traced = true
			defer tr.close()
		}
	}

	ct, err := watchConntrack(ctx, c, svcIP, t, sports, stale.ids)
	if err != nil {
		r.Facts.ConntrackError = err.Error()
	}

	start := time.Now()
	r.Connections = connectAll(ctx, socks, netip.AddrPortFrom(svcIP, uint16(t.svc.Port)), t.proto, o.Timeout)
	r.DurationMs = ms(time.Since(start))
	if ctx.Err() != nil {
		if ct != nil {
			_ = ct.finish(r, t.podIP)
		}
		return nil, ctx.Err()
	}

	if tr != nil {
		if err := tr.record(r, t.port.Name); err != nil {
			return nil, err
		}
	}
	if ct != nil {
		if err := ct.finish(r, t.podIP); err != nil {
			r.Facts.ConntrackError = err.Error()
		}
	}
	Diagnose(r, func(args string) string { return seeCmd(c, args) })
	return r, nil
}

// newReport is the report of a probe of t before any connection: who
// probes, the Service and its endpoints as kube-proxy's rules have them,
// and the node's facts.
func newReport(c *netops.Client, o Options, t *target, svcIP netip.Addr) *Report {
	r := &Report{
		Pod:    t.port.Pod,
		Client: Client{IP: t.podIP.String(), Interface: t.port.Name, Bridge: t.port.Bridge, Hairpin: t.port.Hairpin, Netns: t.path},
		Service: ServiceInfo{
			IP: svcIP.String(), Port: t.svc.Port, NoEndpoints: t.svc.NoEndpoints, Backend: string(t.model.Backend),
			Endpoints: []ServiceEndpoint{},
		},
		Protocol:  strings.ToLower(t.svc.Protocol),
		Count:     o.Count,
		TimeoutMs: o.Timeout.Milliseconds(),
	}
	if t.svc.Name != "" {
		r.Service.Name = svcLabel(&t.svc)
	}
	for _, e := range t.svc.Endpoints {
		ip := e.IP
		a, err := netip.ParseAddr(e.IP)
		if err == nil {
			ip = a.Unmap().String()
		}
		r.Service.Endpoints = append(r.Service.Endpoints, ServiceEndpoint{
			IP: ip, Port: e.Port, Share: e.Share, Self: a.Unmap() == t.podIP, HairpinMasq: e.HairpinMasq, Local: e.Local,
		})
	}
	m := t.model.Masquerade
	r.Facts.Masquerade = Masquerade{MarkMasq: m.MarkMasq, PostroutingMasquerade: m.PostroutingMasquerade, PostroutingHooked: m.PostroutingHooked, HairpinSet: m.HairpinSet}
	r.Facts.BrNetfilterSysctl, r.Facts.BrNetfilter = brNetfilter(c, t.podIP.Is6())
	return r
}

// seeCmd is the hairpinctl command line for args with the client's
// --netns, as netops writes it in its hints.
func seeCmd(c *netops.Client, args string) string {
	h := c.SeeHint(args)
	return strings.TrimSuffix(strings.TrimPrefix(h, "(see: "), ")")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// brNetfilter reads bridge-nf-call-iptables (ip6tables for IPv6) in the
// node namespace: the sysctl's name, and its value ("" when br_netfilter
// is not loaded or it cannot be read).
func brNetfilter(c *netops.Client, v6 bool) (string, string) {
	name := "net.bridge.bridge-nf-call-iptables"
	if v6 {
		name = "net.bridge.bridge-nf-call-ip6tables"
	}
	path := "/proc/sys/" + strings.ReplaceAll(name, ".", "/")
	var v string
	err := c.Do(func() error {
		b, err := os.ReadFile(path)
		v = strings.TrimSpace(string(b))
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return name, ""
	}
	return name, v
}

// sock is one of the probe's sockets, made in the pod's namespace and
// bound to the pod's address: its source port is known before the trace
// is set up and the connection is made.
type sock struct {
	fd   int
	port uint16
}

// staleFlows are the conntrack entries from the pod to the Service that
// were there before the probe.
type staleFlows struct {
	ports map[uint16]bool
	ids   map[uint32]bool
}

// existingFlows lists the conntrack entries from the pod to the Service.
func existingFlows(ctx context.Context, c *netops.Client, svcIP netip.Addr, t *target) (staleFlows, error) {
	st := staleFlows{ports: map[uint16]bool{}, ids: map[uint32]bool{}}
	_, err := flows.Stream(ctx, c, flows.Options{
		ServiceIP: svcIP, Port: uint16(t.svc.Port), Proto: t.proto, NoFollow: true,
		Flow: func(f flows.Flow) error {
			if f.Orig.Src == t.podIP {
				st.ports[f.Orig.SPort] = true
				st.ids[f.ID] = true
			}
			return nil
		},
	})
	return st, err
}

// openSockets opens n sockets in ns bound to src, each on a port the
// kernel picks and that is not in avoid: a port the kernel offers that
// is in avoid is held (so it is not offered again) and another asked for.
// TCP sockets close with a reset (SO_LINGER 0): their conntrack entries
// end at once rather than lingering in FIN_WAIT for the next probe.
func openSockets(ns netns.NsHandle, src netip.Addr, proto uint8, n int, avoid map[uint16]bool) ([]sock, error) {
	var socks, held []sock
	defer func() {
		for _, s := range held {
			unix.Close(s.fd)
		}
	}()
	err := nsenter.Do(ns, func() error {
		mine := map[uint16]bool{}
		for len(socks) < n {
			if len(held) > len(avoid)+n {
				return fmt.Errorf("bind %s: no free source port: %d are taken by conntrack entries to the Service", src, len(avoid))
			}
			fam, typ := unix.AF_INET, unix.SOCK_STREAM
			if src.Is6() {
				fam = unix.AF_INET6
			}
			if proto == flows.ProtoUDP {
				typ = unix.SOCK_DGRAM
			}
			fd, err := unix.Socket(fam, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			s := sock{fd: fd}
			if proto == flows.ProtoTCP {
				if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
					unix.Close(fd)
					return fmt.Errorf("SO_LINGER: %w", err)
				}
			}
			if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(src, 0))); err != nil {
				unix.Close(fd)
				return fmt.Errorf("bind %s: %w", src, err)
			}
			sa, err := unix.Getsockname(fd)
			if err != nil {
				unix.Close(fd)
				return err
			}
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				s.port = uint16(a.Port)
			case *unix.SockaddrInet6:
				s.port = uint16(a.Port)
			}
			if avoid[s.port] || mine[s.port] {
				held = append(held, s)
				continue
			}
			mine[s.port] = true
			socks = append(socks, s)
		}
		return nil
	})
	return socks, err
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

// connectAll makes every connection at once, each bounded by timeout:
// a healthy probe takes a round trip or so, a failing one the timeout.
func connectAll(ctx context.Context, socks []sock, dst netip.AddrPort, proto uint8, timeout time.Duration) []Connection {
	out := make([]Connection, len(socks))
	var wg sync.WaitGroup
	for i, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = connectOne(ctx, s, dst, proto, timeout)
		}()
	}
	wg.Wait()
	return out
}

// connectOne connects one socket: TCP by a non-blocking connect polled
// for writability, UDP by a datagram polled for an answer.
func connectOne(ctx context.Context, s sock, dst netip.AddrPort, proto uint8, timeout time.Duration) Connection {
	cn := Connection{SrcPort: s.port}
	start := time.Now()
	deadline := start.Add(timeout)
	done := func(result string, err error) Connection {
		cn.Result = result
		cn.LatencyMs = ms(time.Since(start))
		if err != nil && result == ResultError {
			cn.Error = err.Error()
		}
		return cn
	}
	classify := func(errno error) Connection {
		switch {
		case errno == nil:
			return done(ResultSucceeded, nil)
		case errors.Is(errno, unix.ECONNREFUSED):
			return done(ResultRefused, nil)
		case errors.Is(errno, unix.ECONNRESET):
			return done(ResultReset, nil)
		case errors.Is(errno, unix.ETIMEDOUT):
			return done(ResultTimedOut, nil)
		}
		return done(ResultError, errno)
	}
	err := unix.Connect(s.fd, sockaddr(dst))
	if proto == flows.ProtoTCP {
		if err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return classify(err)
		}
		if !wait(ctx, s.fd, unix.POLLOUT, deadline) {
			cn.SynRetransmits = synRetransmits(s.fd)
			return done(ResultTimedOut, nil)
		}
		v, gerr := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if gerr != nil {
			return classify(gerr)
		}
		cn.SynRetransmits = synRetransmits(s.fd)
		if v != 0 {
			return classify(unix.Errno(v))
		}
		if cn.SynRetransmits > 0 {
			return done(ResultRetransmitted, nil)
		}
		return classify(nil)
	}
	if err != nil {
		return classify(err)
	}
	if _, err := unix.Write(s.fd, datagram(dst.Port(), s.port)); err != nil {
		return classify(err)
	}
	if !wait(ctx, s.fd, unix.POLLIN, deadline) {
		return done(ResultNoReply, nil)
	}
	buf := make([]byte, 512)
	if _, err := unix.Read(s.fd, buf); err != nil {
		return classify(err)
	}
	return classify(nil)
}

// synRetransmits is how many times the kernel sent the socket's SYN
// again: right after the handshake (or its failure) nothing else can have
// been retransmitted. 0 when TCP_INFO cannot be read.
func synRetransmits(fd int) int {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0
	}
	return int(info.Total_retrans)
}

// wait polls fd for events until deadline or ctx ends; true when they came
// (or an error or hang-up, which the caller reads from the socket).
func wait(ctx context.Context, fd int, events int16, deadline time.Time) bool {
	for ctx.Err() == nil {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		// Slices of 50 ms, so a stop signal ends a long --timeout soon.
		slice := min(left, 50*time.Millisecond)
		pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(pfd, int(slice.Milliseconds())+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return true
		}
		if n > 0 {
			return true
		}
	}
	return false
}

// ctWatch follows the Service's conntrack events while the probe runs.
// A dump afterwards would miss connections the kernel has already
// forgotten: a conntrack entry answered by a reset to its SYN goes at once.
type ctWatch struct {
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	seen   map[uint16]flows.Flow
}

// watchConntrack subscribes to conntrack events in the node namespace and
// returns once the subscription is in place: the first time the event
// socket is found empty (flows.Options.Idle).
//
// Only an entry the probe's own connection created counts: one that
// existed before the probe (its ID in stale) is ignored, and so is every
// event for a source port until a new event opened an entry for it.
func watchConntrack(ctx context.Context, c *netops.Client, svcIP netip.Addr, t *target, sports []uint16, stale map[uint32]bool) (*ctWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	w := &ctWatch{cancel: cancel, done: make(chan error, 1), seen: map[uint16]flows.Flow{}}
	mine := map[uint16]bool{}
	for _, p := range sports {
		mine[p] = true
	}
	ready := make(chan struct{})
	var once sync.Once
	go func() {
		_, err := flows.Stream(ctx, c, flows.Options{
			ServiceIP: svcIP, Port: uint16(t.svc.Port), Proto: t.proto, NoDump: true,
			Flow: func(f flows.Flow) error {
				if f.Orig.Src != t.podIP || !mine[f.Orig.SPort] || stale[f.ID] {
					return nil
				}
				w.mu.Lock()
				defer w.mu.Unlock()
				old, ok := w.seen[f.Orig.SPort]
				switch {
				case f.Event == flows.EventNew:
					// A new entry for the port: the latest is the one
					// the connection's last SYN opened.
					ok = ok && old.ID == f.ID
				case !ok || old.ID != f.ID:
					return nil
				}
				if ok && f.State == "" {
					f.State = old.State
				}
				if ok && !f.Reply.Src.IsValid() {
					f.Reply, f.SNAT = old.Reply, old.SNAT
				}
				w.seen[f.Orig.SPort] = f
				return nil
			},
			Idle: func() error {
				once.Do(func() { close(ready) })
				return nil
			},
		})
		once.Do(func() { close(ready) })
		w.done <- err
	}()
	<-ready
	select {
	case err := <-w.done:
		cancel()
		if err == nil {
			err = ctx.Err()
		}
		return nil, err
	default:
	}
	return w, nil
}

// finish stops following and fills each connection's endpoint, source
// NAT and state from its entry: the reply tuple is what conntrack knows
// the endpoint by.
func (w *ctWatch) finish(r *Report, podIP netip.Addr) error {
	w.cancel()
	err := <-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range r.Connections {
		cn := &r.Connections[i]
		f, ok := w.seen[cn.SrcPort]
		if !ok || !f.Reply.Src.IsValid() {
			continue
		}
		cn.Conntrack = true
		cn.Endpoint = netip.AddrPortFrom(f.Reply.Src, f.Reply.SPort).String()
		cn.Self = f.Reply.Src == podIP
		cn.SNAT = f.SNAT
		cn.State = f.State
	}
	return err
}
