package kubeproxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlattr"
	"golang.org/x/sys/unix"
)

// This file turns an nf_tables dump into the text `nft list table` prints
// for it: each rule's expressions back into nft statements, each set
// element into its key (and data). It knows the expressions kube-proxy's
// nftables mode writes (payload, meta, cmp, bitwise, lookup, dynset,
// numgen, immediate, nat, masq, ct, fib, reject, counter) the way nft
// 1.0 prints them; anything else renders as "[name]" and marks the rule
// unreadable, so that it is kept and counted, never read wrongly.

// nftTableDump is one table's objects as dumped.
type nftTableDump struct {
	fam      byte
	family   int
	table    string
	chains   []string
	sets     map[string]*nftSet
	setOrder []string
	// badSets counts set descriptions that could not be decoded.
	badSets int
	rules   [][]byte
}

// nftSet is a set or map and, for those read, its elements.
type nftSet struct {
	name                               string
	flags                              uint32
	keyType, keyLen, dataType, dataLen uint32
	timeoutMS                          uint64
	hasTimeout                         bool
	elems                              []nftSetElem
	// bad: some element could not be decoded.
	bad bool
	// loaded: the elements were dumped.
	loaded bool
}

func (s *nftSet) anonymous() bool { return s.flags&unix.NFT_SET_ANONYMOUS != 0 }
func (s *nftSet) isMap() bool     { return s.flags&unix.NFT_SET_MAP != 0 }

// nftSetElem is one element: its key, and a map's data or verdict.
type nftSetElem struct {
	key, data []byte
	verdict   string
	flags     uint32
	comment   string
	// extra: the element carries a timeout, an end key or expressions,
	// which kube-proxy's elements never have and which are not rendered.
	extra bool
}

// Element attributes newer than golang.org/x/sys/unix knows.
const (
	nftaSetElemKeyEnd      = 10
	nftaSetElemExpressions = 11
)

// nft's datatype numbers (nftables' include/datatype.h), which it stores
// as a set's key and data type; a concatenation packs one per 6 bits,
// the first component highest.
const (
	nftTypeVerdict   = 1
	nftTypeInteger   = 4
	nftTypeIPAddr    = 7
	nftTypeIP6Addr   = 8
	nftTypeInetProto = 12
	nftTypeInetSvc   = 13
	nftTypeMark      = 19
	// Types of no set, for what rules compare.
	nftTypeCtState  = 1001
	nftTypeCtStatus = 1002
	nftTypeFibAddr  = 1003
)

// decodeNFTSet reads an NFT_MSG_NEWSET's attributes.
func decodeNFTSet(attrs []byte) (*nftSet, error) {
	s := &nftSet{}
	u32 := func(v []byte) uint32 {
		if len(v) != 4 {
			return 0
		}
		return binary.BigEndian.Uint32(v)
	}
	err := nlattr.Walk(attrs, func(typ uint16, v []byte) bool {
		switch typ {
		case unix.NFTA_SET_NAME:
			s.name = nlString(v)
		case unix.NFTA_SET_FLAGS:
			s.flags = u32(v)
		case unix.NFTA_SET_KEY_TYPE:
			s.keyType = u32(v)
		case unix.NFTA_SET_KEY_LEN:
			s.keyLen = u32(v)
		case unix.NFTA_SET_DATA_TYPE:
			s.dataType = u32(v)
		case unix.NFTA_SET_DATA_LEN:
			s.dataLen = u32(v)
		case unix.NFTA_SET_TIMEOUT:
			if len(v) == 8 {
				s.timeoutMS, s.hasTimeout = binary.BigEndian.Uint64(v), true
			}
		}
		return true
	})
	if err == nil && s.name == "" {
		err = nlattr.ErrBad
	}
	return s, err
}

// addElems decodes an NFT_MSG_NEWSETELEM's elements into s.
func (s *nftSet) addElems(attrs []byte) error {
	var bad error
	err := nlattr.Walk(attrs, func(typ uint16, list []byte) bool {
		if typ != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			return true
		}
		bad = nlattr.Walk(list, func(_ uint16, v []byte) bool {
			e, err := decodeNFTElem(v)
			if err != nil {
				bad = err
				return false
			}
			s.elems = append(s.elems, e)
			return true
		})
		return bad == nil
	})
	if err != nil {
		return err
	}
	return bad
}

