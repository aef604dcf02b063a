// Package flows reads conntrack for one Service IP in a namespace that a
// netops.Client opened: the flows in the table, then the kernel's events
// for new, updated and destroyed ones, each decoded into a Flow that says
// whether it is a hairpin (the endpoint is the client itself) and whether
// it was masqueraded. It returns data through callbacks and never prints.
// It is not named conntrack: that is the library it reads the table with
// (github.com/ti-mo/conntrack).
package flows

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlattr"
	"github.com/hairpinctl/hairpinctl/netops/pods"
	"github.com/ti-mo/conntrack"
)

// Event names of a Flow and an Overflow.
const (
	// EventExisting: the flow was in the table when it was dumped.
	EventExisting = "existing"
	// EventNew: the kernel confirmed a new flow.
	EventNew = "new"
	// EventUpdate: a flow changed state (a TCP transition, assured, ...).
	EventUpdate = "update"
	// EventDestroy: the flow left the table (timed out, closed or deleted).
	EventDestroy = "destroy"
	// EventOverflow: the event socket overflowed and the kernel dropped events.
	EventOverflow = "overflow"
)

// IP protocol numbers that conntrack filters on.
const (
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// ParseProto turns tcp, udp or sctp (in any case) into its IP
// protocol number.
func ParseProto(s string) (uint8, error) {
	// Any case: the tables print TCP, conntrack(8) prints tcp.
	switch strings.ToLower(s) {
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	case "sctp":
		return ProtoSCTP, nil
	}
	return 0, netops.Errorf(netops.ErrInvalid, "protocol %q is not tcp, udp or sctp", s)
}

// Tuple is one direction of a flow.
type Tuple struct {
	// Src is the source address.
	Src netip.Addr `json:"src"`
	// Dst is the destination address.
	Dst netip.Addr `json:"dst"`
	// SPort is the source port (0 for protocols without ports).
	SPort uint16 `json:"sport"`
	// DPort is the destination port (0 for protocols without ports).
	DPort uint16 `json:"dport"`
}

// Flow is one conntrack entry as a dump listed it or an event
// reported it.
type Flow struct {
	// Time is when hairpinctl received the entry or event.
	Time time.Time `json:"time"`
	// Event is existing, new, update or destroy.
	Event string `json:"event"`
	// ID is the kernel's conntrack id, the same in every event of one flow.
	ID uint32 `json:"id"`
	// Proto is tcp, udp, sctp, icmp, or the protocol number.
	Proto string `json:"proto"`
	// State is the TCP or SCTP state (ESTABLISHED, TIME_WAIT, ...); for
	// other protocols UNREPLIED, REPLIED or ASSURED. Empty when the event
	// carries no state (a destroy event, an update that only changed marks).
	State string `json:"state"`
	// Orig is the tuple the client sent: client → Service IP.
	Orig Tuple `json:"orig"`
	// Reply is the tuple the answer travels on: endpoint → client, or →
	// the masquerade address when the flow was SNATed.
	Reply Tuple `json:"reply"`
	// DNAT is true when the destination was rewritten (the Service IP was
	// load-balanced to an endpoint): Reply.Src:SPort differs from Orig.Dst:DPort.
	DNAT bool `json:"dnat"`
	// SNAT is true when the source was rewritten (masqueraded):
	// Reply.Dst:DPort differs from Orig.Src:SPort.
	SNAT bool `json:"snat"`
	// Hairpin is true when the endpoint is the client itself (Reply.Src ==
	// Orig.Src): the packet must leave the bridge by the port it came in on.
	Hairpin bool `json:"hairpin"`
	// Resync is true on existing flows listed again after an overflow.
	Resync bool `json:"resync,omitempty"`
	// ClientPod is the pod behind this node's bridge port that holds
	// Orig.Src, when the caller names it (Stream does not); absent when
	// the client is no pod of this node or nothing names it.
	ClientPod *pods.Pod `json:"clientPod,omitempty"`
}

// Overflow reports that the event socket's receive buffer was
// full and the kernel dropped events for it.
type Overflow struct {
	// Time is when the overflow was noticed.
	Time time.Time `json:"time"`
	// Event is always overflow.
	Event string `json:"event"`
	// Overflows counts the overflows so far, this one included.
	Overflows int `json:"overflows"`
	// Lost is how many events the kernel has dropped for this socket so
	// far, as it counts them (SK_MEMINFO_DROPS); it may grow after the
	// report while the socket drains.
	Lost uint64 `json:"lost"`
}

// ErrStop, returned by a Flow or Overflow callback, ends Stream
// at once and without error, without delivering what is still queued:
// how a caller stops after N events.
var ErrStop = errors.New("stop following conntrack")

// Stats sums up a Stream run.
type Stats struct {
	// Flows is how many flows and events were handed to the Flow callback.
	Flows int `json:"flows"`
	// Overflows is how many times the event socket overflowed.
	Overflows int `json:"overflows"`
	// Lost is how many events the kernel dropped for the event socket.
	Lost uint64 `json:"lost"`
	// Resyncs is how many dumps were made after overflows.
	Resyncs int `json:"resyncs"`
	// Cut is true when the run ended with events still queued: ctx ended
	// under a storm that kept the socket full longer than the drain lasts.
	Cut bool `json:"cut"`
}

// Options selects flows and receives them. The callbacks run on
// the goroutine that called Stream, one at a time; while one runs no
// events are read, so a slow callback fills the socket and shows as an
// overflow, never as a silent gap.
type Options struct {
	// ServiceIP is the original destination to match. Required.
	ServiceIP netip.Addr
	// Port, when not 0, is the original destination port to match.
	Port uint16
	// Proto, when not 0, is the IP protocol to match (ProtoTCP, ...).
	Proto uint8
	// NoDump skips listing the flows already in the table.
	NoDump bool
	// NoFollow stops after the dump instead of following events.
	NoFollow bool
	// ReadBuffer is the event socket's receive buffer in bytes
	// [DefaultReadBuffer]. Tests make it tiny to provoke overflows.
	ReadBuffer int
	// Flow receives every matching flow: the dump's and the live events.
	Flow func(Flow) error
	// Overflow receives every overflow, before the flows of the dump
	// that resynchronises after it. Nil ignores them (they are still counted).
	Overflow func(Overflow) error
	// Idle is called when the event socket has nothing queued, before
	// waiting: the moment to flush buffered output. May be nil.
	Idle func() error
}

// DefaultReadBuffer is the event socket's receive buffer: room for
// tens of thousands of events, about a second of a connection storm.
// Privileged callers get it past net.core.rmem_max (SO_RCVBUFFORCE).
const DefaultReadBuffer = 32 << 20

// Attribute numbers from include/uapi/linux/netfilter/nfnetlink_conntrack.h
// for the pre-filter and the event decoder.
const (
	ctaTupleOrig      = 1  // CTA_TUPLE_ORIG
	ctaTupleReply     = 2  // CTA_TUPLE_REPLY
	ctaStatus         = 3  // CTA_STATUS
	ctaProtoinfo      = 4  // CTA_PROTOINFO
	ctaID             = 12 // CTA_ID
	ctaTupleIP        = 1  // CTA_TUPLE_IP
	ctaTupleProto     = 2  // CTA_TUPLE_PROTO
	ctaIPv4Src        = 1  // CTA_IP_V4_SRC
	ctaIPv4Dst        = 2  // CTA_IP_V4_DST
	ctaIPv6Src        = 3  // CTA_IP_V6_SRC
	ctaIPv6Dst        = 4  // CTA_IP_V6_DST
	ctaProtoNum       = 1  // CTA_PROTO_NUM
	ctaProtoSrcPort   = 2  // CTA_PROTO_SRC_PORT
	ctaProtoDstPort   = 3  // CTA_PROTO_DST_PORT
	ctaProtoinfoTCP   = 1  // CTA_PROTOINFO_TCP
	ctaProtoinfoSCTP  = 3  // CTA_PROTOINFO_SCTP
	ctaProtoinfoState = 1  // CTA_PROTOINFO_TCP_STATE, CTA_PROTOINFO_SCTP_STATE
	ctNfgenmsgLen     = 4
)

// flowMatcher decides from the raw attributes of a conntrack message
// whether its original tuple goes to the Service. The kernel sends every
// event of the namespace (it cannot filter multicast events by address),
// so this runs for each one and must not allocate: it walks to
// CTA_TUPLE_ORIG and compares bytes, and only matching messages are
// decoded in full.
type flowMatcher struct {
	ip4   [4]byte
	ip6   [16]byte
	is4   bool
	port  uint16
	proto uint8
}

func newFlowMatcher(ip netip.Addr, port uint16, proto uint8) flowMatcher {
	m := flowMatcher{port: port, proto: proto, is4: ip.Unmap().Is4()}
	if m.is4 {
		m.ip4 = ip.Unmap().As4()
	} else {
		m.ip6 = ip.As16()
	}
	return m
}

// ctFindAttr returns the payload of the first attribute of type typ in b.
func ctFindAttr(b []byte, typ uint16) ([]byte, bool) {
	for {
		t, p, rest, ok := nlattr.Next(b)
		if !ok {
			return nil, false
		}
		if t == typ {
			return p, true
		}
		b = rest
	}
}

// match reports whether attrs (a conntrack message after its nfgenmsg
// header) describe a flow whose original destination is the Service.
func (m *flowMatcher) match(attrs []byte) bool {
	orig, ok := ctFindAttr(attrs, ctaTupleOrig)
	if !ok {
		return false
	}
	ip, ok := ctFindAttr(orig, ctaTupleIP)
	if !ok {
		return false
	}
	if m.is4 {
		dst, ok := ctFindAttr(ip, ctaIPv4Dst)
		if !ok || len(dst) != 4 || [4]byte(dst) != m.ip4 {
			return false
		}
	} else {
		dst, ok := ctFindAttr(ip, ctaIPv6Dst)
		if !ok || len(dst) != 16 || [16]byte(dst) != m.ip6 {
			return false
		}
	}
	if m.port == 0 && m.proto == 0 {
		return true
	}
	pt, ok := ctFindAttr(orig, ctaTupleProto)
	if !ok {
		return false
	}
	if m.proto != 0 {
		num, ok := ctFindAttr(pt, ctaProtoNum)
		if !ok || len(num) < 1 || num[0] != m.proto {
			return false
		}
	}
	if m.port != 0 {
		dp, ok := ctFindAttr(pt, ctaProtoDstPort)
		if !ok || len(dp) < 2 || binary.BigEndian.Uint16(dp) != m.port {
			return false
		}
	}
	return true
}

// decodeFlow decodes the attributes of a conntrack event (after the
// nfgenmsg header) into a Flow without allocating. It reads only
// what hairpinctl shows; newFlow over the library's decoding
// (conntrack.Event.Unmarshal) gives the same result, which a test holds
// it to on kernel messages. The library's decoder allocates a dozen times
// per event (an AttributeDecoder per nesting level, the Flow, ProtoInfo),
// which under a connection storm was half of hairpinctl's CPU time.
func decodeFlow(attrs []byte, event string, at time.Time) (Flow, error) {
	f := Flow{Time: at, Event: event}
	var proto uint8
	var status uint32
	hasStatus, hasTCP, hasSCTP := false, false, false
	var state uint8
	for b := attrs; len(b) > 0; {
		t, p, rest, ok := nlattr.Next(b)
		if !ok {
			return f, fmt.Errorf("conntrack message: truncated attribute")
		}
		b = rest
		switch t {
		case ctaTupleOrig:
			if err := ctDecodeTuple(p, &f.Orig, &proto); err != nil {
				return f, err
			}
		case ctaTupleReply:
			var rp uint8
			if err := ctDecodeTuple(p, &f.Reply, &rp); err != nil {
				return f, err
			}
		case ctaStatus:
			if len(p) != 4 {
				return f, fmt.Errorf("conntrack message: status of %d bytes", len(p))
			}
			status, hasStatus = binary.BigEndian.Uint32(p), true
		case ctaID:
			if len(p) != 4 {
				return f, fmt.Errorf("conntrack message: id of %d bytes", len(p))
			}
			f.ID = binary.BigEndian.Uint32(p)
		case ctaProtoinfo:
			pt, pp, _, ok := nlattr.Next(p)
			if !ok {
				continue
			}
			switch pt {
			case ctaProtoinfoTCP:
				hasTCP = true
			case ctaProtoinfoSCTP:
				hasSCTP = true
			default:
				continue
			}
			if s, ok := ctFindAttr(pp, ctaProtoinfoState); ok && len(s) >= 1 {
				state = s[0]
			}
		}
	}
	if !f.Orig.Src.IsValid() || !f.Reply.Src.IsValid() {
		return f, fmt.Errorf("conntrack message without both tuples")
	}
	f.Proto = ctProtoName(proto)
	switch {
	case hasTCP:
		f.State = ctEnumName(tcpStates[:], state)
	case hasSCTP:
		f.State = ctEnumName(sctpStates[:], state)
	case proto == ProtoTCP || proto == ProtoSCTP || !hasStatus || status == 0:
	case conntrack.Status(status).Assured():
		f.State = "ASSURED"
	case conntrack.Status(status).SeenReply():
		f.State = "REPLIED"
	default:
		f.State = "UNREPLIED"
	}
	ctSetNAT(&f)
	return f, nil
}

// ctDecodeTuple reads a CTA_TUPLE_ORIG or CTA_TUPLE_REPLY payload.
func ctDecodeTuple(b []byte, t *Tuple, proto *uint8) error {
	for len(b) > 0 {
		typ, p, rest, ok := nlattr.Next(b)
		if !ok {
			return fmt.Errorf("conntrack message: truncated tuple")
		}
		b = rest
		switch typ {
		case ctaTupleIP:
			for len(p) > 0 {
				at, ap, arest, ok := nlattr.Next(p)
				if !ok {
					return fmt.Errorf("conntrack message: truncated address")
				}
				p = arest
				addr, ok := netip.AddrFromSlice(ap)
				if !ok {
					return fmt.Errorf("conntrack message: address of %d bytes", len(ap))
				}
				switch at {
				case ctaIPv4Src, ctaIPv6Src:
					t.Src = addr
				case ctaIPv4Dst, ctaIPv6Dst:
					t.Dst = addr
				}
			}
		case ctaTupleProto:
			for len(p) > 0 {
				pt, pp, prest, ok := nlattr.Next(p)
				if !ok {
					return fmt.Errorf("conntrack message: truncated protocol tuple")
				}
				p = prest
				switch {
				case pt == ctaProtoNum && len(pp) >= 1:
					*proto = pp[0]
				case pt == ctaProtoSrcPort && len(pp) >= 2:
					t.SPort = binary.BigEndian.Uint16(pp)
				case pt == ctaProtoDstPort && len(pp) >= 2:
					t.DPort = binary.BigEndian.Uint16(pp)
				}
			}
		}
	}
	return nil
}

func ctEnumName(names []string, v uint8) string {
	if int(v) < len(names) {
		return names[v]
	}
	return strconv.Itoa(int(v))
}

// ctSetNAT works out the NAT from the tuples: the reply tuple is what the
// kernel expects back, so its source is the endpoint the Service IP was
// DNATed to, and its destination the address the client was SNATed
// (masqueraded) to.
func ctSetNAT(f *Flow) {
	o, r := f.Orig, f.Reply
	f.DNAT = r.Src != o.Dst || r.SPort != o.DPort
	f.SNAT = r.Dst != o.Src || r.DPort != o.SPort
	f.Hairpin = r.Src.IsValid() && r.Src == o.Src
}

// tcpStates are the kernel's enum tcp_conntrack names.
var tcpStates = [...]string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT",
	"CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

// sctpStates are the kernel's enum sctp_conntrack names.
var sctpStates = [...]string{"NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED",
	"SHUTDOWN_SENT", "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT", "HEARTBEAT_ACKED"}

func ctProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoSCTP:
		return "sctp"
	case 1:
		return "icmp"
	case 58:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}

