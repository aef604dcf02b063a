package kubeproxy

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// nftRuleAttrs builds an NFT_MSG_NEWRULE's attributes as the kernel sends
// them, from google/nftables' encoding of each expression.
func nftRuleAttrs(t testing.TB, chain, comment string, exprs ...expr.Any) []byte {
	t.Helper()
	list := nl.NewRtAttr(unix.NFTA_RULE_EXPRESSIONS|unix.NLA_F_NESTED, nil)
	for _, e := range exprs {
		b, err := expr.Marshal(unix.NFPROTO_IPV4, e)
		if err != nil {
			t.Fatal(err)
		}
		list.AddChild(nl.NewRtAttr(unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, b))
	}
	out := nl.NewRtAttr(unix.NFTA_RULE_CHAIN, nl.ZeroTerminated(chain)).Serialize()
	out = append(out, list.Serialize()...)
	if comment != "" {
		ud := append([]byte{0, byte(len(comment) + 1)}, comment...)
		out = append(out, nl.NewRtAttr(unix.NFTA_RULE_USERDATA, append(ud, 0)).Serialize()...)
	}
	return out
}

func nftSetAttrs(name string, flags, keyType, keyLen, dataType, dataLen uint32) []byte {
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	var out []byte
	for _, a := range []*nl.RtAttr{
		nl.NewRtAttr(unix.NFTA_SET_NAME, nl.ZeroTerminated(name)),
		nl.NewRtAttr(unix.NFTA_SET_FLAGS, u32(flags)),
		nl.NewRtAttr(unix.NFTA_SET_KEY_TYPE, u32(keyType)),
		nl.NewRtAttr(unix.NFTA_SET_KEY_LEN, u32(keyLen)),
		nl.NewRtAttr(unix.NFTA_SET_DATA_TYPE, u32(dataType)),
		nl.NewRtAttr(unix.NFTA_SET_DATA_LEN, u32(dataLen)),
	} {
		out = append(out, a.Serialize()...)
	}
	return out
}

// nftElemsAttrs is an NFT_MSG_NEWSETELEM with one element per key, each
// going to chain (a verdict map) when chain is set.
func nftElemsAttrs(chain string, keys ...[]byte) []byte {
	list := nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_ELEMENTS|unix.NLA_F_NESTED, nil)
	for _, k := range keys {
		el := list.AddRtAttr(unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, nil)
		el.AddRtAttr(unix.NFTA_SET_ELEM_KEY|unix.NLA_F_NESTED, nil).AddRtAttr(unix.NFTA_DATA_VALUE, k)
		if chain != "" {
			v := el.AddRtAttr(unix.NFTA_SET_ELEM_DATA|unix.NLA_F_NESTED, nil).AddRtAttr(unix.NFTA_DATA_VERDICT|unix.NLA_F_NESTED, nil)
			v.AddRtAttr(unix.NFTA_VERDICT_CODE, binary.BigEndian.AppendUint32(nil, uint32(0xfffffffc))) // NFT_GOTO
			v.AddRtAttr(unix.NFTA_VERDICT_CHAIN, nl.ZeroTerminated(chain))
		}
	}
	return list.Serialize()
}

// service-ips' key: ipv4_addr . inet_proto . inet_service, each padded.
const serviceIPsKeyType = nftTypeIPAddr<<12 | nftTypeInetProto<<6 | nftTypeInetSvc

func TestNFTRenderRules(t *testing.T) {
	tab := &nftTableDump{fam: unix.NFPROTO_IPV4, family: 4, table: "kube-proxy", sets: map[string]*nftSet{
		"cluster-ips": {name: "cluster-ips", keyType: nftTypeIPAddr, keyLen: 4},
	}}
	mark := func(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
	tests := []struct {
		name     string
		exprs    []expr.Any
		comment  string
		want     string
		readable bool
	}{
		{"inline dnat", []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6}},
			&expr.Immediate{Register: 1, Data: []byte{10, 244, 0, 5}},
			&expr.Immediate{Register: 2, Data: []byte{0x1f, 0x90}},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		}, "", "meta l4proto tcp dnat to 10.244.0.5:8080", true},
		{"prefix, set, mark", []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: "cluster-ips"},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 2},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{10, 244}},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mark(^uint32(0x4000)), Xor: mark(0x4000)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		}, "masquerade clusterIP traffic from outside cluster",
			`ip daddr @cluster-ips ip saddr != 10.244.0.0/16 meta mark set meta mark | 0x00004000 comment "masquerade clusterIP traffic from outside cluster"`, true},
		{"ct state", []expr.Any{
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mark(8), Xor: mark(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: mark(0)},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: "firewall-check"},
		}, "", "ct state new jump firewall-check", true},
		{"unknown expression kept", []expr.Any{
			&expr.Log{Key: 1 << unix.NFTA_LOG_PREFIX, Data: []byte("what")},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}, "", "[log] accept", false},
		{"lookup of a missing set", []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: "nope"},
		}, "", "[lookup]", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := nftRenderer{t: tab}
			chain, line, ok := r.rule(nftRuleAttrs(t, "services", tt.comment, tt.exprs...))
			if chain != "services" || line != tt.want || ok != tt.readable {
				t.Errorf("got %q %q %v, want %q %v", chain, line, ok, tt.want, tt.readable)
			}
		})
	}
}

