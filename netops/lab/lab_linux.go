// Package lab builds a throwaway Kubernetes-like node on the real kernel: a
// "node" network namespace with bridge cni0 and IP forwarding, "pod"
// namespaces joined to it by veth pairs, kube-proxy-style iptables NAT for
// one ClusterIP Service, and a TCP server in every pod. The tests use it,
// and so does `hairpinctl selftest`, which is why it is not a _test package.
//
// Everything lives in namespaces bind-mounted under /run/netns with a
// random suffix; Close removes them, and with them every link the lab made.
// Nothing is created in the caller's namespace.
package lab

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/internal/nsenter"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Options shapes a lab. Zero values take the defaults in brackets.
type Options struct {
	// Pods is how many pod namespaces to create [2].
	Pods int
	// Prefix starts every namespace name ["hp"].
	Prefix string
	// Bridge is the node bridge's name [cni0].
	Bridge string
	// ServiceIP and ServicePort are the ClusterIP Service [10.96.0.10:80].
	ServiceIP   string
	ServicePort int
	// TargetPort is where each pod's server listens [8080].
	TargetPort int
	// Endpoints are the 1-based pod numbers that back the Service [1].
	Endpoints []int
	// Restore is the iptables-restore binary that loads the Service rules:
	// "iptables-restore" (the host's default backend), "iptables-nft-restore"
	// or "iptables-legacy-restore"; RestoreNFTables programs kube-proxy's
	// nftables mode over netlink, needing no binary; "none" loads no rules
	// [iptables-restore].
	Restore string
	// PodIPBase numbers the pods' addresses: pod N is 10.244.0.(PodIPBase+N)
	// [10]. 1 gives the addresses the CNI plugin's host-local gives in
	// order (10.244.0.2, ...), as in the kube lab's goldens.
	PodIPBase int
	// Hairpin is the initial hairpin mode of every pod port [off].
	Hairpin bool
	// Created, when set, is called with each namespace's name right after
	// the namespace exists, before anything else is done: a caller that
	// reports progress or checks its cleanup learns every name, even when
	// New fails half-way (and removes them again).
	Created func(netnsName string)
}

// Lab is one throwaway node.
type Lab struct {
	// Node is the node namespace's name under /run/netns, usable as --netns.
	Node string
	// NodePath is /run/netns/<Node>.
	NodePath string
	// NodeNs is an open handle on the node namespace.
	NodeNs netns.NsHandle
	// Bridge is the pod bridge's name.
	Bridge string
	// Pods are the pods, Pods[0] being pod 1 (10.244.0.11 behind veth1).
	Pods []*Pod
	// ServiceIP and ServicePort address the Service.
	ServiceIP   net.IP
	ServicePort int
	// ServiceName is "default/web:http".
	ServiceName string
	// Rules is the iptables-restore text that was loaded.
	Rules string

	opts      Options
	h         *netlink.Handle
	mu        sync.Mutex
	closed    bool
	listeners []net.Listener
	made      []string
	dirs      []string
}

// Pod is one pod namespace.
type Pod struct {
	// N is the pod number, from 1.
	N int
	// Name is the pod namespace's name under /run/netns.
	Name string
	// Ns is an open handle on the pod namespace.
	Ns netns.NsHandle
	// IP is the pod's address, 10.244.0.(10+N).
	IP net.IP
	// HostVeth is the port's name on the node (vethN).
	HostVeth string
}

func (o *Options) defaults() {
	if o.Pods == 0 {
		o.Pods = 2
	}
	if o.Prefix == "" {
		o.Prefix = "hp"
	}
	if o.Bridge == "" {
		o.Bridge = "cni0"
	}
	if o.ServiceIP == "" {
		o.ServiceIP = "10.96.0.10"
	}
	if o.ServicePort == 0 {
		o.ServicePort = 80
	}
	if o.TargetPort == 0 {
		o.TargetPort = 8080
	}
	if len(o.Endpoints) == 0 {
		o.Endpoints = []int{1}
	}
	if o.Restore == "" {
		o.Restore = "iptables-restore"
	}
	if o.PodIPBase == 0 {
		o.PodIPBase = 10
	}
}