// decodeNFTElem reads one NFTA_LIST_ELEM of a set element list.
func decodeNFTElem(b []byte) (nftSetElem, error) {
	var e nftSetElem
	value := func(v []byte) ([]byte, error) {
		var out []byte
		err := nlattr.Walk(v, func(typ uint16, d []byte) bool {
			if typ == unix.NFTA_DATA_VALUE {
				out = d
			}
			return true
		})
		if err == nil && out == nil {
			err = nlattr.ErrBad
		}
		return out, err
	}
	var err error
	werr := nlattr.Walk(b, func(typ uint16, v []byte) bool {
		switch typ {
		case unix.NFTA_SET_ELEM_KEY:
			e.key, err = value(v)
		case unix.NFTA_SET_ELEM_DATA:
			err = nlattr.Walk(v, func(typ uint16, d []byte) bool {
				switch typ {
				case unix.NFTA_DATA_VALUE:
					e.data = d
				case unix.NFTA_DATA_VERDICT:
					var code int32
					var chain string
					if err := nlattr.Walk(d, func(typ uint16, x []byte) bool {
						switch typ {
						case unix.NFTA_VERDICT_CODE:
							if len(x) == 4 {
								code = int32(binary.BigEndian.Uint32(x))
							}
						case unix.NFTA_VERDICT_CHAIN:
							chain = nlString(x)
						}
						return true
					}); err != nil {
						return false
					}
					e.verdict = verdictText(expr.VerdictKind(code), chain)
				}
				return true
			})
		case unix.NFTA_SET_ELEM_FLAGS:
			if len(v) == 4 {
				e.flags = binary.BigEndian.Uint32(v)
			}
		case unix.NFTA_SET_ELEM_USERDATA:
			e.comment = udataString(v, 0) // NFTNL_UDATA_SET_ELEM_COMMENT
		case unix.NFTA_SET_ELEM_TIMEOUT, nftaSetElemKeyEnd, unix.NFTA_SET_ELEM_EXPR, nftaSetElemExpressions:
			e.extra = true
		}
		return err == nil
	})
	if werr != nil {
		return e, werr
	}
	if err == nil && e.key == nil {
		err = nlattr.ErrBad
	}
	return e, err
}

// udataString finds a string in libnftnl's userdata TLVs (type, length,
// value; nft keeps comments there).
func udataString(b []byte, typ byte) string {
	for len(b) >= 2 {
		l := int(b[1])
		if 2+l > len(b) {
			return ""
		}
		if b[0] == typ {
			return nlString(b[2 : 2+l])
		}
		b = b[2+l:]
	}
	return ""
}

func verdictText(k expr.VerdictKind, chain string) string {
	switch k {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictJump:
		return "jump " + chain
	case expr.VerdictGoto:
		return "goto " + chain
	}
	return ""
}

// nftTypes splits a set's (possibly concatenated) type into its components.
func nftTypes(t uint32) []uint32 {
	var out []uint32
	for ; t != 0; t >>= 6 {
		out = append(out, t&0x3f)
	}
	slices.Reverse(out)
	return out
}

// nftTypeSize is a component's length in bytes; 0 when not fixed.
func nftTypeSize(t uint32) int {
	switch t {
	case nftTypeIPAddr, nftTypeMark:
		return 4
	case nftTypeIP6Addr:
		return 16
	case nftTypeInetProto:
		return 1
	case nftTypeInetSvc:
		return 2
	}
	return 0
}

// nftProtoNames are the protocol names nft prints (from /etc/protocols).
var nftProtoNames = map[byte]string{1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 58: "ipv6-icmp", 132: "sctp"}

// fmtNFTValue prints b as nft prints a value of type typ.
func fmtNFTValue(typ uint32, b []byte) (string, bool) {
	switch typ {
	case nftTypeIPAddr:
		if len(b) == 4 {
			return netip.AddrFrom4([4]byte(b)).String(), true
		}
	case nftTypeIP6Addr:
		if len(b) == 16 {
			return netip.AddrFrom16([16]byte(b)).String(), true
		}
	case nftTypeInetProto:
		if len(b) == 1 {
			if n, ok := nftProtoNames[b[0]]; ok {
				return n, true
			}
			return strconv.Itoa(int(b[0])), true
		}
	case nftTypeInetSvc:
		if len(b) == 2 {
			return strconv.Itoa(int(binary.BigEndian.Uint16(b))), true
		}
	case nftTypeMark:
		if len(b) == 4 {
			return fmt.Sprintf("0x%08x", binary.NativeEndian.Uint32(b)), true
		}
	case nftTypeInteger:
		switch len(b) {
		case 1:
			return strconv.Itoa(int(b[0])), true
		case 2:
			return strconv.Itoa(int(binary.NativeEndian.Uint16(b))), true
		case 4:
			return strconv.FormatUint(uint64(binary.NativeEndian.Uint32(b)), 10), true
		case 8:
			return strconv.FormatUint(binary.NativeEndian.Uint64(b), 10), true
		}
	case nftTypeCtState, nftTypeCtStatus:
		if len(b) == 4 {
			return fmtNFTFlags(typ, binary.NativeEndian.Uint32(b))
		}
	case nftTypeFibAddr:
		names := []string{"unspec", "unicast", "local", "broadcast", "anycast", "multicast", "blackhole", "unreachable", "prohibit"}
		if len(b) == 4 {
			if v := binary.NativeEndian.Uint32(b); v < uint32(len(names)) {
				return names[v], true
			}
		}
	}
	return "", false
}

