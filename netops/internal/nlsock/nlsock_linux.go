// Package nlsock is hairpinctl's own netlink socket, for the requests the
// netlink libraries have no bulk or streaming form of: the AF_BRIDGE link
// dump, filtered dumps, pipelined RTM_SETLINK (NETLINK_ROUTE), and
// nf_tables rule dumps read whole (NETLINK_NETFILTER). It numbers its
// requests and reads into one reused buffer. It is plumbing: what the
// messages mean is the domain code's business.
package nlsock

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Timeout bounds the wait for the answers to one request; the kernel
// answers in microseconds, so only a wedged socket reaches it.
const Timeout = 10 * time.Second

// Conn is a netlink socket in one namespace.
type Conn struct {
	sock *nl.NetlinkSocket
	seq  atomic.Uint32
	rbuf []byte
	// bufSize is the receive buffer's size: a dump answers in datagrams of
	// up to 32 KiB, a dump of one pod's few addresses in one small datagram.
	bufSize int
}

// OpenRoute opens a NETLINK_ROUTE socket in ns (netns.None(): the
// caller's own) with strict checking, which makes the kernel honour dump
// filters it otherwise ignores, IFA_TARGET_NETNSID among them, and reject
// what it cannot filter instead of silently dumping everything. bufSize is
// the receive buffer's size: a dump answers in datagrams of up to 32 KiB,
// a dump of one pod's few addresses in one small datagram.
func OpenRoute(ns netns.NsHandle, bufSize int) (*Conn, error) {
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(sock.GetFd(), unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1); err != nil {
		sock.Close()
		return nil, fmt.Errorf("netlink strict checking (Linux 4.20 or later needed): %w", err)
	}
	return &Conn{sock: sock, bufSize: bufSize}, nil
}

// OpenNetfilter opens a NETLINK_NETFILTER socket in ns with a receive
// buffer of bufSize.
func OpenNetfilter(ns netns.NsHandle, bufSize int) (*Conn, error) {
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, err
	}
	return &Conn{sock: sock, bufSize: bufSize}, nil
}

// Close closes the socket.
func (r *Conn) Close() { r.sock.Close() }

// Fd is the socket's file descriptor, for requests sent in a pipeline.
func (r *Conn) Fd() int { return r.sock.GetFd() }

// SetReceiveBufferSize sets the socket's SO_RCVBUF (SO_RCVBUFFORCE with
// force, which CAP_NET_ADMIN allows beyond net.core.rmem_max).
func (r *Conn) SetReceiveBufferSize(size int, force bool) error {
	return r.sock.SetReceiveBufferSize(size, force)
}

// NextSeq numbers a request, so answers are matched to their request.
func (r *Conn) NextSeq() uint32 { return r.seq.Add(1) }

// RecvBuf is the receive buffer, allocated once: a dump per pod namespace
// must not allocate one each.
func (r *Conn) RecvBuf() []byte {
	if r.rbuf == nil {
		r.rbuf = make([]byte, r.bufSize)
	}
	return r.rbuf
}

// Recv reads one datagram into rb (reused, unlike nl.NetlinkSocket.Receive,
// which clears a fresh 64 KiB buffer per call) and splits it into
// messages. The socket is non-blocking: wait with poll until deadline.
func (r *Conn) Recv(rb []byte, deadline time.Time) ([]syscall.NetlinkMessage, error) {
	fd := r.sock.GetFd()
	for {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		switch {
		case err == nil:
			return syscall.ParseNetlinkMessage(rb[:n])
		case err == unix.EINTR:
			continue
		case err != unix.EAGAIN:
			return nil, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, unix.ETIMEDOUT
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
			return nil, err
		}
	}
}

// NewRequest makes a numbered request of type proto on r.
func (r *Conn) NewRequest(proto, flags int) *Request {
	req := nl.NewNetlinkRequest(proto, flags)
	req.Seq = r.NextSeq()
	return &Request{NetlinkRequest: req, conn: r}
}

// Request is a netlink request (usually a dump) on a Conn.
type Request struct {
	*nl.NetlinkRequest
	conn *Conn
}

// ErrDumpInterrupted is netlink.ErrDumpInterrupted: the kernel flagged
// NLM_F_DUMP_INTR because the table changed during the dump.
var ErrDumpInterrupted = netlink.ErrDumpInterrupted

// Stream sends the request and calls fn with the payload of each answer of
// type resType as it arrives. The payload aliases the receive buffer, which
// the next read overwrites: fn must copy what it keeps.
func (r *Request) Stream(resType uint16, fn func(payload []byte)) error {
	fd := r.conn.sock.GetFd()
	if err := unix.Sendto(fd, r.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	rb := r.conn.RecvBuf()
	deadline := time.Now().Add(Timeout)
	interrupted := false
	for {
		msgs, err := r.conn.Recv(rb, deadline)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != r.Seq {
				continue // a late answer to an earlier request
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				// The kernel ends a dump that failed part-way with its
				// error in the NLMSG_DONE payload.
				if len(m.Data) >= 4 {
					if code := int32(nl.NativeEndian().Uint32(m.Data[:4])); code < 0 {
						return syscall.Errno(-code)
					}
				}
				if interrupted {
					return ErrDumpInterrupted
				}
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return fmt.Errorf("short netlink error message")
				}
				if code := int32(nl.NativeEndian().Uint32(m.Data[:4])); code != 0 {
					return syscall.Errno(-code)
				}
				return nil
			case resType:
				fn(m.Data)
			}
		}
	}
}