// A rule the renderer cannot read is kept (with --raw) and counted, and
// not read for its meaning even where its words would fit a known shape.
func TestNFTUnreadableRuleKept(t *testing.T) {
	p := newNFTParser(4, true)
	chain := "service-AAAAAAAA-a/b/tcp/p"
	p.chain(chain)
	p.fileRule(chain, []byte("[quota] meta l4proto tcp dnat to 10.1.1.1:80"), false)
	res := newServicesResult(BackendNFTables)
	p.into(res, nil)
	if res.Unparsed != 1 || len(res.UnparsedRules) != 1 || !strings.Contains(res.UnparsedRules[0], "[quota]") || len(p.chains[chain].hops) != 0 {
		t.Errorf("unparsed %d %q, inline %+v", res.Unparsed, res.UnparsedRules, p.chains[chain].hops)
	}
}

func TestNFTElemOrder(t *testing.T) {
	s, err := decodeNFTSet(nftSetAttrs("service-ips", unix.NFT_SET_MAP, serviceIPsKeyType, 12, unix.NFT_DATA_VERDICT, 0))
	if err != nil {
		t.Fatal(err)
	}
	key := func(a, b, c, d byte, port uint16) []byte {
		return []byte{a, b, c, d, 6, 0, 0, 0, byte(port >> 8), byte(port), 0, 0}
	}
	if err := s.addElems(nftElemsAttrs("service-X", key(10, 96, 0, 1, 443), key(10, 96, 41, 0, 80), key(10, 96, 249, 250, 53), key(10, 250, 0, 10, 80))); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range s.sortedElems() {
		text, ok := s.elemText(e)
		if !ok {
			t.Fatalf("element %+v not rendered", e)
		}
		got = append(got, text)
	}
	// nft's order (a real listing): by port's low byte first.
	want := "10.96.249.250 . tcp . 53 : goto service-X|10.96.41.0 . tcp . 80 : goto service-X|10.250.0.10 . tcp . 80 : goto service-X|10.96.0.1 . tcp . 443 : goto service-X"
	if strings.Join(got, "|") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, "|"), want)
	}
}

// FuzzNFTDecode feeds arbitrary bytes as a set, its elements and a rule:
// the decoders never panic, and a rule not understood is marked so.
func FuzzNFTDecode(f *testing.F) {
	key := []byte{10, 96, 0, 1, 6, 0, 0, 0, 1, 187, 0, 0}
	rule := nftRuleAttrs(f, "services", "c",
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 10},
		&expr.Payload{DestRegister: 11, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 9, DestRegister: 0, IsDestRegSet: true, SetName: "service-ips"},
	)
	f.Add(nftSetAttrs("service-ips", unix.NFT_SET_MAP, serviceIPsKeyType, 12, unix.NFT_DATA_VERDICT, 0), nftElemsAttrs("service-X", key), rule)
	f.Add(nftSetAttrs("__map0", unix.NFT_SET_MAP|unix.NFT_SET_ANONYMOUS, nftTypeInteger, 4, nftTypeIPAddr<<6|nftTypeInetSvc, 8),
		nftElemsAttrs("", []byte{0, 0, 0, 0}), nftRuleAttrs(f, "s", "",
			&expr.Numgen{Register: 1, Modulus: 1, Type: unix.NFT_NG_RANDOM},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: "__map0"},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9}))
	f.Fuzz(func(t *testing.T, set, elems, rule []byte) {
		s, err := decodeNFTSet(set)
		if err != nil {
			s = &nftSet{name: "service-ips", flags: unix.NFT_SET_MAP, keyType: serviceIPsKeyType, keyLen: 12, dataType: unix.NFT_DATA_VERDICT}
		}
		if err := s.addElems(elems); err != nil {
			s.bad = true
		}
		for _, e := range s.sortedElems() {
			_, _ = s.elemText(e)
		}
		_, _ = s.inline()
		tab := &nftTableDump{fam: unix.NFPROTO_IPV4, family: 4, table: "kube-proxy", sets: map[string]*nftSet{s.name: s}, setOrder: []string{s.name}}
		r := nftRenderer{t: tab}
		chain, line, ok := r.rule(rule)
		if !ok && !strings.Contains(line, "[") {
			t.Errorf("unreadable rule without a marker: %q", line)
		}
		tab.rules = [][]byte{rule}
		p := newNFTParser(4, true)
		tab.feed(p)
		_ = chain
		p.into(newServicesResult(BackendNFTables), nil)
	})
}
