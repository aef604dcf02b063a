package netops

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ListOptions says which ports ListPorts returns and how much it learns.
type ListOptions struct {
	// Bridges keeps ports of these bridges only; each must exist and be a bridge.
	Bridges []string
	// PodIPs asks for the addresses of the pod behind each port.
	PodIPs bool
}

// ListPorts returns the bridge ports of the namespace, sorted by bridge and
// ifindex. Hairpin and STP state come from ONE AF_BRIDGE RTM_GETLINK dump:
// netlink.LinkGetProtinfo dumps the whole table per call, which is O(N²).
func (c *Client) ListPorts(o ListOptions) ([]Port, error) {
	keep := map[int]bool{}
	for _, b := range o.Bridges {
		br, err := c.Bridge(b)
		if err != nil {
			return nil, err
		}
		keep[br.Attrs().Index] = true
	}
	ports, err := c.dumpBridgePorts()
	if err != nil {
		return nil, err
	}
	if len(keep) > 0 {
		kept := ports[:0]
		for _, p := range ports {
			if keep[p.bridgeIndex] {
				kept = append(kept, p)
			}
		}
		ports = kept
	}
	var links map[int]netlink.Link
	if o.PodIPs && len(ports) > 0 {
		// One AF_UNSPEC dump gives what the AF_BRIDGE one lacks: the veth
		// peer's namespace id (IFLA_LINK_NETNSID) and the bridges' names.
		all, err := c.h.LinkList()
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("list links: %w", err)
		}
		links = make(map[int]netlink.Link, len(all))
		for _, l := range all {
			links[l.Attrs().Index] = l
		}
	}
	if err := c.nameBridges(ports, links); err != nil {
		return nil, err
	}
	if o.PodIPs {
		c.resolvePodIPs(ports, links)
	}
	sort.SliceStable(ports, func(i, j int) bool {
		if ports[i].Bridge != ports[j].Bridge {
			return ports[i].Bridge < ports[j].Bridge
		}
		return ports[i].Index < ports[j].Index
	})
	return ports, nil
}

// Bridge returns the named bridge, ErrNotFound or ErrNotBridge.
func (c *Client) Bridge(name string) (netlink.Link, error) {
	if err := ValidateIfName(name); err != nil {
		return nil, err
	}
	l, err := c.h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, errorf(ErrNotFound, "bridge %s not found in netns %s", name, c.NetnsLabel())
		}
		return nil, fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if l.Type() != "bridge" {
		return nil, errorf(ErrNotBridge, "%s is a %s device, not a bridge", name, l.Type())
	}
	return l, nil
}

// SelectPorts picks the named ports out of ports, in the order named. A
// name that is not among them is a Failure: ErrNotFound when no such
// interface exists, ErrNotBridgePort when it exists but is no port (of the
// selected bridges).
func (c *Client) SelectPorts(ports []Port, names []string) ([]Port, []Failure) {
	byName := make(map[string]int, len(ports))
	for i, p := range ports {
		byName[p.Name] = i
	}
	sel := make([]Port, 0, len(names))
	fails := []Failure{}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		if err := ValidateIfName(n); err != nil {
			fails = append(fails, Failure{Name: n, Error: err.Error(), err: err})
			continue
		}
		if i, ok := byName[n]; ok {
			sel = append(sel, ports[i])
			continue
		}
		err := c.classifyMissing(n)
		fails = append(fails, Failure{Name: n, Error: err.Error(), err: err})
	}
	return sel, fails
}

func (c *Client) classifyMissing(name string) error {
	l, err := c.h.LinkByName(name)
	if err != nil {
		return errorf(ErrNotFound, "%s: no such interface in netns %s (see: hairpinctl ports)", name, c.NetnsLabel())
	}
	if m := l.Attrs().MasterIndex; m != 0 {
		if br, err := c.h.LinkByIndex(m); err == nil && br.Type() == "bridge" {
			return errorf(ErrNotBridgePort, "%s is a port of %s, which was not selected (see: hairpinctl ports)", name, br.Attrs().Name)
		}
	}
	return errorf(ErrNotBridgePort, "%s is not attached to a bridge (see: hairpinctl ports)", name)
}

