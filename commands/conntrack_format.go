package commands

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/flows"
)

// A stream cannot be measured before it is printed, so conntrack rows use
// fixed columns sized for IPv4 pod traffic; a longer field pushes the rest
// of its row right. The Service IP is the command's argument, so a row
// shows the Service port, the client, the endpoint it was DNATed to (the
// reply's source) and the address it was masqueraded to (the reply's
// destination). The default fits 80 columns by leaving out the time and
// the endpoint's port (the Service's target port); -o wide shows them.
type ctLayout struct {
	wide bool
	// cols are the start columns of EVENT, SERVICE, STATE, CLIENT,
	// ENDPOINT, SNAT, FLAGS and (wide only) POD.
	cols [8]int
}

var (
	// EVENT (existing) SERVICE (8080/tcp) STATE (ESTABLISHED) CLIENT
	// (10.244.0.12:45678) ENDPOINT (10.244.0.11) SNAT (10.244.0.1) FLAGS.
	// The client's pod has no room left at 80 columns: -o wide has it.
	ctNarrow = ctLayout{cols: [8]int{0, 9, 18, 30, 48, 60, 71}}
	// TIME first, ENDPOINT with its port (10.244.0.11:8080), and POD,
	// the client's namespace/name.
	ctWide = ctLayout{wide: true, cols: [8]int{9, 18, 27, 39, 57, 74, 85, 93}}
)

// ctRow builds one fixed-column line of ASCII text; extra counts the
// bytes of colour escapes, which take no columns.
type ctRow struct {
	b     []byte
	start int
	extra int
}

// painted appends s coloured by paint, counting the colour as no width.
func (r *ctRow) painted(paint func(string) string, s string) {
	c := paint(s)
	r.b = append(r.b, c...)
	r.extra += len(c) - len(s)
}

// to pads the row to column col, or adds one space when it is already past.
func (r *ctRow) to(col int) {
	at := len(r.b) - r.start - r.extra
	if col == 0 {
		return
	}
	if at >= col {
		r.b = append(r.b, ' ')
		return
	}
	for ; at < col; at++ {
		r.b = append(r.b, ' ')
	}
}

func (l *ctLayout) header(b []byte) []byte {
	r := ctRow{b: b, start: len(b)}
	if l.wide {
		r.b = append(r.b, "TIME"...)
	}
	for i, h := range []string{"EVENT", "SERVICE", "STATE", "CLIENT", "ENDPOINT", "SNAT", "FLAGS", "POD"} {
		if h == "POD" && !l.wide {
			break
		}
		r.to(l.cols[i])
		r.b = append(r.b, h...)
	}
	return append(r.b, '\n')
}

// row appends a table line. SERVICE is the Service port and protocol the
// client asked for; CLIENT the original source; ENDPOINT where the Service
// IP was DNATed to (the Service IP itself when it was not); SNAT the
// address the client was masqueraded to, "-" when it was not, and
// "missing" on a hairpin flow that was not, whose reply will not come back
// through the node. EVENT says "resync" for a flow re-listed after an
// overflow. FLAGS: HAIRPIN for a pod reaching itself.
func (l *ctLayout) row(b []byte, f *flows.Flow, pal palette) []byte {
	r := ctRow{b: b, start: len(b)}
	if l.wide {
		r.b = f.Time.AppendFormat(r.b, time.TimeOnly)
	}
	r.to(l.cols[0])
	if f.Resync {
		r.b = append(r.b, "resync"...)
	} else {
		r.b = append(r.b, f.Event...)
	}
	r.to(l.cols[1])
	r.b = strconv.AppendUint(r.b, uint64(f.Orig.DPort), 10)
	r.b = append(r.b, '/')
	r.b = append(r.b, f.Proto...)
	r.to(l.cols[2])
	if f.State == "" {
		r.b = append(r.b, '-')
	} else {
		r.b = append(r.b, f.State...)
	}
	r.to(l.cols[3])
	r.b = netip.AddrPortFrom(f.Orig.Src, f.Orig.SPort).AppendTo(r.b)
	r.to(l.cols[4])
	if l.wide {
		r.b = netip.AddrPortFrom(f.Reply.Src, f.Reply.SPort).AppendTo(r.b)
	} else {
		r.b = f.Reply.Src.AppendTo(r.b)
	}
	r.to(l.cols[5])
	switch {
	case f.SNAT:
		r.b = f.Reply.Dst.AppendTo(r.b)
	case f.Hairpin:
		r.painted(pal.bad, "missing")
	default:
		r.b = append(r.b, '-')
	}
	if f.Hairpin {
		r.to(l.cols[6])
		if f.SNAT {
			r.painted(pal.warn, "HAIRPIN")
		} else {
			r.painted(pal.bad, "HAIRPIN")
		}
	}
	if l.wide {
		r.to(l.cols[7])
		if n := f.ClientPod.FullName(); n != "" {
			r.b = append(r.b, termSafe(n)...)
		} else {
			r.b = append(r.b, '-')
		}
	}
	return append(r.b, '\n')
}

// appendFlowRow is the default layout's row.
func appendFlowRow(b []byte, f *flows.Flow, pal palette) []byte {
	return ctNarrow.row(b, f, pal)
}

// appendFlowJSON appends f as one JSON line, byte for byte what
// encoding/json writes for flows.Flow (a test holds it to that) at a
// fraction of the cost: a storm prints tens of thousands a second.
func appendFlowJSON(b []byte, f *flows.Flow) []byte {
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
	if p := f.ClientPod; p != nil {
		b = append(b, `,"clientPod":{"namespace":`...)
		b = ctAppendString(b, p.Namespace)
		b = append(b, `,"name":`...)
		b = ctAppendString(b, p.Name)
		b = append(b, `,"uid":`...)
		b = ctAppendString(b, p.UID)
		b = append(b, `,"containerID":`...)
		b = ctAppendString(b, p.ContainerID)
		b = append(b, `,"network":`...)
		b = ctAppendString(b, p.Network)
		b = append(b, `,"interface":`...)
		b = ctAppendString(b, p.Interface)
		b = append(b, `,"source":`...)
		b = ctAppendString(b, p.Source)
		b = append(b, '}')
	}
	return append(b, "}\n"...)
}

func ctAppendTuple(b []byte, t *flows.Tuple) []byte {
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
func appendOverflowJSON(b []byte, ov *flows.Overflow) []byte {
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

// ctAppendString quotes the short ASCII words flows puts in events,
// states, protocols and pod names; anything else goes through
// encoding/json.
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
