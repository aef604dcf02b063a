package kubeproxy

import (
	"bytes"
	"io"
	"strconv"
	"strings"
)

// This file reads kube-proxy's nftables mode from the text `nft list table
// ip kube-proxy` (or ip6) prints. hairpinctl does not run nft: it reads
// the table over netlink and renders each rule and element as that text
// (nftables_render_linux.go), so one reader serves both, --raw shows the
// rules in nft's syntax, and the tests compare the two on the same kernel.
//
// kube-proxy's layout (pkg/proxy/nftables): the service-ips map sends
// ClusterIP . proto . port to a service-HASH-ns/name/proto/port chain (or
// local-… with internalTrafficPolicy Local), external and load-balancer
// IPs to external-…, and service-nodeports sends proto . port to
// external-…. Services without endpoints are elements of
// no-endpoint-services. How a service chain reaches its endpoints changed
// between releases, and both shapes are read:
//   - endpoint chains: the service chain picks one with "numgen random mod N
//     vmap { 0 : goto endpoint-…, … }"; the endpoint chain marks traffic from
//     the endpoint itself for masquerade ("ip saddr X jump
//     mark-for-masquerade", the hairpin rule) and DNATs. Releases since then
//     keep endpoint chains only for ClientIP affinity.
//   - inline DNAT: "dnat ip to numgen random mod N map { 0 : IP . PORT, … }",
//     or "dnat to IP:PORT" for one endpoint. The hairpin masquerade is then
//     the hairpin-connections set (podIP . podIP . proto . port, this node's
//     endpoints only) that the masquerading chain matches with
//     "ct status dnat ip saddr . ip daddr . meta l4proto . th dport
//     @hairpin-connections masquerade".

// nftSep summarises one endpoint chain.
type nftSep struct {
	linkEndpoint
	// hairpinSrc is the saddr of the rule that jumps to
	// mark-for-masquerade.
	hairpinSrc string
}

// decide works out the hairpin masquerade once either of its two rules is
// read: traffic from the endpoint's own address is marked for masquerade.
func (s *nftSep) decide() {
	s.hairpin = s.hairpinSrc != "" && sameIP(s.hairpinSrc, s.ip)
}

// nftElem is one element of a kube-proxy map.
type nftElem struct {
	mapName string
	ip      string
	proto   string
	port    int
	comment string
	verdict string // "goto CHAIN", "drop", ...
	raw     string
}

// nftParser accumulates one `nft list table` output.
type nftParser struct {
	linkInput
	fam   string // "ip" or "ip6"
	table string

	seps       map[string]*nftSep
	elems      []nftElem
	clusterIPs map[string]bool
	setTimeout map[string]int
	// affinitySets are the affinity-… sets each dispatch chain checks.
	affinitySets map[string][]string
	masq         MasqueradePlumbing
	// hairpin holds the hairpin-connections elements whose source and
	// destination are the same endpoint, keyed "ip proto port".
	hairpin map[string]bool
	// markSet: some rule outside mark-for-masquerade sets the masquerade
	// mark itself; markChain: a mark-for-masquerade chain exists.
	markSet, markChain bool
	unparsed           int
	hasTable           bool
}

func newNFTParser(family int, keepRaw bool) *nftParser {
	p := &nftParser{
		linkInput: linkInput{
			backend: BackendNFTables, family: family, keepRaw: keepRaw,
			chains: make(map[string]*linkChain),
			kindOf: nftChainKind, dispatchOf: nftDispatchChains,
		},
		seps:         make(map[string]*nftSep),
		clusterIPs:   make(map[string]bool),
		setTimeout:   make(map[string]int),
		affinitySets: make(map[string][]string),
		hairpin:      make(map[string]bool),
	}
	if keepRaw {
		p.raws = make(map[string]*linkRaw)
	}
	return p
}

// nftDispatchChains names the service and local chains that share a
// chain's base ("HASH-ns/name/proto/port"): kube-proxy names one service
// port's chains alike.
func nftDispatchChains(chain string) (svc, svl string, ok bool) {
	_, base, ok := strings.Cut(chain, "-")
	return "service-" + base, "local-" + base, ok
}