// New builds a lab. On error everything already made is removed.
func New(o Options) (l *Lab, err error) {
	o.defaults()
	for _, e := range o.Endpoints {
		if e < 1 || e > o.Pods {
			return nil, fmt.Errorf("lab: endpoint pod %d out of range 1..%d", e, o.Pods)
		}
	}
	suffix := randomSuffix()
	l = &Lab{
		Node:        o.Prefix + "-node-" + suffix,
		Bridge:      o.Bridge,
		ServiceIP:   net.ParseIP(o.ServiceIP),
		ServicePort: o.ServicePort,
		ServiceName: "default/web:http",
		opts:        o,
	}
	if l.ServiceIP == nil {
		return nil, fmt.Errorf("lab: bad service IP %q", o.ServiceIP)
	}
	l.NodePath = "/run/netns/" + l.Node
	defer func() {
		if err != nil {
			l.Close()
			l = nil
		}
	}()
	if l.NodeNs, err = l.newNamed(l.Node); err != nil {
		return l, err
	}
	if l.h, err = netlink.NewHandleAt(l.NodeNs); err != nil {
		return l, fmt.Errorf("lab: netlink in node: %w", err)
	}
	if err = l.setupNode(); err != nil {
		return l, err
	}
	for i := 1; i <= o.Pods; i++ {
		if _, err = l.AddPod(); err != nil {
			return l, err
		}
	}
	switch o.Restore {
	case "none":
	case RestoreNFTables:
		if err = l.programNFTables(); err != nil {
			return l, err
		}
	default:
		l.Rules = ServiceRules(l.ServiceName, l.ServiceIP.String(), o.ServicePort, l.endpointIPs(), o.TargetPort)
		if err = l.Restore(o.Restore, l.Rules); err != nil {
			return l, err
		}
	}
	return l, nil
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newNamed creates a namespace bind-mounted at /run/netns/name without
// moving the calling goroutine's thread.
func (l *Lab) newNamed(name string) (netns.NsHandle, error) {
	var h netns.NsHandle
	created := false
	err := doOnThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		h, err = netns.NewNamed(name)
		if err != nil {
			return fmt.Errorf("lab: create netns %s: %w", name, err)
		}
		l.mu.Lock()
		l.made = append(l.made, name)
		l.mu.Unlock()
		created = true
		return netns.Set(orig)
	})
	if created && l.opts.Created != nil {
		l.opts.Created(name)
	}
	return h, err
}

// doOnThread runs fn on a locked thread; if fn leaves the thread in another
// namespace (an error path), the thread is retired with the goroutine.
func doOnThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := fn()
		if err == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// In runs fn on a thread inside ns: exec'd children and sockets made there
// belong to ns. It is the product's one way in (nsenter.Do), so the lab
// enters namespaces as hairpinctl does.
func In(ns netns.NsHandle, fn func() error) error { return nsenter.Do(ns, fn) }

func (l *Lab) setupNode() error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: l.Bridge}}
	if err := l.h.LinkAdd(br); err != nil {
		return fmt.Errorf("lab: add bridge %s: %w", l.Bridge, err)
	}
	addr, _ := netlink.ParseAddr("10.244.0.1/24")
	if err := l.h.AddrAdd(br, addr); err != nil {
		return fmt.Errorf("lab: address on %s: %w", l.Bridge, err)
	}
	if err := l.h.LinkSetUp(br); err != nil {
		return fmt.Errorf("lab: %s up: %w", l.Bridge, err)
	}
	lo, err := l.h.LinkByName("lo")
	if err == nil {
		_ = l.h.LinkSetUp(lo)
	}
	return In(l.NodeNs, func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return fmt.Errorf("lab: ip_forward: %w", err)
		}
		// br_netfilter makes bridged frames traverse iptables, which is what
		// lets kube-proxy DNAT pod-to-ClusterIP traffic on the bridge, and
		// what makes the DNATed frame leave by the port it came in on.
		if err := os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-iptables", []byte("1"), 0o644); err != nil {
			return fmt.Errorf("lab: bridge-nf-call-iptables (br_netfilter): %w", err)
		}
		return nil
	})
}

