package bridgeports

import (
	"os"
	"path/filepath"
	"strconv"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PortNetns opens the network namespace of the pod behind port p, a port
// listed with ListOptions.PodIPs (and Pods, for the pod's recorded
// namespace): the namespace the port's veth peer is in. The kernel names
// that namespace only by the netnsid it has from here (IFLA_LINK_NETNSID),
// and no call opens a namespace by its id, so a file is looked for whose
// id is that one: the path the CNI cache or the runtime recorded for the
// pod, then the bind mounts under /run/netns, then /proc/PID/ns/net of
// every process. It returns the handle and the path it was opened at;
// ErrNotFound when the port has no peer in another namespace or no file
// of that namespace is reachable. It asks the kernel over the
// client's socket: not beside another use of c.
func PortNetns(c *netops.Client, p Port) (netns.NsHandle, string, error) {
	if p.peerNetnsID < 0 {
		return netns.None(), "", netops.Errorf(netops.ErrNotFound, "%s: its veth peer is not in another network namespace: not a pod's port %s", p.Name, c.SeeHint("ports -o wide"))
	}
	try := func(path string) (netns.NsHandle, bool) {
		if path == "" || netnsIDOf(c, path) != p.peerNetnsID {
			return netns.None(), false
		}
		h, err := netns.GetFromPath(path)
		if err != nil {
			return netns.None(), false
		}
		// The file may have been replaced between the two opens.
		if netnsIDOfFd(c, int(h)) != p.peerNetnsID {
			h.Close()
			return netns.None(), false
		}
		return h, true
	}
	if path := p.podNetns; path != "" {
		if h, ok := try(path); ok {
			return h, path, nil
		}
	}
	if ents, err := os.ReadDir(netops.NetnsDir); err == nil {
		for _, e := range ents {
			path := filepath.Join(netops.NetnsDir, e.Name())
			if h, ok := try(path); ok {
				return h, path, nil
			}
		}
	}
	// /proc: one process per namespace is enough; a namespace is known by
	// its nsfs inode, so each is asked about once.
	seen := map[uint64]bool{}
	if ents, err := os.ReadDir("/proc"); err == nil {
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			path := "/proc/" + e.Name() + "/ns/net"
			var st unix.Stat_t
			if unix.Stat(path, &st) != nil || seen[st.Ino] {
				continue
			}
			seen[st.Ino] = true
			if h, ok := try(path); ok {
				return h, path, nil
			}
		}
	}
	return netns.None(), "", netops.Errorf(netops.ErrNotFound, "%s: no file of its pod's network namespace (netnsid %d) found in the CNI cache, %s or /proc", p.Name, p.peerNetnsID, netops.NetnsDir)
}