// parseNFTList reads `nft list table ip|ip6 kube-proxy` text the way
// Services does.
func parseNFTList(r io.Reader, family int, raw bool, sel *serviceSelector) (*Result, error) {
	p := newNFTParser(family, raw)
	if err := p.feed(r); err != nil {
		return nil, err
	}
	res := newServicesResult(BackendNFTables)
	p.into(res, sel)
	return res, nil
}

// feed reads the text block by block, tracking brace depth so that sets,
// maps and chains of any shape are skipped or read whole. Its states share
// the pending line and element buffers, so it is one loop (hence its
// length).
func (p *nftParser) feed(r io.Reader) error {
	var (
		block   string // "chain", "set", "map", "table", "other"
		name    string
		depth   int // brace depth inside the table
		pending []byte
		elems   []byte
		inElems bool
		// Running brace balances of pending and elems: a map of 10,000
		// elements spans 10,000 lines, so never rescan what was read.
		pendingBal, elemsBal int
	)
	return eachLine(r, func() { p.unparsed++ }, func(line []byte) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			return
		}
		// A rule with an unbalanced '{' continues on the next line.
		if len(pending) > 0 {
			pending = append(append(pending, ' '), line...)
			if pendingBal += braceBalance(line); pendingBal > 0 {
				return
			}
			line, pending = pending, nil
		}
		if inElems {
			elems = append(append(elems, ' '), line...)
			if elemsBal += braceBalance(line); elemsBal <= 0 {
				inElems = false
				p.elements(name, elems)
				elems = elems[:0]
			}
			return
		}
		switch {
		case depth == 0:
			// "table ip kube-proxy {"
			f := bytes.Fields(line)
			if len(f) == 4 && string(f[0]) == "table" && string(f[3]) == "{" {
				p.fam, p.table = string(f[1]), string(f[2])
				p.hasTable = true
				depth = 1
				block = "table"
			}
		case depth == 1:
			f := bytes.Fields(line)
			if string(line) == "}" {
				depth = 0
				return
			}
			if len(f) >= 3 && string(f[len(f)-1]) == "{" {
				depth = 2
				block = string(f[0])
				name = string(bytes.Join(f[1:len(f)-1], []byte(" ")))
				if block == "chain" {
					p.chain(name)
				}
				return
			}
			// A table-level comment or flag line.
		case depth == 2:
			if string(line) == "}" {
				depth = 1
				block = ""
				return
			}
			switch block {
			case "chain":
				if bytes.HasPrefix(line, []byte("type ")) || bytes.HasPrefix(line, []byte("comment ")) || bytes.HasPrefix(line, []byte("policy ")) {
					return
				}
				if pendingBal = braceBalance(line); pendingBal > 0 {
					pending = append(pending[:0], line...)
					return
				}
				p.rule(name, line)
			case "set", "map":
				switch {
				case bytes.HasPrefix(line, []byte("elements = ")):
					elems = append(elems[:0], line[len("elements = "):]...)
					if elemsBal = braceBalance(elems); elemsBal > 0 {
						inElems = true
						return
					}
					p.elements(name, elems)
					elems = elems[:0]
				case bytes.HasPrefix(line, []byte("timeout ")):
					if d, ok := parseNFTDuration(string(line[len("timeout "):])); ok {
						p.setTimeout[name] = d
					}
				}
			default:
				if braceBalance(line) > 0 {
					depth += braceBalance(line)
				}
			}
		default:
			depth += braceBalance(line)
			if depth < 2 {
				depth = 1
			}
		}
	})
}

// braceBalance counts '{' minus '}' outside double quotes.
func braceBalance(b []byte) int {
	n := 0
	q := false
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			q = !q
		case '{':
			if !q {
				n++
			}
		case '}':
			if !q {
				n--
			}
		}
	}
	return n
}