// fmtNFTFlags names one conntrack state or status bit.
func fmtNFTFlags(typ uint32, v uint32) (string, bool) {
	state := map[uint32]string{1: "invalid", 2: "established", 4: "related", 8: "new", 64: "untracked"}
	status := map[uint32]string{1: "expected", 2: "seen-reply", 4: "assured", 8: "confirmed", 16: "snat", 32: "dnat", 512: "dying"}
	m := state
	if typ == nftTypeCtStatus {
		m = status
	}
	n, ok := m[v]
	return n, ok
}

// fmtNFTConcat prints a key or data of (concatenated) type typ, each
// component padded to 4 bytes as the kernel stores it.
func fmtNFTConcat(typ uint32, b []byte) (string, bool) {
	types := nftTypes(typ)
	if len(types) == 1 && nftTypeSize(types[0]) == 0 {
		return fmtNFTValue(types[0], b)
	}
	parts := make([]string, 0, len(types))
	for _, t := range types {
		n := nftTypeSize(t)
		if n == 0 || len(b) < n {
			return "", false
		}
		s, ok := fmtNFTValue(t, b[:n])
		if !ok {
			return "", false
		}
		parts = append(parts, s)
		b = b[min(len(b), (n+3)&^3):]
	}
	if len(b) != 0 {
		return "", false
	}
	return strings.Join(parts, " . "), true
}

// nftSortKey orders elements as nft lists them: nft reads a
// concatenation's components, unpadded, as one host-endian (here
// little-endian) number, and a single value as its number.
func nftSortKey(typ uint32, b []byte) []byte {
	types := nftTypes(typ)
	if len(types) == 1 {
		k := bytes.Clone(b)
		if t := types[0]; t == nftTypeInteger || t == nftTypeMark {
			if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
				slices.Reverse(k)
			}
		}
		return k
	}
	var k []byte
	for _, t := range types {
		n := nftTypeSize(t)
		if n == 0 || len(b) < n {
			return bytes.Clone(b)
		}
		k = append(k, b[:n]...)
		b = b[min(len(b), (n+3)&^3):]
	}
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		slices.Reverse(k)
	}
	return k
}

// sortedElems is s's elements in nft's listing order.
func (s *nftSet) sortedElems() []nftSetElem {
	type keyed struct {
		k []byte
		e nftSetElem
	}
	ks := make([]keyed, len(s.elems))
	for i, e := range s.elems {
		ks[i] = keyed{nftSortKey(s.keyType, e.key), e}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		if len(a.k) != len(b.k) {
			return len(a.k) - len(b.k)
		}
		return bytes.Compare(a.k, b.k)
	})
	out := make([]nftSetElem, len(ks))
	for i := range ks {
		out[i] = ks[i].e
	}
	return out
}

// elemText prints one element as nft does inside "{ … }": "KEY", "KEY
// comment "C"", and for a map " : DATA".
func (s *nftSet) elemText(e nftSetElem) (string, bool) {
	if e.extra || e.flags&unix.NFT_SET_ELEM_INTERVAL_END != 0 || s.flags&unix.NFT_SET_INTERVAL != 0 {
		return "", false
	}
	key, ok := fmtNFTConcat(s.keyType, e.key)
	if !ok {
		return "", false
	}
	if e.comment != "" {
		key += ` comment "` + e.comment + `"`
	}
	if !s.isMap() {
		return key, true
	}
	if s.dataType == unix.NFT_DATA_VERDICT {
		if e.verdict == "" {
			return "", false
		}
		return key + " : " + e.verdict, true
	}
	data, ok := fmtNFTConcat(s.dataType, e.data)
	if !ok {
		return "", false
	}
	return key + " : " + data, true
}

