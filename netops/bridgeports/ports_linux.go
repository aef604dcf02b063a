package bridgeports

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"syscall"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlattr"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlsock"
	"github.com/hairpinctl/hairpinctl/netops/pods"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ListOptions says which ports List returns and how much it learns.
type ListOptions struct {
	// Bridges keeps ports of these bridges only; each must exist and be a bridge.
	Bridges []string
	// PodIPs asks for the addresses of the pod behind each port.
	PodIPs bool
	// Kinds asks for each port's link kind and whether it is a pod's port
	// (Port.Kind, Port.PodPort).
	Kinds bool
	// Pods, when not nil, asks for the pod behind each port (Port.Pod);
	// it implies PodIPs.
	Pods *PodOptions
}

// PodOptions says where List learns the pods' names.
type PodOptions struct {
	// CacheDir is libcni's cache directory, pods.DefaultCacheDir on a node.
	CacheDir string
	// Warn, when not nil, is told in one line each what left pods unknown:
	// an unreadable cache directory or file.
	Warn func(msg string)
	// Unnamed, when not nil, is given the ports once the cache has named
	// what it can, to name the others from another source: commands ask
	// the container runtime (NamePods with pods.FromSandboxes).
	Unnamed func(ports []Port)
}

// List returns the bridge ports of the namespace, sorted by bridge and
// ifindex. Every port comes from ONE link dump (netlink.LinkGetProtinfo
// dumps the whole table per call, which is O(N²)): the AF_BRIDGE one,
// the smaller, for names and state alone; the AF_UNSPEC one when kinds or
// pod IPs are asked for, which it alone tells.
func List(c *netops.Client, o ListOptions) ([]Port, error) {
	bridges, err := bridgesByIndex(c)
	if err != nil {
		return nil, err
	}
	keep := map[int]bool{}
	for _, b := range o.Bridges {
		i, err := bridgeIndex(c, bridges, b)
		if err != nil {
			return nil, err
		}
		keep[i] = true
	}
	var cache chan podCache
	if o.Pods != nil {
		o.PodIPs = true
		// The cache is files: read them while the kernel answers the dumps.
		cache = make(chan podCache, 1)
		go func() {
			pc, err := pods.LoadCache(o.Pods.CacheDir)
			cache <- podCache{pc, err}
		}()
	}
	var ports []Port
	if o.Kinds || o.PodIPs {
		ports, err = dumpPortLinks(c, keep, o.PodIPs)
	} else {
		ports, err = dumpKept(c, keep)
	}
	if err != nil {
		return nil, err
	}
	nameBridges(c, ports, bridges)
	if cache != nil {
		pc := <-cache
		namePods(c, ports, pc, o.Pods.Warn)
		if o.Pods.Unnamed != nil {
			o.Pods.Unnamed(ports)
		}
	}
	sort.SliceStable(ports, func(i, j int) bool {
		if ports[i].Bridge != ports[j].Bridge {
			return ports[i].Bridge < ports[j].Bridge
		}
		return ports[i].Index < ports[j].Index
	})
	return ports, nil
}

type podCache struct {
	c   *pods.Cache
	err error
}

// namePods fills Port.Pod from the libcni cache. A cache entry's netns
// path is checked against the namespace of the port's veth peer by asking
// the kernel for the netnsid it has, from this namespace, for the file
// (RTM_GETNSID with NETNSA_FD): the same id IFLA_LINK_NETNSID gave the peer.
func namePods(c *netops.Client, ports []Port, pc podCache, warn func(string)) {
	if warn == nil {
		warn = func(string) {}
	}
	if pc.err != nil {
		warn(pc.err.Error() + ": pod names unknown")
		return
	}
	for _, s := range pc.c.Skipped {
		warn("skipped CNI cache file " + s)
	}
	NamePods(c, ports, pc.c)
}

