package netops

import (
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// LinkChanges subscribes to the namespace's link notifications (RTNLGRP_LINK)
// and says on the returned channel, which holds one value, that a link was
// added, removed or changed (other than its bridge port state) since the
// last receive: a long-running command
// that keeps what it learnt of the ports (their pods) knows when to look
// again, instead of looking on every line. The channel is closed when the
// subscription ends (done closed, or the socket failed, as when the kernel
// drops notifications): from then on every receive says "changed".
func (c *Client) LinkChanges(done <-chan struct{}) (<-chan struct{}, error) {
	updates := make(chan netlink.LinkUpdate, 256)
	var nsp *netns.NsHandle
	if !c.own {
		ns := c.ns
		nsp = &ns
	}
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		Namespace:     nsp,
		ErrorCallback: func(error) {}, // the channel's closing says it
	})
	if err != nil {
		return nil, err
	}
	changed := make(chan struct{}, 1)
	go func() {
		defer close(changed)
		for u := range updates {
			// A port's bridge state (hairpin, STP) comes as AF_BRIDGE:
			// it moves no pod.
			if u.Family == unix.AF_BRIDGE {
				continue
			}
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}()
	return changed, nil
}