// dumpBridgePorts reads every bridge port with one AF_BRIDGE RTM_GETLINK
// dump. The kernel answers it with br_getlink for each port: name, master,
// operstate, address, IFLA_LINK and the IFLA_PROTINFO nest that holds the
// STP state and hairpin mode (IFLA_BRPORT_MODE).
func (c *Client) dumpBridgePorts() ([]Port, error) {
	var msgs [][]byte
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		req := c.newRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfInfomsg(unix.AF_BRIDGE))
		msgs, err = req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
		// A dump interrupted by a concurrent change (pods churning) is
		// retried; after three tries the possibly inconsistent result is used.
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("dump bridge ports in netns %s: %w", c.NetnsLabel(), err)
	}
	ports := make([]Port, 0, len(msgs))
	for _, m := range msgs {
		p, ok, err := parseBridgeLinkMsg(m)
		if err != nil {
			return nil, fmt.Errorf("dump bridge ports: %w", err)
		}
		if ok {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

func parseBridgeLinkMsg(m []byte) (Port, bool, error) {
	if len(m) < unix.SizeofIfInfomsg {
		return Port{}, false, fmt.Errorf("short RTM_NEWLINK message (%d bytes)", len(m))
	}
	ifi := nl.DeserializeIfInfomsg(m)
	attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
	if err != nil {
		return Port{}, false, err
	}
	p := Port{Index: int(ifi.Index), PodIPs: []string{}, peerNetnsID: -1}
	hasProtinfo := false
	for _, a := range attrs {
		switch a.Attr.Type & nlaTypeMask {
		case unix.IFLA_IFNAME:
			p.Name = nl.BytesToString(a.Value)
		case unix.IFLA_MASTER:
			p.bridgeIndex = int(nl.NativeEndian().Uint32(a.Value))
		case unix.IFLA_LINK:
			p.peerIndex = int(nl.NativeEndian().Uint32(a.Value))
		case unix.IFLA_OPERSTATE:
			if len(a.Value) > 0 {
				p.OperState = netlink.LinkOperState(a.Value[0]).String()
			}
		case unix.IFLA_ADDRESS:
			p.MAC = net.HardwareAddr(a.Value).String()
		case unix.IFLA_PROTINFO:
			hasProtinfo = true
			nested, err := nl.ParseRouteAttr(a.Value)
			if err != nil {
				return Port{}, false, err
			}
			for _, n := range nested {
				if len(n.Value) == 0 {
					continue
				}
				switch n.Attr.Type & nlaTypeMask {
				case nl.IFLA_BRPORT_MODE:
					p.Hairpin = n.Value[0] != 0
				case nl.IFLA_BRPORT_STATE:
					p.State = stpStateName(n.Value[0])
				}
			}
		}
	}
	// Only ports carry IFLA_PROTINFO and a master.
	return p, hasProtinfo && p.bridgeIndex != 0, nil
}

func (c *Client) newRequest(proto, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(proto, flags)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: c.raw}}
	return req
}

// nameBridges fills Port.Bridge from links when given, else with one
// RTM_GETLINK per distinct bridge (there are few).
func (c *Client) nameBridges(ports []Port, links map[int]netlink.Link) error {
	names := map[int]string{}
	for i := range ports {
		bi := ports[i].bridgeIndex
		name, ok := names[bi]
		if !ok {
			if l, found := links[bi]; found {
				name = l.Attrs().Name
			} else if l, err := c.h.LinkByIndex(bi); err == nil {
				name = l.Attrs().Name
			} else {
				name = "if" + strconv.Itoa(bi)
			}
			names[bi] = name
		}
		ports[i].Bridge = name
	}
	return nil
}

// resolvePodIPs fills PodIPs. First from the veth peer: its namespace is
// found by matching IFLA_LINK_NETNSID against the ids of the namespaces
// bind-mounted under /run/netns or held by a process, and its addresses
// read with one dump there. Ports left unknown fall back to the bridge's
// FDB (MAC → port) joined with its neighbour table (IP → MAC).
func (c *Client) resolvePodIPs(ports []Port, links map[int]netlink.Link) {
	want := map[int]bool{}
	sameNs := false
	for i := range ports {
		l, ok := links[ports[i].Index]
		if !ok {
			continue
		}
		a := l.Attrs()
		ports[i].peerIndex = a.ParentIndex
		ports[i].peerNetnsID = a.NetNsID
		if l.Type() != "veth" || a.ParentIndex == 0 {
			continue
		}
		if a.NetNsID >= 0 {
			want[a.NetNsID] = true
		} else {
			sameNs = true
		}
	}
	type peerNs struct {
		label string
		addrs map[int][]string
	}
	byID := map[int]*peerNs{}
	for id, ns := range c.findNetnsByID(want) {
		addrs, err := addrsByLink(ns.handle)
		ns.handle.Close()
		if err == nil {
			byID[id] = &peerNs{label: ns.label, addrs: addrs}
		}
	}
	if sameNs {
		if addrs, err := c.addrsByLinkHere(); err == nil {
			byID[-1] = &peerNs{label: "netns:" + c.NetnsLabel(), addrs: addrs}
		}
	}
	unknown := false
	for i := range ports {
		p := &ports[i]
		if ns, ok := byID[p.peerNetnsID]; ok && p.peerIndex != 0 {
			if ips := ns.addrs[p.peerIndex]; len(ips) > 0 {
				p.PodIPs = ips
				p.PodIPSource = ns.label
				continue
			}
		}
		unknown = true
	}
	if unknown {
		c.podIPsFromNeigh(ports)
	}
}

