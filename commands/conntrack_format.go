package commands

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
)

// A stream cannot be measured before it is printed (tabwriter buffers
// until Flush), so conntrack rows use fixed columns sized for IPv4 pod
// traffic to fit 80 columns; a longer field pushes the rest of its row
// right. The Service IP is the command's argument, so a row shows the
// client and the endpoint it was DNATed to (the reply's source).
const (
	ctColEvent = 9               // after TIME (8)
	ctColProto = ctColEvent + 9  // after EVENT (existing)
	ctColState = ctColProto + 6  // after PROTO
	ctColFlow  = ctColState + 12 // after STATE (ESTABLISHED)
	ctColFlags = ctColFlow + 37  // after 10.244.0.12:45678 → 10.244.0.11:8080
	ctArrow    = " → "
	// ctArrowExtra is how many more bytes than columns the arrow takes.
	ctArrowExtra = len(ctArrow) - 3
)

// ctRow builds one fixed-column line; cols counts display columns, which
// differ from bytes only by the arrow.
type ctRow struct {
	b     []byte
	start int
	extra int
}

// to pads the row to column col, or adds one space when it is already past.
func (r *ctRow) to(col int) {
	at := len(r.b) - r.start - r.extra
	if at >= col {
		r.b = append(r.b, ' ')
		return
	}
	for ; at < col; at++ {
		r.b = append(r.b, ' ')
	}
}

func appendFlowHeader(b []byte) []byte {
	r := ctRow{b: b, start: len(b)}
	r.b = append(r.b, "TIME"...)
	r.to(ctColEvent)
	r.b = append(r.b, "EVENT"...)
	r.to(ctColProto)
	r.b = append(r.b, "PROTO"...)
	r.to(ctColState)
	r.b = append(r.b, "STATE"...)
	r.to(ctColFlow)
	r.b = append(r.b, "CLIENT"...)
	r.b = append(r.b, ctArrow...)
	r.extra += ctArrowExtra
	r.b = append(r.b, "ENDPOINT"...)
	r.to(ctColFlags)
	r.b = append(r.b, "FLAGS\n"...)
	return r.b
}

// appendFlowRow appends a table line: CLIENT → ENDPOINT is the original
// source and where the Service IP was DNATed to (the Service IP itself
// when it was not); EVENT says "resync" for a flow re-listed after an
// overflow. FLAGS: HAIRPIN for a pod reaching itself (masqueraded, as it
// must be), HAIRPIN NO-SNAT when that masquerade is missing (the reply
// will not come back through the node), SNAT for other masqueraded flows.
func appendFlowRow(b []byte, f *netops.ConntrackFlow, pal palette) []byte {
	r := ctRow{b: b, start: len(b)}
	r.b = f.Time.AppendFormat(r.b, time.TimeOnly)
	r.to(ctColEvent)
	if f.Resync {
		r.b = append(r.b, "resync"...)
	} else {
		r.b = append(r.b, f.Event...)
	}
	r.to(ctColProto)
	r.b = append(r.b, f.Proto...)
	r.to(ctColState)
	if f.State == "" {
		r.b = append(r.b, '-')
	} else {
		r.b = append(r.b, f.State...)
	}
	r.to(ctColFlow)
	r.b = netip.AddrPortFrom(f.Orig.Src, f.Orig.SPort).AppendTo(r.b)
	r.b = append(r.b, ctArrow...)
	r.extra += ctArrowExtra
	r.b = netip.AddrPortFrom(f.Reply.Src, f.Reply.SPort).AppendTo(r.b)
	switch {
	case f.Hairpin && f.SNAT:
		r.to(ctColFlags)
		r.b = append(r.b, pal.warn("HAIRPIN")...)
	case f.Hairpin:
		r.to(ctColFlags)
		r.b = append(r.b, pal.bad("HAIRPIN NO-SNAT")...)
	case f.SNAT:
		r.to(ctColFlags)
		r.b = append(r.b, "SNAT"...)
	}
	return append(r.b, '\n')
}

// appendFlowJSON appends f as one JSON line, byte for byte what
// encoding/json writes for netops.ConntrackFlow (a test holds it to
// that) at a fraction of the cost: a storm prints tens of thousands a second.
func appendFlowJSON(b []byte, f *netops.ConntrackFlow) []byte {
	b = append(b, `{"time":"`...)
	b = f.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","event":`...)
	b = ctAppendString(b, f.Event)
	b = append(b, `,"id":`...)
	b = strconv.AppendUint(b, uint64(f.ID), 10)
	b = append(b, `,"proto":`...)
	b = ctAppendString(b, f.Proto)
	b = append(b, `,"state":`...)
	b = ctAppendString(b, f.State)
	b = append(b, `,"orig":`...)
	b = ctAppendTuple(b, &f.Orig)
	b = append(b, `,"reply":`...)
	b = ctAppendTuple(b, &f.Reply)
	b = append(b, `,"dnat":`...)
	b = strconv.AppendBool(b, f.DNAT)
	b = append(b, `,"snat":`...)
	b = strconv.AppendBool(b, f.SNAT)
	b = append(b, `,"hairpin":`...)
	b = strconv.AppendBool(b, f.Hairpin)
	if f.Resync {
		b = append(b, `,"resync":true`...)
	}
	return append(b, "}\n"...)
}

func ctAppendTuple(b []byte, t *netops.ConntrackTuple) []byte {
	b = append(b, `{"src":"`...)
	b = t.Src.AppendTo(b)
	b = append(b, `","dst":"`...)
	b = t.Dst.AppendTo(b)
	b = append(b, `","sport":`...)
	b = strconv.AppendUint(b, uint64(t.SPort), 10)
	b = append(b, `,"dport":`...)
	b = strconv.AppendUint(b, uint64(t.DPort), 10)
	return append(b, '}')
}

// appendOverflowJSON appends ov as one JSON line, as encoding/json would.
func appendOverflowJSON(b []byte, ov *netops.ConntrackOverflow) []byte {
	b = append(b, `{"time":"`...)
	b = ov.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","event":`...)
	b = ctAppendString(b, ov.Event)
	b = append(b, `,"overflows":`...)
	b = strconv.AppendInt(b, int64(ov.Overflows), 10)
	b = append(b, `,"lost":`...)
	b = strconv.AppendUint(b, ov.Lost, 10)
	return append(b, "}\n"...)
}

// ctAppendString quotes the short ASCII words netops puts in events,
// states and protocols; anything else goes through encoding/json.
func ctAppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