// AddPod creates the next pod: a namespace, a veth pair with vethN on the
// bridge and eth0 in the pod at 10.244.0.(10+N)/24, a default route via
// the bridge, and a TCP server on the target port that answers its name.
func (l *Lab) AddPod() (*Pod, error) {
	n := len(l.Pods) + 1
	p := &Pod{N: n, IP: net.IPv4(10, 244, 0, byte(l.opts.PodIPBase+n)).To4(), HostVeth: fmt.Sprintf("veth%d", n)}
	p.Name = fmt.Sprintf("%s-pod%d-%s", l.opts.Prefix, n, strings.TrimPrefix(l.Node, l.opts.Prefix+"-node-"))
	var err error
	if p.Ns, err = l.newNamed(p.Name); err != nil {
		return nil, err
	}
	l.Pods = append(l.Pods, p)
	br, err := l.h.LinkByName(l.Bridge)
	if err != nil {
		return nil, fmt.Errorf("lab: bridge: %w", err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: p.HostVeth, MasterIndex: br.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(p.Ns)),
	}
	if err := l.h.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("lab: add %s: %w", p.HostVeth, err)
	}
	host, err := l.h.LinkByName(p.HostVeth)
	if err != nil {
		return nil, err
	}
	if err := l.h.LinkSetHairpin(host, l.opts.Hairpin); err != nil {
		return nil, fmt.Errorf("lab: hairpin on %s: %w", p.HostVeth, err)
	}
	if err := l.h.LinkSetUp(host); err != nil {
		return nil, err
	}
	ph, err := netlink.NewHandleAt(p.Ns)
	if err != nil {
		return nil, err
	}
	defer ph.Close()
	eth0, err := ph.LinkByName("eth0")
	if err != nil {
		return nil, err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.IP, Mask: net.CIDRMask(24, 32)}}
	if err := ph.AddrAdd(eth0, addr); err != nil {
		return nil, fmt.Errorf("lab: address on %s eth0: %w", p.Name, err)
	}
	for _, name := range []string{"lo", "eth0"} {
		if lk, err := ph.LinkByName(name); err == nil {
			if err := ph.LinkSetUp(lk); err != nil {
				return nil, err
			}
		}
	}
	gw := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.IPv4(10, 244, 0, 1)}
	if err := ph.RouteAdd(gw); err != nil {
		return nil, fmt.Errorf("lab: default route in %s: %w", p.Name, err)
	}
	if err := l.serve(p); err != nil {
		return nil, err
	}
	if err := l.waitOperUp(p.HostVeth, 5*time.Second); err != nil {
		return nil, err
	}
	return p, nil
}

// waitOperUp waits for a link's operational state to become up: the
// kernel's link watcher reports a veth's carrier a moment after both ends
// are up, later still on a busy machine, and tests read the state.
func (l *Lab) waitOperUp(name string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		lk, err := l.h.LinkByName(name)
		if err != nil {
			return err
		}
		if lk.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: %s not up after %s (operstate %s)", name, limit, lk.Attrs().OperState)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *Lab) serve(p *Pod) error {
	var ln net.Listener
	err := In(p.Ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", l.opts.TargetPort))
		return err
	})
	if err != nil {
		return fmt.Errorf("lab: listen in %s: %w", p.Name, err)
	}
	l.mu.Lock()
	l.listeners = append(l.listeners, ln)
	l.mu.Unlock()
	name := p.Name
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = fmt.Fprintf(c, "%s\n", name)
			_ = c.Close()
		}
	}()
	return nil
}

// Connect opens a TCP connection from inside pod to ip:port and returns
// the name the server answered with, or an error when it gets no answer
// within timeout (a hairpin drop shows as a timeout).
func (l *Lab) Connect(from *Pod, ip net.IP, port int, timeout time.Duration) (string, error) {
	return l.ConnectContext(context.Background(), from, ip, port, timeout)
}