// NamePods fills Port.Pod of the ports still without one from cache (the
// ports listed with ListOptions.Pods, whose pod IPs and veth peers are
// known): the runtime's sandboxes (pods.FromSandboxes) name what the
// libcni cache did not. It asks the kernel over the client's socket: not
// beside another use of c.
func NamePods(c *netops.Client, ports []Port, cache *pods.Cache) {
	if cache.Len() == 0 {
		return
	}
	ids := map[string]int{}
	netnsID := func(path string) int {
		if id, ok := ids[path]; ok {
			return id
		}
		id := netnsIDOf(c, path)
		ids[path] = id
		return id
	}
	for i := range ports {
		p := &ports[i]
		if p.Pod != nil {
			continue
		}
		peer := p.peerNetnsID
		p.Pod, p.podNetns = cache.LookupNetns(pods.Port{Name: p.Name, MAC: p.MAC, IPs: p.PodIPs}, func(path string) bool {
			return peer >= 0 && netnsID(path) == peer
		})
	}
}

// netnsIDOf is the netnsid this namespace has for the namespace file at
// path (RTM_GETNSID with NETNSA_FD): the id IFLA_LINK_NETNSID gives a veth
// peer in that namespace; -1 when path is no namespace or has no id.
func netnsIDOf(c *netops.Client, path string) int {
	// O_NONBLOCK: a path that is a FIFO, not a namespace, must not
	// block the listing.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	defer unix.Close(fd)
	return netnsIDOfFd(c, fd)
}

// netnsaNSID and netnsaFD are NETNSA_NSID and NETNSA_FD.
const (
	netnsaNSID = 1
	netnsaFD   = 3
)

// netnsIDOfFd asks the kernel (RTM_GETNSID) for the netnsid this
// namespace has for the namespace open at fd; -1 when none or on error.
// It goes over the client's own socket and buffer (a node's listing asks
// once per pod; the netlink library's call clears a fresh buffer each
// time), so it must not run beside another use of that socket.
func netnsIDOfFd(c *netops.Client, fd int) int {
	id := -1
	req := c.RouteConn().NewRequest(unix.RTM_GETNSID, unix.NLM_F_ACK)
	req.AddData(nl.NewRtGenMsg())
	req.AddData(nl.NewRtAttr(netnsaFD, nl.Uint32Attr(uint32(fd))))
	hdr := nl.NewRtGenMsg().Len() // struct rtgenmsg, padded
	err := req.Stream(unix.RTM_NEWNSID, func(m []byte) {
		if len(m) < hdr {
			return
		}
		nlattr.ForEach(m[hdr:], func(typ uint16, val []byte) {
			if typ == netnsaNSID && len(val) >= 4 {
				id = int(int32(nl.NativeEndian().Uint32(val)))
			}
		})
	})
	if err != nil {
		return -1
	}
	return id
}

// Bridge returns the named bridge, ErrNotFound or ErrNotBridge.
func Bridge(c *netops.Client, name string) (netlink.Link, error) {
	if err := netops.ValidateIfName(name); err != nil {
		return nil, err
	}
	l, err := c.Handle().LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, netops.Errorf(netops.ErrNotFound, "bridge %s not found in netns %s", name, c.NetnsLabel())
		}
		return nil, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if l.Type() != "bridge" {
		return nil, netops.Errorf(netops.ErrNotBridge, "%s is a %s device, not a bridge", name, l.Type())
	}
	return l, nil
}

// bridgeIndex returns the ifindex of the bridge name from bridges (as
// bridgesByIndex reads them); when it is not there, ErrNotFound or
// ErrNotBridge as Bridge says.
func bridgeIndex(c *netops.Client, bridges map[int]string, name string) (int, error) {
	for i, n := range bridges {
		if n == name {
			return i, nil
		}
	}
	br, err := Bridge(c, name)
	if err != nil {
		return 0, err
	}
	return br.Attrs().Index, nil // a bridge made since bridges was read
}