type foundNs struct {
	label  string
	handle netns.NsHandle
}

// findNetnsByID opens the namespaces whose netnsid (as seen from the
// client's namespace) is wanted. It looks under /run/netns first and at
// processes' namespaces only for ids still missing, each namespace once.
func (c *Client) findNetnsByID(want map[int]bool) map[int]foundNs {
	found := map[int]foundNs{}
	if len(want) == 0 {
		return found
	}
	seen := map[[2]uint64]bool{}
	var self unix.Stat_t
	if err := unix.Fstat(int(c.ns), &self); err == nil {
		seen[[2]uint64{self.Dev, self.Ino}] = true
	}
	try := func(path, label string) bool {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			return false
		}
		key := [2]uint64{st.Dev, st.Ino}
		if seen[key] {
			return false
		}
		seen[key] = true
		h, err := netns.GetFromPath(path)
		if err != nil {
			return false
		}
		id, err := c.h.GetNetNsIdByFd(int(h))
		if err != nil || !want[id] {
			h.Close()
			return false
		}
		delete(want, id)
		found[id] = foundNs{label: label, handle: h}
		return len(want) == 0
	}
	if ents, err := os.ReadDir(NetnsDir); err == nil {
		for _, e := range ents {
			if try(filepath.Join(NetnsDir, e.Name()), "netns:"+e.Name()) {
				return found
			}
		}
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return found
	}
	for _, e := range procs {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if try(filepath.Join("/proc", e.Name(), "ns", "net"), "pid:"+e.Name()) {
			return found
		}
	}
	return found
}

func addrsByLink(ns netns.NsHandle) (map[int][]string, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return collectAddrs(h)
}

func (c *Client) addrsByLinkHere() (map[int][]string, error) { return collectAddrs(c.h) }

// collectAddrs maps ifindex → global addresses with one RTM_GETADDR dump.
// Link-local addresses are left out: every veth has one and they say
// nothing about the pod.
func collectAddrs(h *netlink.Handle) (map[int][]string, error) {
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	out := map[int][]string{}
	for _, a := range addrs {
		if a.IP == nil || a.IP.IsLinkLocalUnicast() || a.IP.IsLoopback() {
			continue
		}
		out[a.LinkIndex] = append(out[a.LinkIndex], a.IP.String())
	}
	return out, nil
}

// podIPsFromNeigh fills PodIPs still unknown from the bridge's tables: a
// learnt (not permanent) FDB entry says which port a MAC sits behind, and
// the neighbour entries on the bridge device say which IPs use that MAC.
func (c *Client) podIPsFromNeigh(ports []Port) {
	fdb, err := c.h.NeighList(0, unix.AF_BRIDGE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return
	}
	// Keyed by bridge ifindex and MAC: the neighbour must sit on the same bridge.
	type key struct {
		bridge int
		mac    string
	}
	macPort := map[key]int{}
	for _, n := range fdb {
		if n.State&netlink.NUD_PERMANENT != 0 || n.HardwareAddr == nil || n.MasterIndex == 0 {
			continue
		}
		macPort[key{n.MasterIndex, n.HardwareAddr.String()}] = n.LinkIndex
	}
	if len(macPort) == 0 {
		return
	}
	neighs, err := c.h.NeighList(0, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return
	}
	ipsByPort := map[int][]string{}
	for _, n := range neighs {
		if n.HardwareAddr == nil || n.IP == nil || n.IP.IsLinkLocalUnicast() ||
			n.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE|netlink.NUD_NOARP) != 0 {
			continue
		}
		if idx, ok := macPort[key{n.LinkIndex, n.HardwareAddr.String()}]; ok {
			ipsByPort[idx] = append(ipsByPort[idx], n.IP.String())
		}
	}
	for i := range ports {
		p := &ports[i]
		if len(p.PodIPs) > 0 {
			continue
		}
		if ips := ipsByPort[p.Index]; len(ips) > 0 {
			sort.Strings(ips)
			p.PodIPs = ips
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

// nlaTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from an attribute type.
const nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