func ctStateName(f *conntrack.Flow) string {
	switch {
	case f.ProtoInfo.TCP != nil:
		return ctEnumName(tcpStates[:], f.ProtoInfo.TCP.State)
	case f.ProtoInfo.SCTP != nil:
		return ctEnumName(sctpStates[:], f.ProtoInfo.SCTP.State)
	case f.TupleOrig.Proto.Protocol == ProtoTCP || f.TupleOrig.Proto.Protocol == ProtoSCTP:
		// Destroy events and some updates carry no protoinfo.
		return ""
	case f.Status == 0:
		return ""
	case f.Status.Assured():
		return "ASSURED"
	case f.Status.SeenReply():
		return "REPLIED"
	}
	return "UNREPLIED"
}

func ctTupleOf(t conntrack.Tuple) Tuple {
	return Tuple{
		Src:   t.IP.SourceAddress,
		Dst:   t.IP.DestinationAddress,
		SPort: t.Proto.SourcePort,
		DPort: t.Proto.DestinationPort,
	}
}

// newFlow turns the library's decoded flow (a dump's) into
// hairpinctl's model.
func newFlow(f *conntrack.Flow, event string, at time.Time) Flow {
	cf := Flow{
		Time:  at,
		Event: event,
		ID:    f.ID,
		Proto: ctProtoName(f.TupleOrig.Proto.Protocol),
		State: ctStateName(f),
		Orig:  ctTupleOf(f.TupleOrig),
		Reply: ctTupleOf(f.TupleReply),
	}
	ctSetNAT(&cf)
	return cf
}
