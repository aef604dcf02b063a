package netops

import "github.com/mdlayher/netlink"

// NetlinkConfig makes mdlayher/netlink sockets (and ti-mo/conntrack's,
// which dials through it) in the client's namespace: the library creates
// the socket from a thread that entered the namespace, and a socket stays
// in the namespace it was made in. In the caller's own namespace it names
// none, so no setns, and no CAP_SYS_ADMIN, is needed.
func (c *Client) NetlinkConfig() *netlink.Config {
	cfg := &netlink.Config{}
	if !c.own {
		cfg.NetNS = int(c.ns)
	}
	return cfg
}