// Select picks the named ports out of ports, in the order named, each
// once. A name may be a pod IP (PortArgAddr): it picks the port whose
// PodIPs hold it (list the ports with ListOptions.PodIPs); or a pod
// (PortArgPod): it picks every port of that pod (list the ports with
// ListOptions.Pods). A name that is not among them is a Failure:
// ErrNotFound when no such interface, pod IP or pod exists,
// ErrNotBridgePort when it exists but is no port (of the selected bridges).
func Select(c *netops.Client, ports []Port, names []string) ([]Port, []Failure) {
	byName := make(map[string]int, len(ports))
	for i, p := range ports {
		byName[p.Name] = i
	}
	sel := make([]Port, 0, len(names))
	fails := []Failure{}
	seen, picked := map[string]bool{}, map[int]bool{}
	pick := func(i int) {
		if !picked[i] {
			picked[i] = true
			sel = append(sel, ports[i])
		}
	}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		if full, ok := PortArgPod(n); ok {
			found := false
			for i, p := range ports {
				if p.Pod.FullName() == full {
					found = true
					pick(i) // every port of the pod: one per interface
				}
			}
			if !found {
				err := netops.Errorf(netops.ErrNotFound, "%s: no bridge port in netns %s has this pod, or its name is unknown %s", n, c.NetnsLabel(), c.SeeHint("ports -o wide"))
				fails = append(fails, Failure{Name: n, Error: err.Error(), err: err})
			}
			continue
		}
		if a, ok := PortArgAddr(n); ok {
			if i := portOfPodIP(ports, a); i >= 0 {
				pick(i)
				continue
			}
			err := netops.Errorf(netops.ErrNotFound, "%s: no bridge port has a pod with this IP in netns %s %s", n, c.NetnsLabel(), c.SeeHint("ports"))
			fails = append(fails, Failure{Name: n, Error: err.Error(), err: err})
			continue
		}
		if err := netops.ValidateIfName(n); err != nil {
			fails = append(fails, Failure{Name: n, Error: err.Error(), err: err})
			continue
		}
		if i, ok := byName[n]; ok {
			pick(i)
			continue
		}
		err := classifyMissing(c, n)
		fails = append(fails, Failure{Name: n, Error: err.Error(), err: err})
	}
	return sel, fails
}

// portOfPodIP is the index of the port whose pod has address a, or -1.
func portOfPodIP(ports []Port, a netip.Addr) int {
	for i, p := range ports {
		for _, ip := range p.PodIPs {
			if b, err := netip.ParseAddr(ip); err == nil && b.Unmap() == a {
				return i
			}
		}
	}
	return -1
}

func classifyMissing(c *netops.Client, name string) error {
	l, err := c.Handle().LinkByName(name)
	if err != nil {
		return netops.Errorf(netops.ErrNotFound, "%s: no such interface in netns %s %s", name, c.NetnsLabel(), c.SeeHint("ports"))
	}
	if m := l.Attrs().MasterIndex; m != 0 {
		if br, err := c.Handle().LinkByIndex(m); err == nil && br.Type() == "bridge" {
			return netops.Errorf(netops.ErrNotBridgePort, "%s is a port of %s, which was not selected %s", name, br.Attrs().Name, c.SeeHint("ports"))
		}
	}
	return netops.Errorf(netops.ErrNotBridgePort, "%s is not attached to a bridge %s", name, c.SeeHint("ports"))
}

// portsReserve is the room made up front for a node's ports (kubelet
// runs 110 pods by default; few nodes run over a thousand). The pages of a
// fresh block are touched only as ports fill them, where growing by
// doubling writes every port twice and touches twice the memory.
const portsReserve = 1024

// Dump reads every bridge port with one AF_BRIDGE RTM_GETLINK
// dump. The kernel answers it with br_getlink for each port: name, master,
// operstate, address, IFLA_LINK and the IFLA_PROTINFO nest that holds the
// STP state and hairpin mode (IFLA_BRPORT_MODE).
func Dump(c *netops.Client) ([]Port, error) {
	ports := make([]Port, 0, portsReserve)
	var perr, err error
	for attempt := 0; attempt < 3; attempt++ {
		ports, perr = ports[:0], nil
		req := c.RouteConn().NewRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfInfomsg(unix.AF_BRIDGE))
		err = req.Stream(unix.RTM_NEWLINK, func(m []byte) {
			p, ok, err := parseBridgeLinkMsg(m)
			switch {
			case err != nil:
				perr = err
			case ok:
				ports = append(ports, p)
			}
		})
		// A dump interrupted by a concurrent change (pods churning) is
		// retried; after three tries the possibly inconsistent result is used.
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("dump bridge ports in netns %s: %w", c.NetnsLabel(), err)
	}
	if perr != nil {
		return nil, fmt.Errorf("dump bridge ports: %w", perr)
	}
	return ports, nil
}

