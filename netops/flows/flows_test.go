package flows

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// eventKind names a raw conntrack message the way Conntrack does: a dump
// reply (NLM_F_MULTI) is existing, IPCTNL_MSG_CT_NEW with NLM_F_CREATE|EXCL
// new, without them update, IPCTNL_MSG_CT_DELETE destroy; "" for others.
func eventKind(b []byte) string {
	if len(b) < ctNlmsgHdrLen+ctNfgenmsgLen {
		return ""
	}
	typ := binary.NativeEndian.Uint16(b[4:])
	flags := binary.NativeEndian.Uint16(b[6:])
	if typ>>8 != ctNfnlSubsysCT {
		return ""
	}
	switch {
	case flags&unix.NLM_F_MULTI != 0:
		return EventExisting
	case typ&0xff == ctIpctnlMsgCTNew && flags&ctNlmFCreateExcl != 0:
		return EventNew
	case typ&0xff == ctIpctnlMsgCTNew:
		return EventUpdate
	case typ&0xff == ctIpctnlMsgCTDelete:
		return EventDestroy
	}
	return ""
}

// libraryFlow decodes a raw message with ti-mo/conntrack.
func libraryFlow(t *testing.T, b []byte, kind string, at time.Time) Flow {
	t.Helper()
	var m netlink.Message
	if err := m.UnmarshalBinary(b); err != nil {
		t.Fatalf("netlink message: %v", err)
	}
	var ev conntrack.Event
	if err := ev.Unmarshal(m); err != nil || ev.Flow == nil {
		t.Fatalf("library decode: %v", err)
	}
	return newFlow(ev.Flow, kind, at)
}

// checkDecode holds decodeFlow to the library on message b (the i-th).
func checkDecode(t *testing.T, i int, b []byte) (Flow, bool) {
	t.Helper()
	kind := eventKind(b)
	if kind == "" {
		return Flow{}, false
	}
	at := time.Unix(1700000000, 123456789).UTC()
	want := libraryFlow(t, b, kind, at)
	got, err := decodeFlow(b[ctNlmsgHdrLen+ctNfgenmsgLen:], kind, at)
	if err != nil {
		t.Errorf("message %d (%s): decodeFlow: %v", i, kind, err)
	}
	if got != want {
		t.Errorf("message %d (%s):\ndecodeFlow %+v\nlibrary    %+v", i, kind, got, want)
	}
	return got, true
}

func readCapture(t *testing.T) [][]byte {
	t.Helper()
	f, err := os.Open(captureFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := hex.DecodeString(line)
		if err != nil {
			t.Fatalf("%s: %v", captureFile, err)
		}
		out = append(out, b)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The captured kernel messages decode as the library decodes them, and
// hold the cases the command is about.
func TestDecodeFlowCaptured(t *testing.T) {
	msgs := readCapture(t)
	seen := map[string]bool{}
	for i, b := range msgs {
		f, ok := checkDecode(t, i, b)
		if !ok {
			continue
		}
		switch {
		case f.Hairpin && f.SNAT && f.DNAT && f.Proto == "tcp":
			seen["hairpin"] = true
		case f.DNAT && !f.SNAT && f.Proto == "tcp":
			seen["other pod"] = true
		}
		if f.Proto == "udp" && f.State == "UNREPLIED" && f.Reply.SPort == 5353 {
			seen["udp"] = true
		}
		if f.Event == EventDestroy {
			seen["destroy"] = true
		}
		if f.Event == EventExisting {
			seen["dump"] = true
		}
		if f.Proto == "tcp" && f.State == "" && f.Event != EventDestroy {
			t.Errorf("message %d: tcp %s without state", i, f.Event)
		}
	}
	for _, want := range []string{"hairpin", "other pod", "udp", "destroy", "dump"} {
		if !seen[want] {
			t.Errorf("no %s flow in %s (regenerate: go test ./netops/flows -run DecodeMatchesLibrary -update-conntrack)", want, captureFile)
		}
	}
}

// synthIPv6 builds an IPv6 TCP event the way the kernel lays it out.
func synthIPv6(t *testing.T) []byte {
	t.Helper()
	tuple := func(typ uint16, src, dst string, sport, dport uint16) netfilter.Attribute {
		return netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaTupleIP, Nested: true, Children: []netfilter.Attribute{
				{Type: ctaIPv6Src, Data: netip.MustParseAddr(src).AsSlice()},
				{Type: ctaIPv6Dst, Data: netip.MustParseAddr(dst).AsSlice()},
			}},
			{Type: ctaTupleProto, Nested: true, Children: []netfilter.Attribute{
				{Type: ctaProtoNum, Data: []byte{ProtoTCP}},
				{Type: ctaProtoSrcPort, Data: netfilter.Uint16Bytes(sport)},
				{Type: ctaProtoDstPort, Data: netfilter.Uint16Bytes(dport)},
			}},
		}}
	}
	m, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink, MessageType: ctIpctnlMsgCTNew, Family: netfilter.ProtoIPv6,
		Flags: netlink.Create | netlink.Excl,
	}, []netfilter.Attribute{
		tuple(ctaTupleOrig, "fd00::5", "fd00:96::10", 40000, 443),
		tuple(ctaTupleReply, "fd00::5", "fd00::1", 8443, 61000),
		{Type: ctaStatus, Data: netfilter.Uint32Bytes(uint32(conntrack.StatusConfirmed | conntrack.StatusSrcNAT | conntrack.StatusDstNAT))},
		{Type: ctaProtoinfo, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaProtoinfoTCP, Nested: true, Children: []netfilter.Attribute{
				{Type: ctaProtoinfoState, Data: []byte{3}},
			}},
		}},
		{Type: ctaID, Data: netfilter.Uint32Bytes(4242)},
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Header.Length = uint32(ctNlmsgHdrLen + len(m.Data))
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeFlowIPv6Hairpin(t *testing.T) {
	f, ok := checkDecode(t, 0, synthIPv6(t))
	if !ok {
		t.Fatal("synthetic message not recognised")
	}
	if f.Event != EventNew || f.State != "ESTABLISHED" || f.ID != 4242 || !f.Hairpin || !f.SNAT || !f.DNAT {
		t.Errorf("IPv6 hairpin flow: %+v", f)
	}
}