// ConnectContext is Connect that also gives up when ctx is done.
func (l *Lab) ConnectContext(ctx context.Context, from *Pod, ip net.IP, port int, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var conn net.Conn
	err := In(from.Ns, func() error {
		// The socket is made here, on the thread inside the pod; dialing
		// itself may finish on any thread.
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, "tcp4", net.JoinHostPort(ip.String(), fmt.Sprint(port)))
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// ConnectService connects from pod to the Service's ClusterIP.
func (l *Lab) ConnectService(from *Pod, timeout time.Duration) (string, error) {
	return l.Connect(from, l.ServiceIP, l.ServicePort, timeout)
}

// ConnectServiceContext is ConnectService that also gives up when ctx is done.
func (l *Lab) ConnectServiceContext(ctx context.Context, from *Pod, timeout time.Duration) (string, error) {
	return l.ConnectContext(ctx, from, l.ServiceIP, l.ServicePort, timeout)
}

// Restore loads rules with an iptables-restore binary inside the node.
func (l *Lab) Restore(bin, rules string) error {
	_, err := l.Exec(rules, bin)
	return err
}

// Exec runs a command inside the node namespace with stdin, returning its
// combined output.
func (l *Lab) Exec(stdin string, name string, args ...string) (string, error) {
	return Exec(l.NodeNs, stdin, name, args...)
}

// Exec runs a command inside ns.
func Exec(ns netns.NsHandle, stdin string, name string, args ...string) (string, error) {
	var out []byte
	err := In(ns, func() error {
		cmd := exec.Command(name, args...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil {
		return string(out), fmt.Errorf("lab: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Handle is a netlink handle in the node namespace.
func (l *Lab) Handle() *netlink.Handle { return l.h }

// Pod returns pod n (1-based).
func (l *Lab) Pod(n int) *Pod { return l.Pods[n-1] }

func (l *Lab) endpointIPs() []string {
	ips := make([]string, 0, len(l.opts.Endpoints))
	for _, e := range l.opts.Endpoints {
		ips = append(ips, l.Pods[e-1].IP.String())
	}
	return ips
}

// Close stops the servers and deletes every namespace the lab created; the
// kernel then destroys their links. It is safe to call more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	for _, ln := range l.listeners {
		ln.Close()
	}
	if l.h != nil {
		l.h.Close()
	}
	var errs []error
	for _, p := range l.Pods {
		p.Ns.Close()
	}
	l.NodeNs.Close()
	for _, name := range l.made {
		if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("lab: delete netns %s: %w", name, err))
		}
	}
	for _, d := range l.dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	return errors.Join(errs...)
}

// ServiceRules renders kube-proxy's iptables-mode NAT for one ClusterIP
// Service port, as iptables-save prints it: KUBE-SERVICES jumps to the
// KUBE-SVC chain, which picks a KUBE-SEP chain at random; each KUBE-SEP
// marks traffic from its own endpoint for masquerade (the hairpin rule)
// and DNATs; KUBE-POSTROUTING masquerades marked packets.
func ServiceRules(svcName, clusterIP string, port int, endpoints []string, targetPort int) string {
	var b strings.Builder
	svc := ServiceChain(svcName, "tcp")
	seps := make([]string, len(endpoints))
	for i, ep := range endpoints {
		seps[i] = EndpointChain(svcName, "tcp", fmt.Sprintf("%s:%d", ep, targetPort))
	}
	b.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	for _, ch := range append([]string{"KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-NODEPORTS", svc}, seps...) {
		fmt.Fprintf(&b, ":%s - [0:0]\n", ch)
	}
	b.WriteString(`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
`)
	fmt.Fprintf(&b, "-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport %d -j %s\n", clusterIP, svcName, port, svc)
	b.WriteString("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n")
	fmt.Fprintf(&b, "-A %s ! -s 10.244.0.0/16 -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport %d -j KUBE-MARK-MASQ\n", svc, clusterIP, svcName, port)
	for i, ep := range endpoints {
		left := len(endpoints) - i
		if left > 1 {
			fmt.Fprintf(&b, "-A %s -m comment --comment \"%s -> %s:%d\" -m statistic --mode random --probability %.11f -j %s\n", svc, svcName, ep, targetPort, 1/float64(left), seps[i])
		} else {
			fmt.Fprintf(&b, "-A %s -m comment --comment \"%s -> %s:%d\" -j %s\n", svc, svcName, ep, targetPort, seps[i])
		}
	}
	for i, ep := range endpoints {
		fmt.Fprintf(&b, "-A %s -s %s/32 -m comment --comment \"%s\" -j KUBE-MARK-MASQ\n", seps[i], ep, svcName)
		fmt.Fprintf(&b, "-A %s -p tcp -m comment --comment \"%s\" -m tcp -j DNAT --to-destination %s:%d\n", seps[i], svcName, ep, targetPort)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// ServiceChain names a KUBE-SVC chain the way kube-proxy does: a hash of
// the service port name and protocol, base32, 16 characters.
func ServiceChain(svcPortName, proto string) string {
	return "KUBE-SVC-" + chainHash(svcPortName+proto)
}

// EndpointChain names a KUBE-SEP chain the way kube-proxy does.
func EndpointChain(svcPortName, proto, endpoint string) string {
	return "KUBE-SEP-" + chainHash(svcPortName+proto+endpoint)
}

func chainHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(sum[:])[:16]
}