func parseBridgeLinkMsg(m []byte) (Port, bool, error) {
	if len(m) < unix.SizeofIfInfomsg {
		return Port{}, false, fmt.Errorf("short RTM_NEWLINK message (%d bytes)", len(m))
	}
	ifi := nl.DeserializeIfInfomsg(m)
	p := Port{Index: int(ifi.Index), PodIPs: []string{}, peerNetnsID: -1}
	hasState := false
	nlattr.ForEach(m[unix.SizeofIfInfomsg:], func(typ uint16, val []byte) {
		if typ == unix.IFLA_PROTINFO {
			hasState = brportAttrs(&p, val)
			return
		}
		linkAttr(&p, typ, val)
	})
	// A bridge's port comes with its master and the bridge's port
	// attributes, the STP state first among them. A NIC whose driver
	// answers the dump itself (SR-IOV NICs' embedded switch, through
	// ndo_dflt_bridge_getlink) sends a second message, with its master
	// (a bridge or a bond) and a PROTINFO of the embedded switch's flags
	// only, often empty, where IFLA_BRPORT_MODE, when there, is that
	// switch's hairpin, not the bridge's: without the state it is not
	// listed.
	return p, hasState && p.BridgeIndex != 0, nil
}

// linkAttr reads into p the link attributes both port dumps carry alike.
func linkAttr(p *Port, typ uint16, val []byte) {
	switch typ {
	case unix.IFLA_IFNAME:
		p.Name = nl.BytesToString(val)
	case unix.IFLA_MASTER:
		if len(val) >= 4 {
			p.BridgeIndex = int(nl.NativeEndian().Uint32(val))
		}
	case unix.IFLA_LINK:
		if len(val) >= 4 {
			p.peerIndex = int(nl.NativeEndian().Uint32(val))
		}
	case unix.IFLA_OPERSTATE:
		if len(val) > 0 {
			p.OperState = netlink.LinkOperState(val[0]).String()
		}
	case unix.IFLA_ADDRESS:
		p.MAC = net.HardwareAddr(val).String()
	}
}

// brportAttrs reads the bridge's attributes of the port (IFLA_PROTINFO in
// the AF_BRIDGE dump, IFLA_INFO_SLAVE_DATA in the AF_UNSPEC one) into p,
// and says whether the STP state was among them.
func brportAttrs(p *Port, b []byte) (hasState bool) {
	nlattr.ForEach(b, func(t uint16, v []byte) {
		if len(v) == 0 {
			return
		}
		switch t {
		case nl.IFLA_BRPORT_MODE:
			p.Hairpin = v[0] != 0
		case nl.IFLA_BRPORT_STATE:
			hasState = true
			p.State = stpStateName(v[0])
		}
	})
	return hasState
}

// dumpKept is Dump keeping the ports of the bridges in keep (all when
// keep is empty); never nil, so JSON says [].
func dumpKept(c *netops.Client, keep map[int]bool) ([]Port, error) {
	ports, err := Dump(c)
	if err != nil {
		return nil, err
	}
	if len(keep) > 0 {
		ports = slices.DeleteFunc(ports, func(p Port) bool { return !keep[p.BridgeIndex] })
	}
	if ports == nil {
		ports = []Port{}
	}
	return ports, nil
}

