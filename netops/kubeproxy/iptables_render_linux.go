package kubeproxy

import (
	"math/bits"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// renderIPTRule writes an iptables-nft rule of chain, given as its
// nf_tables expressions, as `iptables -S` prints it. It knows the forms
// iptables-nft gives kube-proxy's KUBE-SERVICES rules: -s/-d with a prefix
// (either negated), -p tcp/udp, the comment, the destination port,
// addrtype --dst-type, counters and a jump, goto or built-in verdict. For
// anything else ok is false and the caller asks iptables itself; a rule is
// never half rendered.
func renderIPTRule(family int, chain string, exprs []expr.Any) (rendered renderedRule, ok bool) {
	r := ruleText{family: family}
	r.matches.Grow(128)
	for i := 0; i < len(exprs); i++ {
		used, ok := r.take(exprs[i], exprs[i+1:])
		if !ok {
			return rendered, false
		}
		i += used
	}
	var b strings.Builder
	b.Grow(len(chain) + len(r.src) + len(r.dst) + r.matches.Len() + len(r.verdict) + 16)
	b.WriteString("-A ")
	b.WriteString(chain)
	b.WriteString(r.src)
	b.WriteString(r.dst)
	if r.proto != "" {
		b.WriteString(" -p ")
		b.WriteString(r.proto)
	}
	b.WriteString(r.matches.String())
	b.WriteString(r.verdict)
	return renderedRule{line: b.String(), target: r.chain, addrs: r.addrs}, true
}

// renderedRule is a rule as `iptables -S` prints it, with the chain it
// jumps or goes to ("" for none) and the addresses it names.
type renderedRule struct {
	line   string
	target string
	addrs  []netip.Addr
}

// ruleText collects a rule's parts in the order iptables prints them:
// addresses, protocol, matches in the rule's order, then the target.
type ruleText struct {
	family   int
	src, dst string
	proto    string
	protoNum byte
	dport    bool
	matches  strings.Builder
	verdict  string
	chain    string
	addrs    []netip.Addr
}

// take consumes e and, for a load, the expressions after it that complete
// it (bitwise, cmp); it returns how many of those it used.
func (r *ruleText) take(e expr.Any, rest []expr.Any) (used int, ok bool) {
	if r.verdict != "" {
		return 0, false // nothing follows the target
	}
	switch e := e.(type) {
	case *expr.Counter:
		return 0, true
	case *expr.Meta:
		if e.Key == expr.MetaKeyMARK {
			return r.mark(e, rest)
		}
		if len(rest) == 0 {
			return 0, false
		}
		cmp, ok := rest[0].(*expr.Cmp)
		if !ok || e.Key != expr.MetaKeyL4PROTO || e.SourceRegister || r.proto != "" || len(cmp.Data) != 1 || cmp.Register != e.Register || cmp.Op != expr.CmpOpEq {
			return 0, false
		}
		name, known := iptProtoName[cmp.Data[0]]
		if !known {
			return 0, false
		}
		r.proto, r.protoNum = name, cmp.Data[0]
		return 1, true
	case *expr.Payload:
		return r.payload(e, rest)
	case *expr.Match:
		return 0, r.match(e)
	case *expr.Verdict:
		return 0, r.target(e)
	case *expr.Target:
		return 0, r.xtTarget(e)
	}
	return 0, false
}

// iptProtoName: the protocols of kube-proxy's service rules, by number,
// as iptables prints them (SCTP's port match is an xt match, declined).
var iptProtoName = map[byte]string{6: "tcp", 17: "udp"}

// payload renders an address (-s/-d) or a transport port (-m tcp --dport)
// from a payload load, an optional bitwise mask and a cmp.
func (r *ruleText) payload(p *expr.Payload, rest []expr.Any) (used int, ok bool) {
	if p.OperationType != expr.PayloadLoad || len(rest) == 0 {
		return 0, false
	}
	var mask []byte
	if bw, isMask := rest[0].(*expr.Bitwise); isMask {
		if bw.SourceRegister != p.DestRegister || bw.DestRegister != p.DestRegister || !allZero(bw.Xor) || int(bw.Len) != int(p.Len) {
			return 0, false
		}
		mask = bw.Mask
		used, rest = 1, rest[1:]
		if len(rest) == 0 {
			return 0, false
		}
	}
	cmp, isCmp := rest[0].(*expr.Cmp)
	if !isCmp || cmp.Register != p.DestRegister || len(cmp.Data) != int(p.Len) || (cmp.Op != expr.CmpOpEq && cmp.Op != expr.CmpOpNeq) {
		return 0, false
	}
	used++
	neg := ""
	if cmp.Op == expr.CmpOpNeq {
		neg = " !"
	}
	switch p.Base {
	case expr.PayloadBaseNetworkHeader:
		src, dst, size := 12, 16, 4
		if r.family == 6 {
			src, dst, size = 8, 24, 16
		}
		var field *string
		flag := ""
		switch int(p.Offset) {
		case src:
			field, flag = &r.src, " -s "
		case dst:
			field, flag = &r.dst, " -d "
		default:
			return 0, false
		}
		if *field != "" || int(p.Len) > size {
			return 0, false
		}
		addr := make([]byte, size)
		copy(addr, cmp.Data)
		bitsLen := int(p.Len) * 8
		if mask != nil {
			if !isPrefixMask(mask) {
				return 0, false
			}
			bitsLen = 0
			for _, m := range mask {
				bitsLen += bits.OnesCount8(m)
			}
		}
		if size == 16 && allZero(addr[:12]) && addr[12]|addr[13] != 0 {
			// glibc prints an IPv4-compatible address as ::a.b.c.d,
			// Go as ::a60:1: leave it to ip6tables.
			return 0, false
		}
		a, _ := netip.AddrFromSlice(addr)
		r.addrs = append(r.addrs, a)
		*field = neg + flag + a.String() + "/" + strconv.Itoa(bitsLen)
		return used, true
	case expr.PayloadBaseTransportHeader:
		// kube-proxy matches destination ports only: "-m tcp --dport N".
		if mask != nil || neg != "" || p.Offset != 2 || p.Len != 2 || r.dport || r.protoNum != 6 && r.protoNum != 17 {
			return 0, false
		}
		r.dport = true
		r.matches.WriteString(" -m " + r.proto + " --dport " + strconv.Itoa(int(cmp.Data[0])<<8|int(cmp.Data[1])))
		return used, true
	}
	return 0, false
}

// match renders the xt matches kube-proxy puts in KUBE-SERVICES.
func (r *ruleText) match(m *expr.Match) bool {
	if raw, ok := m.Info.(*xt.Unknown); ok {
		return r.xtMatch(m.Name, m.Rev, *raw)
	}
	switch info := m.Info.(type) {
	case *xt.Comment:
		r.matches.WriteString(" -m comment --comment ")
		r.matches.WriteString(xtablesQuote(string(*info)))
		return true
	case *xt.AddrTypeV1:
		if info.Source != 0 || info.Flags&^xt.AddrTypeFlags(xtAddrTypeInvertDest) != 0 {
			return false
		}
		name, known := addrTypeName[info.Dest]
		if !known {
			return false
		}
		r.matches.WriteString(" -m addrtype")
		if info.Flags&xtAddrTypeInvertDest != 0 {
			r.matches.WriteString(" !")
		}
		r.matches.WriteString(" --dst-type " + name)
		return true
	}
	return false
}

// xtAddrTypeInvertDest is XT_ADDRTYPE_INVERT_DEST.
const xtAddrTypeInvertDest = 0x2

// addrTypeName: the one address type kube-proxy matches on, and its kin.
var addrTypeName = map[uint16]string{
	uint16(xt.AddrTypeLocal):     "LOCAL",
	uint16(xt.AddrTypeUnicast):   "UNICAST",
	uint16(xt.AddrTypeBroadcast): "BROADCAST",
	uint16(xt.AddrTypeMulticast): "MULTICAST",
}

func (r *ruleText) target(v *expr.Verdict) bool {
	switch v.Kind {
	case expr.VerdictJump:
		r.verdict, r.chain = " -j "+v.Chain, v.Chain
	case expr.VerdictGoto:
		r.verdict, r.chain = " -g "+v.Chain, v.Chain
	case expr.VerdictAccept:
		r.verdict = " -j ACCEPT"
	case expr.VerdictDrop:
		r.verdict = " -j DROP"
	case expr.VerdictReturn:
		r.verdict = " -j RETURN"
	default:
		return false
	}
	return true
}

// xtablesQuote quotes a match argument as xtables_save_string does: bare
// when it is only letters, digits, '-' and '_', else in double quotes with
// the quote marks and the backslash escaped.
func xtablesQuote(s string) string {
	bare := s != ""
	for i := 0; i < len(s) && bare; i++ {
		c := s[i]
		bare = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
	}
	if bare {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' || c == '\'' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// isPrefixMask: ones, then zeroes, as a prefix length's mask is.
func isPrefixMask(m []byte) bool {
	zero := false
	for _, c := range m {
		if zero && c != 0 {
			return false
		}
		if c != 0xff {
			if bits.LeadingZeros8(^c) != bits.OnesCount8(c) {
				return false
			}
			zero = true
		}
	}
	return true
}
