package netops

import (
	"github.com/hairpinctl/hairpinctl/netops/internal/nlsock"
	"github.com/vishvananda/netns"
)

// The raw netlink socket is netops/internal/nlsock; these are its names
// inside netops.

// rawConn is an nlsock.Conn.
type rawConn = nlsock.Conn

// openRawConn is nlsock.OpenRoute.
func openRawConn(ns netns.NsHandle, bufSize int) (*rawConn, error) {
	return nlsock.OpenRoute(ns, bufSize)
}