// parseNFTDuration reads nft's "3h", "10800s", "1d2h3m4s" into seconds.
func parseNFTDuration(s string) (int, bool) {
	s = strings.TrimSpace(s)
	total := 0
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 || i == len(s) {
			return 0, false
		}
		n, _ := strconv.Atoi(s[:i])
		j := i
		for j < len(s) && (s[j] < '0' || s[j] > '9') {
			j++
		}
		switch s[i:j] {
		case "d":
			total += n * 86400
		case "h":
			total += n * 3600
		case "m":
			total += n * 60
		case "s":
			total += n
		case "ms":
		default:
			return 0, false
		}
		s = s[j:]
	}
	return total, true
}

func (p *nftParser) chain(name string) *linkChain {
	c := p.chains[name]
	if c == nil {
		c = &linkChain{name: name}
		if name == "mark-for-masquerade" {
			p.markChain = true
		}
		p.chains[name] = c
		switch nftChainKind(name) {
		case kindSvc, kindSvl, kindExt, kindSep, kindFw:
			if p.keepRaw {
				// Unknown rules are listed in the order the chains
				// were declared.
				p.raw(name)
			}
		}
	}
	return c
}

// sep returns the summary of an endpoint chain, creating it.
func (p *nftParser) sep(name string) *nftSep {
	s := p.seps[name]
	if s == nil {
		s = &nftSep{linkEndpoint: linkEndpoint{name: name}}
		p.seps[name] = s
	}
	return s
}

// nftChainKind classifies the kube-proxy table's chains. Per-service chains
// are named PREFIX-HASH-ns/name/proto/port, HASH being 8 base32
// characters; "services" and "service-endpoints-check" are not.
func nftChainKind(name string) chainKind {
	switch {
	case nftServiceChain(name, "service-"):
		return kindSvc
	case nftServiceChain(name, "local-"):
		return kindSvl
	case nftServiceChain(name, "external-"):
		return kindExt
	case nftServiceChain(name, "endpoint-"):
		return kindSep
	case nftServiceChain(name, "firewall-"):
		return kindFw
	case name == "mark-for-masquerade":
		return kindMarkMasq
	case name == "masquerading":
		return kindPostrouting
	case name == "nat-postrouting":
		return kindBuiltin
	}
	return kindQuiet
}