// inline prints an anonymous set as nft shows it in a rule.
func (s *nftSet) inline() (string, bool) {
	var b strings.Builder
	b.WriteString("{ ")
	for i, e := range s.sortedElems() {
		t, ok := s.elemText(e)
		if !ok {
			return "", false
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(t)
	}
	b.WriteString(" }")
	return b.String(), !s.bad
}

// feed files the dump into p as the text path would: chains, the read
// sets' elements, every rule.
func (t *nftTableDump) feed(p *nftParser) {
	t.feedHead(p)
	r := nftRenderer{t: t}
	for _, attrs := range t.rules {
		chain, line, readable := r.rule(attrs)
		p.chain(chain)
		p.fileRule(chain, []byte(line), readable)
	}
}

// feedHead files the chains and the read sets' elements into p.
func (t *nftTableDump) feedHead(p *nftParser) {
	p.fam, p.table, p.hasTable = nftFamilyName(t.family), t.table, true
	p.unparsed += t.badSets
	for _, name := range t.chains {
		p.chain(name)
	}
	for _, name := range t.setOrder {
		s := t.sets[name]
		if s.anonymous() {
			continue
		}
		if s.hasTimeout {
			p.setTimeout[name] = int(s.timeoutMS / 1000)
		}
		if !nftParsedSets[name] {
			continue
		}
		if s.bad {
			p.unparsed++
		}
		for _, e := range s.sortedElems() {
			text, ok := s.elemText(e)
			if !ok {
				p.unparsed++
				if p.keepRaw {
					p.foreignUnknown = append(p.foreignUnknown, "add element "+p.fam+" "+p.table+" "+name+" { ? }")
				}
				continue
			}
			p.element(name, nftFields([]byte(text)))
		}
	}
}

// nftOperand is what a register holds, as nft would print it.
type nftOperand struct {
	text string
	typ  uint32
	size int
	// prefixBits: an address compared on its first bits only.
	prefixBits int
	// flagTest: a bitmask ANDed with one flag, compared to zero.
	flagTest bool
	mask     []byte
	// binop: "X & Y" or such, which nft compares with an explicit "==".
	binop bool
	imm   []byte
	// mapData: the component types a map lookup loaded.
	mapData []uint32
}

// nftRenderer renders rules; its registers are indexed by 32-bit slot.
type nftRenderer struct {
	t     *nftTableDump
	regs  map[int]*nftOperand
	stmts []string
	ok    bool
}

// regSlot maps a register number to its first 32-bit slot: NFT_REG_1..4
// are 16 bytes each, NFT_REG32_00..15 four.
func regSlot(r uint32) (int, bool) {
	switch {
	case r >= unix.NFT_REG_1 && r <= unix.NFT_REG_4:
		return int(r-unix.NFT_REG_1) * 4, true
	case r >= unix.NFT_REG32_00 && r <= unix.NFT_REG32_15:
		return int(r - unix.NFT_REG32_00), true
	}
	return 0, false
}

func (r *nftRenderer) set(reg uint32, o *nftOperand) bool {
	s, ok := regSlot(reg)
	if ok {
		r.regs[s] = o
	}
	return ok
}

func (r *nftRenderer) get(reg uint32) *nftOperand {
	s, ok := regSlot(reg)
	if !ok {
		return nil
	}
	return r.regs[s]
}

// concat is the key a lookup reads from reg on: the operands loaded into
// consecutive registers up to keyLen bytes, joined by " . ".
func (r *nftRenderer) concat(reg uint32, keyLen uint32) (string, bool) {
	s, ok := regSlot(reg)
	if !ok {
		return "", false
	}
	var parts []string
	for used := 0; used < int(keyLen); {
		o := r.regs[s]
		if o == nil || o.size == 0 || o.imm != nil {
			return "", false
		}
		parts = append(parts, o.text)
		n := (o.size + 3) &^ 3
		used += n
		s += n / 4
	}
	return strings.Join(parts, " . "), true
}

// rule renders one NFT_MSG_NEWRULE: its chain, its text, and whether every
// expression was understood.
func (r *nftRenderer) rule(attrs []byte) (chain, line string, readable bool) {
	r.regs = make(map[int]*nftOperand)
	r.stmts = r.stmts[:0]
	r.ok = true
	var comment string
	var exprs []nftRawExpr
	err := nlattr.Walk(attrs, func(typ uint16, v []byte) bool {
		switch typ {
		case unix.NFTA_RULE_CHAIN:
			chain = nlString(v)
		case unix.NFTA_RULE_USERDATA:
			comment = udataString(v, 0) // NFTNL_UDATA_RULE_COMMENT
		case unix.NFTA_RULE_EXPRESSIONS:
			var err error
			if exprs, err = locateExprs(v); err != nil {
				r.fail("expressions")
			}
		}
		return true
	})
	if err != nil {
		r.fail("rule")
	}
	for _, e := range exprs {
		r.expr(e)
	}
	r.stmts = mergeL4Dependency(r.stmts)
	if comment != "" {
		r.stmts = append(r.stmts, `comment "`+comment+`"`)
	}
	return chain, strings.Join(r.stmts, " "), r.ok
}

// fail notes an expression that cannot be rendered.
func (r *nftRenderer) fail(name string) {
	r.ok = false
	r.stmts = append(r.stmts, "["+name+"]")
}

func (r *nftRenderer) expr(raw nftRawExpr) {
	name := string(raw.name)
	var e expr.Any
	switch name {
	case "payload":
		e = &expr.Payload{}
	case "meta":
		e = &expr.Meta{}
	case "cmp":
		e = &expr.Cmp{}
	case "bitwise":
		e = &expr.Bitwise{}
	case "lookup":
		e = &expr.Lookup{}
	case "dynset":
		e = &expr.Dynset{}
	case "numgen":
		e = &expr.Numgen{}
	case "immediate":
		e = &expr.Immediate{}
	case "nat":
		e = &expr.NAT{}
	case "masq":
		e = &expr.Masq{}
	case "ct":
		e = &expr.Ct{}
	case "fib":
		e = &expr.Fib{}
	case "reject":
		e = &expr.Reject{}
	case "counter":
		e = &expr.Counter{}
	default:
		r.fail(name)
		return
	}
	if err := decodeNFTExpr(r.t.fam, raw.data, e); err != nil {
		r.fail(name)
		return
	}
	if !r.render(e) {
		r.fail(name)
	}
}

// decodeNFTExpr decodes with google/nftables, whose decoders may panic on
// malformed input.
func decodeNFTExpr(fam byte, data []byte, e expr.Any) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("decode nf_tables expression: %v", p)
		}
	}()
	if err := expr.Unmarshal(fam, data, e); err != nil {
		return err
	}
	// A verdict is an immediate into the verdict register.
	if imm, ok := e.(*expr.Immediate); ok && imm.Register == unix.NFT_REG_VERDICT {
		v := &expr.Verdict{}
		if err := expr.Unmarshal(fam, data, v); err != nil {
			return err
		}
		imm.Data = []byte(verdictText(v.Kind, v.Chain))
	}
	return nil
}

