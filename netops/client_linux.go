package netops

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/hairpinctl/hairpinctl/netops/internal/nlsock"
	"github.com/hairpinctl/hairpinctl/netops/internal/nsenter"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where iproute2 and CNI runtimes bind-mount named namespaces.
const NetnsDir = "/run/netns"

// Client does kernel work inside one network namespace.
type Client struct {
	// nsName is what the user gave (a name under /run/netns or a path), "" for the current namespace.
	nsName string
	// own is true when the client works in the caller's namespace.
	own bool
	ns  netns.NsHandle
	h   *netlink.Handle
	// raw is a NETLINK_ROUTE socket in the namespace for requests the netlink
	// package has no bulk form of: the AF_BRIDGE link dump and pipelined RTM_SETLINK.
	raw *nlsock.Conn
	// ownLabel is the own namespace's name for messages, found once.
	ownLabel     string
	ownLabelOnce sync.Once
}

// ResolveNetns turns a --netns value into a path: a bare name is looked up
// under /run/netns, anything with a '/' is taken as a path
// (/proc/PID/ns/net, /var/run/netns/x).
func ResolveNetns(spec string) (string, error) {
	if spec == "" {
		return "", nil
	}
	path := spec
	if !strings.Contains(spec, "/") {
		if spec == "." || spec == ".." {
			return "", errorf(ErrInvalid, "netns name %q is not valid", spec)
		}
		path = filepath.Join(NetnsDir, spec)
	}
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", errorf(ErrNotFound, "netns %s does not exist (see: ip netns list)", spec)
		}
		return "", fmt.Errorf("netns %s: %w", spec, err)
	}
	return path, nil
}

// Open returns a Client for the namespace named by spec ("" is the
// caller's own namespace).
func Open(spec string) (*Client, error) {
	path, err := ResolveNetns(spec)
	if err != nil {
		return nil, err
	}
	c := &Client{nsName: spec, own: path == ""}
	if path == "" {
		c.ns, err = netns.Get()
	} else {
		c.ns, err = netns.GetFromPath(path)
	}
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", c.NetnsLabel(), err)
	}
	if path != "" && !isNetns(int(c.ns)) {
		c.ns.Close()
		return nil, errorf(ErrInvalid, "%s is not a network namespace", spec)
	}
	target := c.Target()
	c.h, err = netlink.NewHandleAt(target, unix.NETLINK_ROUTE)
	if err != nil {
		c.ns.Close()
		return nil, c.socketError(err)
	}
	c.raw, err = nlsock.OpenRoute(target, 64<<10)
	if err != nil {
		c.h.Close()
		c.ns.Close()
		return nil, c.socketError(err)
	}
	return c, nil
}

// socketError explains a socket that could not be opened in the client's
// namespace. Opening one in another namespace enters it (setns), which
// needs CAP_SYS_ADMIN; the netlink library reports that failure as text
// only, so the capability is checked here.
func (c *Client) socketError(err error) error {
	if !c.own && !hasCap(unix.CAP_SYS_ADMIN) {
		return errorf(ErrPermission, "entering netns %s needs CAP_SYS_ADMIN: run as root", c.NetnsLabel())
	}
	return fmt.Errorf("netlink socket in netns %s: %w", c.NetnsLabel(), err)
}

// isNetns reports whether fd refers to a network namespace: a file of
// the nsfs filesystem whose NS_GET_NSTYPE (Linux 4.11) is CLONE_NEWNET.
func isNetns(fd int) bool {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		return false
	}
	const nsGetNstype = 0xb703 // _IO(0xb7, 0x3)
	t, err := unix.IoctlRetInt(fd, nsGetNstype)
	if err != nil {
		return true // an older kernel: nsfs, type unknown
	}
	return t == unix.CLONE_NEWNET
}

// Target is the namespace to open sockets in: none in the caller's own
// namespace, where no setns is needed, which keeps listing usable
// without privileges.
func (c *Client) Target() netns.NsHandle {
	if c.own {
		return netns.None()
	}
	return c.ns
}

// Close releases the sockets and the namespace handle.
func (c *Client) Close() error {
	if c.raw != nil {
		c.raw.Close()
	}
	if c.h != nil {
		c.h.Close()
	}
	return c.ns.Close()
}

// Handle is the netlink handle bound to the client's namespace.
func (c *Client) Handle() *netlink.Handle { return c.h }

// RouteConn is the client's NETLINK_ROUTE socket, made in its namespace,
// for the requests the netlink package has no bulk form of: the AF_BRIDGE
// link dump and pipelined RTM_SETLINK.
func (c *Client) RouteConn() *nlsock.Conn { return c.raw }

// Spec is the --netns value the client was opened with, "" for the
// caller's own namespace: what a suggested command line passes on.
func (c *Client) Spec() string { return c.nsName }

// Own reports whether the client works in the caller's own namespace.
func (c *Client) Own() bool { return c.own }

// Netns is the client's namespace handle. The Client owns it.
func (c *Client) Netns() netns.NsHandle { return c.ns }

// SubscribeNetns is the namespace to give netlink's subscriptions (which
// open their socket there): the client's, or nil in the caller's own
// namespace, which then needs no setns.
func (c *Client) SubscribeNetns() *netns.NsHandle {
	if c.own {
		return nil
	}
	ns := c.ns
	return &ns
}

// NetnsLabel names the namespace for messages: the --netns value; for the
// caller's own namespace, its name under /run/netns when it has one (run
// under `ip netns exec X`), else "host".
func (c *Client) NetnsLabel() string {
	if c.nsName != "" {
		return c.nsName
	}
	c.ownLabelOnce.Do(func() { c.ownLabel = c.boundName() })
	return c.ownLabel
}

// boundName is the name under /run/netns of the client's namespace, or
// "host". `ip netns exec X` enters X without telling the process; a
// namespace is known by its nsfs inode (st_dev, st_ino), which the
// handle taken from the calling thread and X's bind mount share.
func (c *Client) boundName() string {
	var self unix.Stat_t
	if err := unix.Fstat(int(c.ns), &self); err != nil {
		return "host"
	}
	ents, err := os.ReadDir(NetnsDir)
	if err != nil {
		return "host"
	}
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(NetnsDir, e.Name()), &st) == nil && st.Dev == self.Dev && st.Ino == self.Ino {
			return e.Name()
		}
	}
	return "host"
}

// SeeHint is the "(see: hairpinctl ARGS)" that ends a message, with the
// --netns given, so that the command it suggests looks where this one did.
func (c *Client) SeeHint(args string) string {
	return "(see: " + HairpinctlCmd(c.nsName, args) + ")"
}

// Do runs fn inside the client's namespace, for work that follows the
// calling thread's namespace: exec of iptables or nft (a child inherits its
// parent thread's namespace), /proc/sys and /proc/thread-self reads, and
// sockets created inside fn. In the caller's own namespace fn runs
// directly: setns needs CAP_SYS_ADMIN (and a systemd unit with
// RestrictNamespaces= forbids it) even to re-enter the same namespace.
// Elsewhere it runs on an OS thread that has entered the namespace
// (nsenter.Do), which is restored, or retired when it cannot be, afterwards.
func (c *Client) Do(fn func() error) error {
	if c.own {
		return fn()
	}
	return nsenter.Do(c.ns, fn)
}
