package netops

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

// rawConn is a NETLINK_ROUTE socket for the requests the netlink package
// has no bulk or streaming form of: the AF_BRIDGE link dump, filtered
// dumps, pipelined RTM_SETLINK. It numbers its requests and reads into one
// reused buffer.
type rawConn struct {
	sock *nl.NetlinkSocket
	seq  atomic.Uint32
	rbuf []byte
	// bufSize is the receive buffer's size: a dump answers in datagrams of
	// up to 32 KiB, a dump of one pod's few addresses in one small datagram.
	bufSize int
}

// openRawConn opens a socket in ns (netns.None(): the caller's own) with
// strict checking, which makes the kernel honour dump filters it otherwise
// ignores, IFA_TARGET_NETNSID among them, and reject what it cannot filter
// instead of silently dumping everything.
func openRawConn(ns netns.NsHandle, bufSize int) (*rawConn, error) {
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(sock.GetFd(), unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1); err != nil {
		sock.Close()
		return nil, fmt.Errorf("netlink strict checking (Linux 4.20 or later needed): %w", err)
	}
	return &rawConn{sock: sock, bufSize: bufSize}, nil
}

func (r *rawConn) Close() { r.sock.Close() }

// nextSeq numbers a request, so answers are matched to their request.
func (r *rawConn) nextSeq() uint32 { return r.seq.Add(1) }

// recvBuf is the receive buffer, allocated once: a dump per pod namespace
// must not allocate one each.
func (r *rawConn) recvBuf() []byte {
	if r.rbuf == nil {
		r.rbuf = make([]byte, r.bufSize)
	}
	return r.rbuf
}

// recv reads one datagram into rb (reused, unlike nl.NetlinkSocket.Receive,
// which clears a fresh 64 KiB buffer per call) and splits it into
// messages. The socket is non-blocking: wait with poll until deadline.
func (r *rawConn) recv(rb []byte, deadline time.Time) ([]syscall.NetlinkMessage, error) {
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

func (r *rawConn) newRequest(proto, flags int) *dumpRequest {
	req := nl.NewNetlinkRequest(proto, flags)
	req.Seq = r.nextSeq()
	return &dumpRequest{NetlinkRequest: req, conn: r}
}

// dumpRequest is a netlink dump on a rawConn.
type dumpRequest struct {
	*nl.NetlinkRequest
	conn *rawConn
}

// errDumpInterrupted is netlink.ErrDumpInterrupted: the kernel flagged
// NLM_F_DUMP_INTR because the table changed during the dump.
var errDumpInterrupted = netlink.ErrDumpInterrupted

// Stream sends the request and calls fn with the payload of each answer of
// type resType as it arrives. The payload aliases the receive buffer, which
// the next read overwrites: fn must copy what it keeps.
func (r *dumpRequest) Stream(resType uint16, fn func(payload []byte)) error {
	fd := r.conn.sock.GetFd()
	if err := unix.Sendto(fd, r.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	rb := r.conn.recvBuf()
	deadline := time.Now().Add(ackTimeout)
	interrupted := false
	for {
		msgs, err := r.conn.recv(rb, deadline)
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
					return errDumpInterrupted
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