// render adds e's statement or loads its register; false when e is not of
// a form rendered here. It is one case per expression form kube-proxy's
// rules use, which reads best as one switch (hence its length).
func (r *nftRenderer) render(e expr.Any) bool {
	switch e := e.(type) {
	case *expr.Payload:
		if e.OperationType != expr.PayloadLoad {
			return false
		}
		o := r.payload(e)
		return o != nil && r.set(e.DestRegister, o)
	case *expr.Meta:
		var o *nftOperand
		switch e.Key {
		case expr.MetaKeyL4PROTO:
			o = &nftOperand{text: "meta l4proto", typ: nftTypeInetProto, size: 1}
		case expr.MetaKeyMARK:
			o = &nftOperand{text: "meta mark", typ: nftTypeMark, size: 4}
		default:
			return false
		}
		if e.SourceRegister {
			src := r.get(e.Register)
			if src == nil || src.imm != nil && src.size == 0 {
				return false
			}
			v := src.text
			if src.imm != nil {
				var ok bool
				if v, ok = fmtNFTValue(o.typ, src.imm); !ok {
					return false
				}
			}
			r.stmts = append(r.stmts, o.text+" set "+v)
			return true
		}
		return r.set(e.Register, o)
	case *expr.Ct:
		if e.SourceRegister || e.Direction != 0 {
			return false
		}
		switch e.Key {
		case expr.CtKeySTATE:
			return r.set(e.Register, &nftOperand{text: "ct state", typ: nftTypeCtState, size: 4})
		case expr.CtKeySTATUS:
			return r.set(e.Register, &nftOperand{text: "ct status", typ: nftTypeCtStatus, size: 4})
		}
		return false
	case *expr.Fib:
		var in []string
		if e.FlagSADDR {
			in = append(in, "saddr")
		}
		if e.FlagDADDR {
			in = append(in, "daddr")
		}
		if e.FlagMARK {
			in = append(in, "mark")
		}
		if e.FlagIIF {
			in = append(in, "iif")
		}
		if e.FlagOIF {
			in = append(in, "oif")
		}
		if !e.ResultADDRTYPE || e.ResultOIF || e.ResultOIFNAME || e.FlagPRESENT || len(in) == 0 {
			return false
		}
		return r.set(e.Register, &nftOperand{text: "fib " + strings.Join(in, " . ") + " type", typ: nftTypeFibAddr, size: 4})
	case *expr.Numgen:
		kind := map[uint32]string{unix.NFT_NG_INCREMENTAL: "inc", unix.NFT_NG_RANDOM: "random"}[e.Type]
		if kind == "" {
			return false
		}
		text := "numgen " + kind + " mod " + strconv.FormatUint(uint64(e.Modulus), 10)
		if e.Offset != 0 {
			text += " offset " + strconv.FormatUint(uint64(e.Offset), 10)
		}
		return r.set(e.Register, &nftOperand{text: text, typ: nftTypeInteger, size: 4})
	case *expr.Bitwise:
		return r.bitwise(e)
	case *expr.Cmp:
		return r.cmp(e)
	case *expr.Lookup:
		return r.lookup(e)
	case *expr.Dynset:
		return r.dynset(e)
	case *expr.Immediate:
		if e.Register == unix.NFT_REG_VERDICT {
			if len(e.Data) == 0 {
				return false
			}
			r.stmts = append(r.stmts, string(e.Data))
			return true
		}
		return r.set(e.Register, &nftOperand{imm: e.Data, size: len(e.Data)})
	case *expr.NAT:
		return r.nat(e)
	case *expr.Masq:
		if e.ToPorts || e.RegProtoMin != 0 {
			return false
		}
		r.stmts = append(r.stmts, "masquerade"+natFlags(e.Random, e.FullyRandom, e.Persistent))
		return true
	case *expr.Reject:
		ip6 := r.t.family == 6
		switch {
		case e.Type == unix.NFT_REJECT_ICMP_UNREACH && (!ip6 && e.Code == 3 || ip6 && e.Code == 4),
			e.Type == unix.NFT_REJECT_ICMPX_UNREACH && e.Code == unix.NFT_REJECT_ICMPX_PORT_UNREACH:
			r.stmts = append(r.stmts, "reject")
		case e.Type == unix.NFT_REJECT_TCP_RST:
			r.stmts = append(r.stmts, "reject with tcp reset")
		default:
			return false
		}
		return true
	case *expr.Counter:
		r.stmts = append(r.stmts, fmt.Sprintf("counter packets %d bytes %d", e.Packets, e.Bytes))
		return true
	}
	return false
}