// dumpPortLinks reads the ports of the bridges in keep (all when keep is
// empty) with one AF_UNSPEC RTM_GETLINK dump, without statistics and, for
// one bridge, filtered by the kernel to its ports (IFLA_MASTER). Besides
// what the AF_BRIDGE dump tells (hairpin and STP state are in the bridge's
// slave data, IFLA_INFO_SLAVE_DATA), it tells each port's link kind and
// where a veth's peer lives (IFLA_LINK_NETNSID), so it fills Kind,
// PodPort and the peer. With podIPs, the address dumps of the pods'
// namespaces start as their veths arrive, and PodIPs are filled.
func dumpPortLinks(c *netops.Client, keep map[int]bool, podIPs bool) ([]Port, error) {
	var d *addrDumper
	if podIPs {
		d = newAddrDumper(c, portsReserve)
	}
	ports := make([]Port, 0, portsReserve)
	var perr, err error
	for attempt := 0; attempt < 3; attempt++ {
		ports, perr = ports[:0], nil
		if attempt > 0 && d != nil {
			// Pods came and went: a netnsid read in the try before may
			// now be another pod's (the kernel reuses the lowest free
			// id), so what was read is dropped and read again.
			d.finish(true)
			d = newAddrDumper(c, portsReserve)
		}
		req := c.RouteConn().NewRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
		req.AddData(nl.NewRtAttr(unix.IFLA_EXT_MASK, nl.Uint32Attr(rtextFilterSkipStats)))
		if len(keep) == 1 {
			for br := range keep {
				req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(br))))
			}
		}
		err = req.Stream(unix.RTM_NEWLINK, func(m []byte) {
			p, ok, err := parsePortLinkMsg(m)
			switch {
			case err != nil:
				perr = err
			case !ok || (len(keep) > 0 && !keep[p.BridgeIndex]):
			default:
				ports = append(ports, p)
				if d != nil && p.Kind == "veth" && p.peerIndex != 0 {
					d.add(vethPeer{index: p.peerIndex, netnsID: p.peerNetnsID})
				}
			}
		})
		// As in Dump: retried while pods churn, then used as it is.
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		err = fmt.Errorf("dump bridge port links in netns %s: %w", c.NetnsLabel(), err)
	} else if err = perr; err != nil {
		err = fmt.Errorf("dump bridge port links: %w", err)
	}
	if d != nil {
		byNs := d.finish(err != nil)
		if err == nil {
			resolvePodIPs(c, ports, byNs)
		}
	}
	if err != nil {
		return nil, err
	}
	return ports, nil
}

// parsePortLinkMsg reads one RTM_NEWLINK of an AF_UNSPEC dump; ok is false
// for a link that is no bridge's port.
func parsePortLinkMsg(m []byte) (p Port, ok bool, err error) {
	if len(m) < unix.SizeofIfInfomsg {
		return Port{}, false, fmt.Errorf("short RTM_NEWLINK message (%d bytes)", len(m))
	}
	ifi := nl.DeserializeIfInfomsg(m)
	p = Port{Index: int(ifi.Index), PodIPs: []string{}, peerNetnsID: -1}
	bridgeSlave, otherNs := false, false
	netnsID := -1
	nlattr.ForEach(m[unix.SizeofIfInfomsg:], func(typ uint16, val []byte) {
		switch typ {
		case unix.IFLA_LINK_NETNSID:
			if len(val) >= 4 {
				otherNs = true
				netnsID = int(int32(nl.NativeEndian().Uint32(val)))
			}
		case unix.IFLA_LINKINFO:
			nlattr.ForEach(val, func(t uint16, v []byte) {
				switch t {
				case nl.IFLA_INFO_KIND:
					p.Kind = nl.BytesToString(v)
				case nl.IFLA_INFO_SLAVE_KIND:
					bridgeSlave = nl.BytesToString(v) == "bridge"
				case nl.IFLA_INFO_SLAVE_DATA:
					brportAttrs(&p, v)
				}
			})
		default:
			linkAttr(&p, typ, val)
		}
	})
	if p.Kind == "veth" {
		// Only a veth's peer is a pod's end; its netnsid is -1 when the
		// peer is in this namespace.
		p.peerNetnsID = netnsID
		p.PodPort = otherNs
	}
	return p, bridgeSlave && p.BridgeIndex != 0, nil
}

// nameBridges fills Port.Bridge from bridges (ifindex → name, read before
// the ports). A bridge made in between is asked for by ifindex, and added;
// one gone already is named by its ifindex, "if7".
func nameBridges(c *netops.Client, ports []Port, bridges map[int]string) {
	for i := range ports {
		bi := ports[i].BridgeIndex
		name, ok := bridges[bi]
		if !ok {
			if l, err := c.Handle().LinkByIndex(bi); err == nil {
				name = l.Attrs().Name
			} else {
				name = "if" + strconv.Itoa(bi)
			}
			bridges[bi] = name
		}
		ports[i].Bridge = name
	}
}