// The pre-filter agrees with the decoded original tuple for every
// captured message and selector.
func TestFlowMatcher(t *testing.T) {
	msgs := append(readCapture(t), synthIPv6(t))
	svc := netip.MustParseAddr("10.96.0.10")
	v6 := netip.MustParseAddr("fd00:96::10")
	tests := []struct {
		ip    netip.Addr
		port  uint16
		proto uint8
	}{
		{svc, 0, 0}, {svc, 80, 0}, {svc, 53, 0}, {svc, 81, 0},
		{svc, 0, ProtoTCP}, {svc, 0, ProtoUDP}, {svc, 0, ProtoSCTP}, {svc, 53, ProtoUDP}, {svc, 80, ProtoUDP},
		{netip.MustParseAddr("10.96.0.11"), 0, 0}, {netip.MustParseAddr("10.244.0.11"), 0, 0},
		{v6, 0, 0}, {v6, 443, ProtoTCP}, {v6, 80, 0}, {netip.MustParseAddr("::ffff:10.96.0.10"), 0, 0},
	}
	matched := 0
	for _, tt := range tests {
		m := newFlowMatcher(tt.ip, tt.port, tt.proto)
		for i, b := range msgs {
			kind := eventKind(b)
			if kind == "" {
				continue
			}
			f := libraryFlow(t, b, kind, time.Time{})
			want := f.Orig.Dst == tt.ip.Unmap() &&
				(tt.port == 0 || f.Orig.DPort == tt.port) &&
				(tt.proto == 0 || f.Proto == ctProtoName(tt.proto))
			if got := m.match(b[ctNlmsgHdrLen+ctNfgenmsgLen:]); got != want {
				t.Errorf("%v port %d proto %d, message %d (%+v): match %v, want %v", tt.ip, tt.port, tt.proto, i, f.Orig, got, want)
			}
			if want {
				matched++
			}
		}
	}
	if matched == 0 {
		t.Fatal("no message matched any selector")
	}
}

// Truncated or corrupt messages are errors, never panics or reads past
// the end.
func TestDecodeFlowTruncated(t *testing.T) {
	m := newFlowMatcher(netip.MustParseAddr("10.96.0.10"), 80, ProtoTCP)
	for _, b := range append(readCapture(t), synthIPv6(t)) {
		attrs := b[ctNlmsgHdrLen+ctNfgenmsgLen:]
		for n := 0; n < len(attrs); n++ {
			_, _ = decodeFlow(attrs[:n], EventNew, time.Time{})
			m.match(attrs[:n])
		}
		bad := append([]byte(nil), attrs...)
		binary.NativeEndian.PutUint16(bad, 0xffff)
		if _, err := decodeFlow(bad, EventNew, time.Time{}); err == nil {
			t.Error("an attribute longer than the message decoded without error")
		}
	}
}

// Any case: the protocol as the tables print it (TCP) is conntrack(8)'s tcp.
func TestParseProto(t *testing.T) {
	for s, want := range map[string]uint8{"tcp": 6, "udp": 17, "sctp": 132, "TCP": 6, "Udp": 17, "SCTP": 132} {
		if got, err := ParseProto(s); err != nil || got != want {
			t.Errorf("%s: %d, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "icmp", "6", "tcp "} {
		if _, err := ParseProto(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}