// payload names the header field a load reads: the addresses of the
// table's family and the transport ports.
func (r *nftRenderer) payload(e *expr.Payload) *nftOperand {
	type field struct {
		name string
		typ  uint32
		size int
	}
	var f field
	switch {
	case e.Base == expr.PayloadBaseNetworkHeader && r.t.family == 4 && e.Offset == 12:
		f = field{"ip saddr", nftTypeIPAddr, 4}
	case e.Base == expr.PayloadBaseNetworkHeader && r.t.family == 4 && e.Offset == 16:
		f = field{"ip daddr", nftTypeIPAddr, 4}
	case e.Base == expr.PayloadBaseNetworkHeader && r.t.family == 4 && e.Offset == 9 && e.Len == 1:
		f = field{"ip protocol", nftTypeInetProto, 1}
	case e.Base == expr.PayloadBaseNetworkHeader && r.t.family == 6 && e.Offset == 8:
		f = field{"ip6 saddr", nftTypeIP6Addr, 16}
	case e.Base == expr.PayloadBaseNetworkHeader && r.t.family == 6 && e.Offset == 24:
		f = field{"ip6 daddr", nftTypeIP6Addr, 16}
	case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 0 && e.Len == 2:
		f = field{"th sport", nftTypeInetSvc, 2}
	case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2:
		f = field{"th dport", nftTypeInetSvc, 2}
	default:
		return nil
	}
	o := &nftOperand{text: f.name, typ: f.typ, size: f.size}
	switch {
	case int(e.Len) == f.size:
	case int(e.Len) < f.size && (f.typ == nftTypeIPAddr || f.typ == nftTypeIP6Addr) && e.Len > 0:
		// nft loads only the bytes a byte-aligned prefix covers.
		o.prefixBits, o.size = int(e.Len)*8, int(e.Len)
	default:
		return nil
	}
	return o
}