// resolvePodIPs fills PodIPs: first from the addresses of the veth peer in
// the pod's namespace (byNs, netnsid → ifindex → addresses, as the
// addrDumper read them); ports left unknown (no privilege, no veth, no
// address) fall back to the bridge's FDB (MAC → port) joined with its
// neighbour table (IP → MAC).
func resolvePodIPs(c *netops.Client, ports []Port, byNs map[int]map[int][]string) {
	unknown := false
	for i := range ports {
		p := &ports[i]
		if p.Kind != "veth" || p.peerIndex == 0 {
			unknown = true
			continue
		}
		if ips := byNs[p.peerNetnsID][p.peerIndex]; len(ips) > 0 {
			p.PodIPs = ips
			p.PodIPSource = "netnsid:" + strconv.Itoa(p.peerNetnsID)
			if p.peerNetnsID < 0 {
				p.PodIPSource = "netns:" + c.NetnsLabel()
			}
			continue
		}
		unknown = true
	}
	if unknown {
		podIPsFromNeigh(c, ports)
	}
}

// ifaTargetNetnsid is IFA_TARGET_NETNSID: dump another namespace's
// addresses by its netnsid.
const ifaTargetNetnsid = 10

// dumpAddrs maps ifindex → global addresses in the namespace with netnsid
// id (-1: the connection's own) on conn. Link-local and loopback addresses
// are left out: every veth has one and they say nothing about the pod.
//
// It makes one RTM_GETADDR dump per family rather than one AF_UNSPEC dump:
// the kernel serves the AF_UNSPEC dump under the RTNL lock, so dumps of
// many pods on parallel sockets would wait on each other (and on every
// other RTNL user on the node), while the IPv4 and IPv6 dumps run
// under RCU (Linux 6.9).
//
// When the IPv6 dump fails (IPv6 disabled, say), the IPv4 addresses are
// still returned.
func dumpAddrs(conn *nlsock.Conn, netnsID int) (map[int][]string, error) {
	out := map[int][]string{}
	if err := dumpFamilyAddrs(conn, netnsID, unix.AF_INET, out); err != nil {
		return nil, err
	}
	_ = dumpFamilyAddrs(conn, netnsID, unix.AF_INET6, out)
	return out, nil
}

func dumpFamilyAddrs(conn *nlsock.Conn, netnsID, family int, out map[int][]string) error {
	req := conn.NewRequest(unix.RTM_GETADDR, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfAddrmsg(family))
	if netnsID >= 0 {
		req.AddData(nl.NewRtAttr(ifaTargetNetnsid, nl.Uint32Attr(uint32(netnsID))))
	}
	err := req.Stream(unix.RTM_NEWADDR, func(m []byte) {
		if len(m) < unix.SizeofIfAddrmsg {
			return
		}
		ifa := nl.DeserializeIfAddrmsg(m)
		// A kernel without a handler for the family (no IPv6) answers with
		// the AF_UNSPEC dump of every family: keep the one asked for.
		if int(ifa.Family) != family {
			return
		}
		var local, addr net.IP
		nlattr.ForEach(m[unix.SizeofIfAddrmsg:], func(typ uint16, val []byte) {
			switch typ {
			case unix.IFA_LOCAL:
				local = net.IP(val)
			case unix.IFA_ADDRESS:
				addr = net.IP(val)
			}
		})
		if local != nil { // IPv4 point-to-point puts the peer in IFA_ADDRESS
			addr = local
		}
		if addr == nil || addr.IsLinkLocalUnicast() || addr.IsLoopback() {
			return
		}
		// String copies: addr aliases the receive buffer.
		out[int(ifa.Index)] = append(out[int(ifa.Index)], addr.String())
	})
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return err
	}
	return nil
}

