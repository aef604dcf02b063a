package kubeproxy

import (
	"net/netip"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/vishvananda/netlink"
)

// markLocal fills Endpoint.Local: an endpoint whose address is in a subnet
// of one of this namespace's bridges (the node's pod CIDR: the CNI bridge
// plugin gives the bridge its gateway address there) is on this node, any
// other is not. Without a bridge with an address (a routed CNI, a scratch
// namespace) nothing can be said and Local stays unset.
func markLocal(c *netops.Client, svcs []Service) {
	var nets []netip.Prefix
	// BridgeNames' dump is filtered by the kernel: on a node of 1,000 pods
	// listing every link would cost more than the rest.
	bridges, err := bridgeports.BridgeNames(c)
	if err != nil {
		return
	}
	for _, name := range bridges {
		l, err := c.Handle().LinkByName(name)
		if err != nil {
			continue
		}
		addrs, err := c.Handle().AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if a.IPNet == nil || a.IP.IsLinkLocalUnicast() {
				continue
			}
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ones, _ := a.Mask.Size()
			nets = append(nets, netip.PrefixFrom(ip.Unmap(), ones).Masked())
		}
	}
	if len(nets) == 0 {
		return
	}
	for i := range svcs {
		for j := range svcs[i].Endpoints {
			ep := &svcs[i].Endpoints[j]
			a, err := netip.ParseAddr(ep.IP)
			if err != nil {
				continue
			}
			local := false
			for _, n := range nets {
				if n.Contains(a.Unmap()) {
					local = true
					break
				}
			}
			ep.Local = &local
		}
	}
}