func nftZero(b []byte) bool { return !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) }

// prefixLen is the length of a contiguous leading-ones mask; -1 otherwise.
func prefixLen(mask []byte) int {
	n := 0
	for i, c := range mask {
		if c == 0xff {
			n += 8
			continue
		}
		l := bits.LeadingZeros8(^c)
		if c<<l != 0 || !nftZero(mask[i+1:]) {
			return -1
		}
		return n + l
	}
	return n
}

func (r *nftRenderer) bitwise(e *expr.Bitwise) bool {
	src := r.get(e.SourceRegister)
	if src == nil || src.imm != nil || src.binop || src.flagTest || len(e.Mask) != int(e.Len) || len(e.Xor) != int(e.Len) || int(e.Len) != src.size {
		return false
	}
	o := *src
	switch {
	case (src.typ == nftTypeIPAddr || src.typ == nftTypeIP6Addr) && nftZero(e.Xor) && src.prefixBits == 0:
		n := prefixLen(e.Mask)
		if n < 0 {
			return false
		}
		o.prefixBits = n
	case (src.typ == nftTypeCtState || src.typ == nftTypeCtStatus) && nftZero(e.Xor):
		o.flagTest, o.mask = true, e.Mask
	case src.typ == nftTypeMark:
		mask, xor := binary.NativeEndian.Uint32(e.Mask), binary.NativeEndian.Uint32(e.Xor)
		hex := func(v uint32) string { return fmt.Sprintf("0x%08x", v) }
		switch {
		case xor == 0:
			o.text = src.text + " & " + hex(mask)
		case mask == 0xffffffff:
			o.text = src.text + " ^ " + hex(xor)
		case mask&xor == 0 && mask|xor == 0xffffffff:
			o.text = src.text + " | " + hex(xor)
		default:
			return false
		}
		o.binop = true
	default:
		return false
	}
	return r.set(e.DestRegister, &o)
}

func (r *nftRenderer) cmp(e *expr.Cmp) bool {
	o := r.get(e.Register)
	if o == nil || o.imm != nil {
		return false
	}
	ops := map[expr.CmpOp]string{expr.CmpOpEq: "", expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ", expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= "}
	op, ok := ops[e.Op]
	if !ok || len(e.Data) != o.size {
		return false
	}
	var v string
	switch {
	case o.flagTest:
		if e.Op != expr.CmpOpNeq || !nftZero(e.Data) || len(o.mask) != 4 {
			return false
		}
		if v, ok = fmtNFTFlags(o.typ, binary.NativeEndian.Uint32(o.mask)); !ok {
			return false
		}
		r.stmts = append(r.stmts, o.text+" "+v)
		return true
	case o.prefixBits > 0:
		full := 4
		if o.typ == nftTypeIP6Addr {
			full = 16
		}
		b := make([]byte, full)
		copy(b, e.Data)
		if v, ok = fmtNFTValue(o.typ, b); !ok {
			return false
		}
		v += "/" + strconv.Itoa(o.prefixBits)
	default:
		if v, ok = fmtNFTValue(o.typ, e.Data); !ok {
			return false
		}
		if o.binop && op == "" {
			op = "== "
		}
	}
	r.stmts = append(r.stmts, o.text+" "+op+v)
	return true
}

func (r *nftRenderer) setNamed(name string) (*nftSet, string, bool) {
	s := r.t.sets[name]
	if s == nil {
		return nil, "", false
	}
	if !s.anonymous() {
		return s, "@" + name, true
	}
	text, ok := s.inline()
	return s, text, ok
}

func (r *nftRenderer) lookup(e *expr.Lookup) bool {
	s, rhs, ok := r.setNamed(e.SetName)
	if !ok {
		return false
	}
	key, ok := r.concat(e.SourceRegister, s.keyLen)
	if !ok {
		return false
	}
	switch {
	case !e.IsDestRegSet:
		if e.Invert {
			rhs = "!= " + rhs
		}
		r.stmts = append(r.stmts, key+" "+rhs)
	case e.DestRegister == unix.NFT_REG_VERDICT:
		r.stmts = append(r.stmts, key+" vmap "+rhs)
	default:
		if s.dataType == unix.NFT_DATA_VERDICT {
			return false
		}
		return r.set(e.DestRegister, &nftOperand{text: key + " map " + rhs, typ: s.dataType, size: int(s.dataLen), mapData: nftTypes(s.dataType)})
	}
	return true
}