// podIPsFromNeigh fills PodIPs still unknown from the bridge's tables: a
// learnt (not permanent) FDB entry says which port a MAC sits behind, and
// the neighbour entries on the bridge device say which IPs use that MAC.
func podIPsFromNeigh(c *netops.Client, ports []Port) {
	onBridge := map[int]bool{}
	for _, p := range ports {
		if len(p.PodIPs) == 0 {
			onBridge[p.BridgeIndex] = true
		}
	}
	// The neighbour table is small (pods that talked recently); the FDB
	// holds an entry per port and is dumped only when it can help.
	neighs, err := c.Handle().NeighList(0, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return
	}
	type key struct {
		bridge int
		mac    string
	}
	ipsByMAC := map[key][]string{}
	for _, n := range neighs {
		if !onBridge[n.LinkIndex] || n.HardwareAddr == nil || n.IP == nil || n.IP.IsLinkLocalUnicast() ||
			n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE|netlink.NUD_NOARP) != 0 {
			continue
		}
		k := key{n.LinkIndex, n.HardwareAddr.String()}
		ipsByMAC[k] = append(ipsByMAC[k], n.IP.String())
	}
	if len(ipsByMAC) == 0 {
		return
	}
	fdb, err := c.Handle().NeighList(0, unix.AF_BRIDGE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return
	}
	ipsByPort := map[int][]string{}
	for _, n := range fdb {
		// Permanent entries are the ports' own addresses, not what is behind them.
		if n.State&netlink.NUD_PERMANENT != 0 || n.HardwareAddr == nil || n.MasterIndex == 0 {
			continue
		}
		if ips, ok := ipsByMAC[key{n.MasterIndex, n.HardwareAddr.String()}]; ok {
			ipsByPort[n.LinkIndex] = append(ipsByPort[n.LinkIndex], ips...)
		}
	}
	for i := range ports {
		p := &ports[i]
		if len(p.PodIPs) > 0 {
			continue
		}
		if ips := ipsByPort[p.Index]; len(ips) > 0 {
			sort.Strings(ips)
			p.PodIPs = slices.Compact(ips)
			p.PodIPSource = "neigh"
		}
	}
}

// errnoOf extracts a kernel errno from a netlink error, 0 when none.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// vethPeer is where a veth's other end is: its ifindex and the netnsid
// of its namespace as seen from ours (-1: the same namespace).
type vethPeer struct {
	index   int
	netnsID int
}

// rtextFilterSkipStats is RTEXT_FILTER_SKIP_STATS (Linux 4.19): the dump
// leaves out the per-link statistics, most of its bytes.
const rtextFilterSkipStats = 1 << 3

// BridgeNames lists the bridges of the namespace, sorted.
func BridgeNames(c *netops.Client) ([]string, error) {
	byIndex, err := bridgesByIndex(c)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(byIndex))
	for _, n := range byIndex {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// bridgesByIndex maps the ifindex of each bridge of the namespace to its
// name, with one RTM_GETLINK dump filtered by the kernel to kind "bridge".
func bridgesByIndex(c *netops.Client) (map[int]string, error) {
	req := c.RouteConn().NewRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_EXT_MASK, nl.Uint32Attr(rtextFilterSkipStats)))
	linkinfo := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	linkinfo.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	req.AddData(linkinfo)
	names := map[int]string{}
	err := req.Stream(unix.RTM_NEWLINK, func(m []byte) {
		if len(m) < unix.SizeofIfInfomsg {
			return
		}
		var name string
		bridge := false
		nlattr.ForEach(m[unix.SizeofIfInfomsg:], func(typ uint16, val []byte) {
			switch typ {
			case unix.IFLA_IFNAME:
				name = nl.BytesToString(val)
			case unix.IFLA_LINKINFO:
				nlattr.ForEach(val, func(t uint16, kind []byte) {
					if t == nl.IFLA_INFO_KIND && nl.BytesToString(kind) == "bridge" {
						bridge = true
					}
				})
			}
		})
		if bridge {
			names[int(nl.DeserializeIfInfomsg(m).Index)] = name
		}
	})
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list bridges in netns %s: %w", c.NetnsLabel(), err)
	}
	return names, nil
}