func nftServiceChain(name, prefix string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || len(rest) < 10 || rest[8] != '-' {
		return false
	}
	for i := 0; i < 8; i++ {
		if c := rest[i]; !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// nftFields splits a rule into words, a quoted string being one word, and
// '{', '}' and ',' standing alone.
func nftFields(line []byte) []string {
	var out []string
	s := string(line)
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '{' || c == '}' || c == ',':
			out = append(out, s[i:i+1])
			i++
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if j > len(s) {
				j = len(s) - 1
			}
			out = append(out, s[i:min(j+1, len(s))])
			i = j + 1
		default:
			j := i
			for j < len(s) && s[j] != ' ' && s[j] != '\t' && s[j] != ',' && s[j] != '{' && s[j] != '}' {
				j++
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out
}

// rule files one rule of chain.
func (p *nftParser) rule(chain string, line []byte) { p.fileRule(chain, line, true) }

// fileRule files one rule of chain. A rule that is not readable (the
// netlink reader met an expression it does not know) is kept and counted
// without being read for its meaning.
func (p *nftParser) fileRule(chain string, line []byte, readable bool) {
	kind := nftChainKind(chain)
	c := p.chains[chain]
	known := readable && p.ruleKnown(kind, c, nftFields(line))
	if kind == kindQuiet || kind == kindBuiltin {
		return
	}
	if !known {
		p.unparsed++
	}
	if !p.keepRaw {
		return
	}
	raw := "add rule " + p.fam + " " + p.table + " " + chain + " " + string(line)
	switch kind {
	case kindSvc, kindSvl, kindExt, kindSep, kindFw:
		rc := p.raw(chain)
		rc.rules = append(rc.rules, raw)
		if !known {
			rc.unknown = append(rc.unknown, raw)
		}
	default:
		if !known {
			p.foreignUnknown = append(p.foreignUnknown, raw)
		}
	}
}

// ruleKnown files one rule (its fields f) of chain c, of kind, and reports
// whether its form is one kube-proxy writes. It is one case per rule form
// of the releases read, kept as one switch so that each release's forms
// sit side by side (hence its length).
func (p *nftParser) ruleKnown(kind chainKind, c *linkChain, f []string) bool {
	last := ""
	if len(f) > 0 {
		last = f[len(f)-1]
	}
	has := func(w string) int {
		for i, x := range f {
			if x == w {
				return i
			}
		}
		return -1
	}
	// A trailing `comment "..."` does not change what a rule does.
	if n := len(f); n >= 2 && f[n-2] == "comment" {
		f = f[:n-2]
		if len(f) > 0 {
			last = f[len(f)-1]
		}
	}
	jumpMasq := len(f) >= 2 && f[len(f)-2] == "jump" && last == "mark-for-masquerade"
	setsMark := false
	if i := has("set"); i >= 1 && f[i-1] == "mark" && (has("|") > i || has("or") > i) {
		setsMark = true
		if kind != kindMarkMasq {
			p.markSet = true
			if p.masq.Mark == "" {
				p.masq.Mark = normaliseMark(f[len(f)-1])
			}
		}
	}
	switch kind {
	case kindBuiltin:
		if len(f) >= 2 && f[len(f)-2] == "jump" && last == "masquerading" {
			p.masq.PostroutingHooked = true
		}
		return true
	case kindQuiet:
		return true
	case kindMarkMasq:
		// "meta mark set meta mark | 0x00004000" (kube-proxy wrote "mark set mark or 0x4000").
		if i := has("set"); i >= 0 && (has("|") > i || has("or") > i) {
			p.masq.MarkMasq = true
			p.masq.Mark = normaliseMark(last)
			return true
		}
	case kindPostrouting:
		switch {
		case has("masquerade") >= 0 && has("@hairpin-connections") >= 0 && has("dnat") > has("status"):
			p.masq.HairpinSet = true
			return true
		case has("masquerade") >= 0:
			p.masq.PostroutingMasquerade = true
			return true
		case last == "return", has("set") >= 0:
			return true
		}
	case kindSvc, kindSvl:
		if jumpMasq || setsMark {
			return true
		}
		if i := has("dnat"); i >= 0 {
			return p.inlineDNAT(c, f[i+1:])
		}
		if i := has("numgen"); i >= 0 {
			return p.numgen(c, f[i:])
		}
		// "ip saddr @affinity-… goto endpoint-…"
		if len(f) == 5 && strings.HasPrefix(f[2], "@affinity-") && f[3] == "goto" {
			p.affinitySets[c.name] = append(p.affinitySets[c.name], f[2][1:])
			return true
		}
	case kindExt:
		if has("fib") >= 0 && has("local") >= 0 {
			// Only externalTrafficPolicy Local special-cases the node's
			// own traffic ("fib saddr type local").
			c.localShape = true
		}
		if jumpMasq || setsMark {
			return true
		}
		if len(f) >= 2 && f[len(f)-2] == "goto" {
			if k := nftChainKind(last); k == kindSvc || k == kindSvl {
				c.links = appendUnique(c.links, last)
				return true
			}
		}
	case kindFw:
		return last == "drop" || last == "accept" || last == "return"
	case kindSep:
		s := p.sep(c.name)
		switch {
		case jumpMasq && len(f) == 5 && (f[0] == "ip" || f[0] == "ip6") && f[1] == "saddr":
			// The hairpin rule: traffic from the endpoint itself.
			s.hairpinSrc = f[2]
			s.decide()
			return true
		case len(f) >= 1 && f[0] == "update" && len(f) >= 2 && strings.HasPrefix(f[1], "@affinity-"):
			s.affinity = true
			return true
		case has("dnat") >= 0:
			i := has("to")
			if i < 0 || i+1 >= len(f) {
				return false
			}
			ip, port, ok := splitHostPort(f[i+1])
			if !ok {
				return false
			}
			s.ip, s.port = ip, int32(port)
			s.decide()
			return true
		}
	}
	return false
}

// inlineDNAT reads what follows "dnat": "ip to numgen random mod N map {
// 0 : IP . PORT , … }" (ip6 alike; a key may be a range), or "to IP:PORT".
// The endpoints it DNATs to come before any endpoint chains.
func (p *nftParser) inlineDNAT(c *linkChain, f []string) bool {
	if len(f) > 0 && (f[0] == "ip" || f[0] == "ip6") {
		f = f[1:]
	}
	if len(f) < 2 || f[0] != "to" {
		return false
	}
	f = f[1:]
	if len(f) == 1 {
		ip, port, ok := splitHostPort(f[0])
		if !ok || port == 0 {
			return false
		}
		c.hops, c.modulus = withHops(c.hops, false, []linkHop{{ip: ip, port: int32(port), weight: 1}}), 1
		return true
	}
	if len(f) < 7 || f[0] != "numgen" {
		return false
	}
	mod, inline, ok := numgenSlots(f, "map", 3, func(v []string) (linkHop, bool) {
		// "10.244.0.2 . 8080"
		port, ok := atoiPort(v[2])
		return linkHop{ip: v[0], port: int32(port)}, ok && v[1] == "."
	})
	if mod == 0 {
		return false
	}
	c.modulus = mod
	c.hops = withHops(c.hops, false, inline)
	return ok
}

// numgen reads "numgen random mod N vmap { 0 : goto A , 1 : goto B }".
func (p *nftParser) numgen(c *linkChain, f []string) bool {
	mod, slots, ok := numgenSlots(f, "vmap", 2, func(v []string) (linkHop, bool) {
		if v[0] != "goto" {
			return linkHop{}, false
		}
		return linkHop{ep: &p.sep(v[1]).linkEndpoint}, true
	})
	if mod == 0 {
		return false
	}
	c.modulus = mod
	c.hops = withHops(c.hops, true, slots)
	return ok
}

// numgenSlots reads "numgen random mod N KIND { K : V , … }" from f, each
// value V being width fields that hop turns into a linkHop. A key may be a
// range ("0-1"), which gives that hop more slots. mod is 0 when the head
// is not of that form; ok is false when an element is not understood, and
// hops then holds the elements before it.
func numgenSlots(f []string, kind string, width int, hop func(v []string) (linkHop, bool)) (mod int, hops []linkHop, ok bool) {
	if len(f) < 6 || f[1] != "random" || f[2] != "mod" || f[4] != kind || f[5] != "{" {
		return 0, nil, false
	}
	mod, err := strconv.Atoi(f[3])
	if err != nil || mod <= 0 {
		return 0, nil, false
	}
	rest := f[6:]
	for len(rest) > 0 && rest[0] != "}" {
		if rest[0] == "," {
			rest = rest[1:]
			continue
		}
		if len(rest) < 2+width || rest[1] != ":" {
			return mod, hops, false
		}
		lo, hi, ok := parseSlotRange(rest[0])
		if !ok {
			return mod, hops, false
		}
		h, ok := hop(rest[2 : 2+width])
		if !ok {
			return mod, hops, false
		}
		hops = addSlots(hops, h, hi-lo+1)
		rest = rest[2+width:]
	}
	return mod, hops, len(rest) > 0
}

// addSlots adds n slots of an endpoint to hops, to its earlier slots if it
// has some.
func addSlots(hops []linkHop, h linkHop, n int) []linkHop {
	for i := range hops {
		if hops[i].ep == h.ep && hops[i].ip == h.ip && hops[i].port == h.port {
			hops[i].weight += int32(n)
			return hops
		}
	}
	h.weight = int32(n)
	return append(hops, h)
}

// withHops replaces a dispatch chain's endpoint chains (chains) or inline
// endpoints (!chains) by hops; the inline ones come first.
func withHops(old []linkHop, chains bool, hops []linkHop) []linkHop {
	var inline, viaChain []linkHop
	for _, h := range old {
		if h.ep == nil {
			inline = append(inline, h)
		} else {
			viaChain = append(viaChain, h)
		}
	}
	if chains {
		viaChain = hops
	} else {
		inline = hops
	}
	return append(inline, viaChain...)
}

func parseSlotRange(s string) (int, int, bool) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err := strconv.Atoi(a)
	if err != nil || lo < 0 {
		return 0, 0, false
	}
	if !isRange {
		return lo, lo, true
	}
	hi, err := strconv.Atoi(b)
	if err != nil || hi < lo {
		return 0, 0, false
	}
	return lo, hi, true
}

// normaliseMark turns nft's 0x00004000 into 0x4000, as iptables prints it.
func normaliseMark(s string) string {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	if err != nil {
		return s
	}
	return "0x" + strconv.FormatUint(v, 16)
}

// elements reads "{ a . tcp . 80 : goto chain, ... }" of map (or set) name.
func (p *nftParser) elements(name string, text []byte) {
	f := nftFields(text)
	if len(f) > 0 && f[0] == "{" {
		f = f[1:]
	}
	if len(f) > 0 && f[len(f)-1] == "}" {
		f = f[:len(f)-1]
	}
	start := 0
	for i := 0; i <= len(f); i++ {
		if i < len(f) && f[i] != "," {
			continue
		}
		if i > start {
			p.element(name, f[start:i])
		}
		start = i + 1
	}
}

func (p *nftParser) element(mapName string, f []string) {
	switch mapName {
	case "cluster-ips":
		if len(f) == 1 {
			p.clusterIPs[f[0]] = true
		}
		return
	case "hairpin-connections":
		// "10.244.0.2 . 10.244.0.2 . tcp . 8080"
		if len(f) >= 7 && f[1] == "." && f[3] == "." && f[5] == "." && f[0] == f[2] {
			if port, ok := atoiPort(f[6]); ok {
				p.hairpin[hairpinKey(f[0], f[4], port)] = true
				return
			}
		}
		p.unparsed++
		return
	case "service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports", "firewall-ips":
	default:
		return
	}
	e := nftElem{mapName: mapName}
	var key []string
	i := 0
	for ; i < len(f) && f[i] != ":"; i++ {
		switch f[i] {
		case "comment":
			if i+1 < len(f) {
				e.comment = strings.Trim(f[i+1], `"`)
				i++
			}
		case "timeout", "expires":
			i++
		case "counter":
			// "counter packets N bytes M"
			i += 4
		case ".":
		default:
			key = append(key, f[i])
		}
	}
	if i < len(f) {
		e.verdict = strings.Join(f[i+1:], " ")
	}
	ok := false
	switch len(key) {
	case 3: // addr . proto . port
		e.ip, e.proto = key[0], key[1]
		e.port, ok = atoiPort(key[2])
	case 2: // proto . port
		e.proto = key[0]
		e.port, ok = atoiPort(key[1])
	}
	if p.keepRaw {
		e.raw = "add element " + p.fam + " " + p.table + " " + mapName + " { " + strings.Join(f, " ") + " }"
	}
	if !ok || e.verdict == "" {
		p.unparsed++
		if p.keepRaw {
			p.foreignUnknown = append(p.foreignUnknown, e.raw)
		}
		return
	}
	p.elems = append(p.elems, e)
}

func atoiPort(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	return n, err == nil && n > 0 && n <= 65535
}

// gotoTarget returns CHAIN of a "goto CHAIN" verdict.
func gotoTarget(v string) string {
	if t, ok := strings.CutPrefix(v, "goto "); ok {
		return t
	}
	if t, ok := strings.CutPrefix(v, "jump "); ok {
		return t
	}
	return ""
}

// nftServiceName reads "ns/name/proto/port" out of a kube-proxy chain name
// ("service-ULMVA6XW-ns1/svc1/tcp/p80"); it returns "" when the name is
// not of that shape or was truncated.
func nftServiceName(chain string) string {
	_, rest, ok := strings.Cut(chain, "-")
	if !ok {
		return ""
	}
	if _, rest, ok = strings.Cut(rest, "-"); !ok {
		return ""
	}
	rest, _, _ = strings.Cut(rest, "__")
	parts := strings.Split(rest, "/")
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" || strings.HasSuffix(rest, "...") {
		return ""
	}
	n := parts[0] + "/" + parts[1]
	if parts[3] != "" {
		n += ":" + parts[3]
	}
	return n
}

// into adds the parser's services to res.
func (p *nftParser) into(res *Result, sel *serviceSelector) {
	p.decide()
	svcs, unknown := p.link(sel)
	res.Unparsed += p.unparsed
	res.UnparsedRules = append(res.UnparsedRules, unknown...)
	if !p.markChain && p.markSet {
		p.masq.MarkMasq = true
	}
	mergeMasquerade(res, p.masq, p.family)
	addServices(res, svcs, true)
}

// decide turns the map elements into the linker's entries, and the sets
// into the dispatch chains' affinity and the hairpin set.
//
// The service-ips elements that lead to a service or local chain define
// the services. Other service-ips elements are external IPs, or load
// balancer IPs when firewall-ips lists them too: kube-proxy sends both the
// same way, and only source ranges tell a load balancer apart. Releases
// without the cluster-ips set put every address in service-ips and
// no-endpoint-services; there a no-endpoint element defines a service
// when nothing else does and it rejects. The entries are in the order
// --raw prints them.
func (p *nftParser) decide() {
	isCluster := func(e *nftElem) bool {
		if len(p.clusterIPs) > 0 {
			return p.clusterIPs[e.ip]
		}
		return true
	}
	p.entries = make([]linkEntry, 0, len(p.elems))
	add := func(e *nftElem, kind entryKind, name string) {
		p.entries = append(p.entries, linkEntry{kind: kind, ip: e.ip, proto: e.proto, port: e.port,
			target: gotoTarget(e.verdict), name: name, raw: e.raw})
	}
	defined := make(map[serviceKey]bool)
	for i := range p.elems {
		e := &p.elems[i]
		if e.mapName != "service-ips" || !isCluster(e) {
			continue
		}
		t := gotoTarget(e.verdict)
		if k := nftChainKind(t); k == kindSvc || k == kindSvl {
			add(e, entryCluster, nftServiceName(t))
			defined[svcKey(e.ip, e.proto, e.port)] = true
		}
	}
	lbIPs := make(map[serviceKey]bool)
	for i := range p.elems {
		if e := &p.elems[i]; e.mapName == "firewall-ips" {
			lbIPs[svcKey(e.ip, e.proto, e.port)] = true
			add(e, entryFirewall, "")
		}
	}
	for i := range p.elems {
		e := &p.elems[i]
		key := svcKey(e.ip, e.proto, e.port)
		switch {
		case e.mapName == "service-ips" && !isCluster(e):
			if lbIPs[key] {
				add(e, entryLB, "")
			} else {
				add(e, entryExternal, "")
			}
		case e.mapName == "service-nodeports":
			add(e, entryNodePort, "")
		case e.mapName == "no-endpoint-services" && (p.clusterIPs[e.ip] || len(p.clusterIPs) == 0 && !defined[key] && e.verdict == "goto reject-chain"):
			add(e, entryNoEndpoints, e.comment)
			defined[key] = true
		}
	}
	for i := range p.elems {
		switch e := &p.elems[i]; {
		case e.mapName == "no-endpoint-nodeports":
			add(e, entryNoEndpointsNodePort, e.comment)
		case e.mapName == "no-endpoint-services" && len(p.clusterIPs) > 0 && !p.clusterIPs[e.ip]:
			add(e, entryNoEndpointsExternal, e.comment)
		}
	}
	for chain, sets := range p.affinitySets {
		c := p.chains[chain]
		for _, set := range sets {
			if t := p.setTimeout[set]; t > c.affinitySeconds {
				c.affinitySeconds = t
			}
		}
	}
	if p.masq.HairpinSet {
		p.hairpinSet = p.hairpin
	}
}