func (r *nftRenderer) dynset(e *expr.Dynset) bool {
	s := r.t.sets[e.SetName]
	if s == nil || s.anonymous() || e.SrcRegData != 0 || len(e.Exprs) > 0 || e.Invert {
		return false
	}
	key, ok := r.concat(e.SrcRegKey, s.keyLen)
	if !ok {
		return false
	}
	op := map[uint32]string{unix.NFT_DYNSET_OP_ADD: "add", unix.NFT_DYNSET_OP_UPDATE: "update", 2: "delete"}[e.Operation]
	if op == "" {
		return false
	}
	if e.Timeout != 0 {
		key += " timeout " + nftDuration(e.Timeout.Milliseconds())
	}
	r.stmts = append(r.stmts, op+" @"+e.SetName+" { "+key+" }")
	return true
}

// nftDuration prints milliseconds as nft does: "3h", "1d2h", "10s".
func nftDuration(ms int64) string {
	var b strings.Builder
	for _, u := range []struct {
		n    int64
		name string
	}{{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}} {
		if ms >= u.n {
			b.WriteString(strconv.FormatInt(ms/u.n, 10) + u.name)
			ms %= u.n
		}
	}
	if b.Len() == 0 {
		return "0s"
	}
	return b.String()
}

func natFlags(random, fullyRandom, persistent bool) string {
	var f []string
	if random {
		f = append(f, "random")
	}
	if fullyRandom {
		f = append(f, "fully-random")
	}
	if persistent {
		f = append(f, "persistent")
	}
	if len(f) == 0 {
		return ""
	}
	return " " + strings.Join(f, ",")
}

func (r *nftRenderer) nat(e *expr.NAT) bool {
	kind := map[expr.NATType]string{expr.NATTypeDestNAT: "dnat", expr.NATTypeSourceNAT: "snat"}[e.Type]
	if kind == "" || e.Prefix || e.RegAddrMin == 0 ||
		e.RegAddrMax != 0 && e.RegAddrMax != e.RegAddrMin || e.RegProtoMax != 0 && e.RegProtoMax != e.RegProtoMin {
		return false
	}
	addrSlot, _ := regSlot(e.RegAddrMin)
	addr := r.get(e.RegAddrMin)
	if addr == nil {
		return false
	}
	addrType, fam := uint32(nftTypeIPAddr), "ip"
	if e.Family == unix.NFPROTO_IPV6 {
		addrType, fam = nftTypeIP6Addr, "ip6"
	}
	var text string
	switch {
	case addr.imm != nil:
		a, ok := fmtNFTValue(addrType, addr.imm)
		if !ok {
			return false
		}
		if e.RegProtoMin == 0 {
			text = kind + " to " + a
			break
		}
		port := r.get(e.RegProtoMin)
		if port == nil || port.imm == nil {
			return false
		}
		p, ok := fmtNFTValue(nftTypeInetSvc, port.imm)
		if !ok {
			return false
		}
		if addrType == nftTypeIP6Addr {
			a = "[" + a + "]"
		}
		text = kind + " to " + a + ":" + p
	case len(addr.mapData) == 2 && addr.mapData[0] == addrType && addr.mapData[1] == nftTypeInetSvc:
		// "dnat ip to numgen … map { N : ADDR . PORT, … }": address and
		// port come from one map, in consecutive registers.
		protoSlot, ok := regSlot(e.RegProtoMin)
		if !ok || protoSlot != addrSlot+(nftTypeSize(addrType)+3)/4 {
			return false
		}
		text = kind + " " + fam + " to " + addr.text
	default:
		return false
	}
	r.stmts = append(r.stmts, text+natFlags(e.Random, e.FullyRandom, e.Persistent))
	return true
}

// mergeL4Dependency prints "meta l4proto tcp th dport 80" as nft does,
// "tcp dport 80": a protocol match right before a transport-header match
// is that match's dependency, which nft folds into the header's name.
func mergeL4Dependency(stmts []string) []string {
	out := stmts[:0]
	for i := 0; i < len(stmts); i++ {
		if proto, ok := strings.CutPrefix(stmts[i], "meta l4proto "); ok && i+1 < len(stmts) &&
			!strings.ContainsAny(proto, " {") {
			if rest, ok := strings.CutPrefix(stmts[i+1], "th "); ok {
				out = append(out, proto+" "+rest)
				i++
				continue
			}
		}
		out = append(out, stmts[i])
	}
	return out
}
