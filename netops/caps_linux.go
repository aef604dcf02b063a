package netops

import (
	"golang.org/x/sys/unix"
)

// HasNetAdmin reports whether the process holds CAP_NET_ADMIN in its
// effective set, which the kernel requires for RTM_SETLINK and for
// conntrack dumps and events.
func HasNetAdmin() bool { return hasCap(unix.CAP_NET_ADMIN) }

// hasCap reports whether capability cap (below 32) is in the effective set.
func hasCap(cap uint) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<cap) != 0
}
