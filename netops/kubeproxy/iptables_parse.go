package kubeproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
)

// This file reads iptables-save text (and `iptables -S CHAIN` lines) into
// a compact summary of kube-proxy's chains, one line at a time: a node
// with 10,000 services has about 60,000 chains and 170,000 rules, so the
// text is never held whole and only what the model needs is kept.
//
// What iptables-save prints is normalised from what kube-proxy wrote:
// options come in the kernel's order (-s -d -p before matches), addresses
// gain /32 or /128, probabilities print with 11 decimals, --or-mark comes
// back as --set-xmark, and comments are quoted or bare depending on the
// iptables version. The parser therefore reads every rule as a bag of
// options, never by position, and maps chains through jumps: kube-proxy
// drops the endpoint comments on clusters with over 1000 endpoints.

// maxRuleLine bounds one line; longer lines are counted as not understood.
const maxRuleLine = 1 << 20

// chainKind classifies kube-proxy's chains by name prefix.
type chainKind uint8

const (
	kindOther       chainKind = iota
	kindSvc                   // KUBE-SVC-: cluster traffic policy, dispatch to endpoints
	kindSvl                   // KUBE-SVL-: local traffic policy
	kindXlb                   // KUBE-XLB-: local policy before Kubernetes 1.24
	kindExt                   // KUBE-EXT-: external traffic (node ports, external and LB IPs)
	kindFw                    // KUBE-FW-: load-balancer source ranges
	kindSep                   // KUBE-SEP-: one endpoint
	kindServices              // KUBE-SERVICES
	kindNodePorts             // KUBE-NODEPORTS
	kindMarkMasq              // KUBE-MARK-MASQ
	kindPostrouting           // KUBE-POSTROUTING
	kindExternal              // KUBE-EXTERNAL-SERVICES (filter)
	kindQuiet                 // kube chains that carry no service data
	kindBuiltin               // PREROUTING, POSTROUTING, ...
	kindForeign               // not kube-proxy's
)

func classifyChain(name string) chainKind { return classifyChainBytes([]byte(name)) }

// classifyChainBytes is classifyChain without converting to a string: it
// runs for every rule of a dump.
func classifyChainBytes(name []byte) chainKind {
	switch {
	case bytes.HasPrefix(name, []byte("KUBE-SVC-")):
		return kindSvc
	case bytes.HasPrefix(name, []byte("KUBE-SEP-")):
		return kindSep
	case bytes.HasPrefix(name, []byte("KUBE-SVL-")):
		return kindSvl
	case bytes.HasPrefix(name, []byte("KUBE-EXT-")):
		return kindExt
	case bytes.HasPrefix(name, []byte("KUBE-FW-")):
		return kindFw
	case bytes.HasPrefix(name, []byte("KUBE-XLB-")):
		return kindXlb
	}
	switch string(name) {
	case "KUBE-SERVICES":
		return kindServices
	case "KUBE-NODEPORTS":
		return kindNodePorts
	case "KUBE-MARK-MASQ":
		return kindMarkMasq
	case "KUBE-POSTROUTING":
		return kindPostrouting
	case "KUBE-EXTERNAL-SERVICES":
		return kindExternal
	case "KUBE-MARK-DROP", "KUBE-FORWARD", "KUBE-FIREWALL", "KUBE-PROXY-FIREWALL",
		"KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY", "KUBE-IPTABLES-HINT":
		return kindQuiet
	case "PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING":
		return kindBuiltin
	}
	if bytes.HasPrefix(name, []byte("KUBE-")) {
		return kindOther
	}
	return kindForeign
}

// iptRule is one rule's options as byte slices into the line being parsed;
// they are valid only while that line is handled.
type iptRule struct {
	chain, src, dst, proto, dport, comment, target, toDest   []byte
	prob, seconds, markVal, setMark                          []byte
	srcNeg, dstNeg, markNeg, hasProb, recentSet, recentCheck bool
	// srcLocal and dstLocal are the addrtype matches: 0 none, 1 LOCAL,
	// -1 ! LOCAL, 2 another type.
	srcLocal, dstLocal int8
	masquerade         bool
	// extra: an option outside kube-proxy's vocabulary (-i, LOG, ...).
	extra bool
}

// iptSep summarises one endpoint chain (KUBE-SEP), kept small: a dump
// holds one per endpoint, five times as many as services. It is created
// by the first of its rules or of the jumps to it that is read.
type iptSep struct {
	linkEndpoint
	// hairpinSrc is the -s of the KUBE-MARK-MASQ rule; dnat: ip and port
	// are the DNAT destination rather than a jump's comment.
	hairpinSrc string
	dnat       bool
}

// decide works out the hairpin masquerade once either of its two rules is
// read: traffic from the endpoint's own address is marked for masquerade.
// A flushed endpoint chain (no DNAT) still tells where its jump's comment
// said.
func (s *iptSep) decide() {
	s.hairpin = s.hairpinSrc != "" && sameIP(s.hairpinSrc, s.ip)
}

// jumpRoom is how many jumps a dispatch chain gets room for when its first
// is read (more grow as a slice does): growing each chain's jumps from one
// was a tenth of parsing the KUBE-SVC chains.
const jumpRoom = 8

// iptParser accumulates iptables-save text of one address family.
type iptParser struct {
	linkInput
	table string

	seps     map[string]*iptSep
	masq     MasqueradePlumbing
	unparsed int
	// sepSlab allocates endpoint summaries 1024 at a time; jumpSlab a
	// dispatch chain's first jumpRoom jumps, for many chains at a time.
	sepSlab  []iptSep
	jumpSlab []linkHop
	// declared counts a dump's nat chain declarations by kind, to size
	// the maps before its rules arrive.
	declaredSeps, declaredChains int
	// hasServices: a KUBE-SERVICES chain was seen in the nat table.
	hasServices bool

	scratch []byte
	toks    [][]byte

	// The chain of the previous rule, and its summaries.
	cur      []byte
	curTable string
	curKind  chainKind
	curName  string
	curChain *linkChain
	curSep   *iptSep
}

func newIPTParser(family int, keepRaw bool) *iptParser {
	p := &iptParser{linkInput: linkInput{
		family: family, keepRaw: keepRaw, chains: make(map[string]*linkChain),
		kindOf: classifyChain, dispatchOf: iptDispatchChains,
		stableRaw: true, rawTables: [2]string{"*nat", "*filter"},
	}, seps: make(map[string]*iptSep)}
	if keepRaw {
		p.raws = make(map[string]*linkRaw)
	}
	return p
}

// iptDispatchChains names the KUBE-SVC and KUBE-SVL chains that share a
// chain's hash: kube-proxy names one service port's chains alike.
func iptDispatchChains(chain string) (svc, svl string, ok bool) {
	_, hash, ok := strings.Cut(strings.TrimPrefix(chain, "KUBE-"), "-")
	return "KUBE-SVC-" + hash, "KUBE-SVL-" + hash, ok
}

// errLineTooLong is returned by readLine for lines over maxRuleLine.
var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its newline. A line longer than
// maxRuleLine is skipped and reported with errLineTooLong.
func readLine(br *bufio.Reader, buf []byte) ([]byte, []byte, error) {
	line, err := br.ReadSlice('\n')
	if err == nil || (err == io.EOF && len(line) > 0) {
		return bytes.TrimRight(line, "\r\n"), buf, nil
	}
	if err != bufio.ErrBufferFull {
		return nil, buf, err
	}
	buf = append(buf[:0], line...)
	for {
		line, err = br.ReadSlice('\n')
		if len(buf)+len(line) > maxRuleLine {
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			if err != nil && err != io.EOF {
				return nil, buf, err
			}
			return nil, buf, errLineTooLong
		}
		buf = append(buf, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil && err != io.EOF {
			return nil, buf, err
		}
		return bytes.TrimRight(buf, "\r\n"), buf, nil
	}
}

// feed reads iptables-save text: "*table", ":CHAIN", "-A CHAIN ...",
// "COMMIT" and comment lines. It never fails on content: a line it cannot
// read is counted; only a read error is returned.
func (p *iptParser) feed(r io.Reader) error {
	return eachLine(r, func() { p.unparsed++ }, p.line)
}

// lineBuffer is the size of the buffered reader over a dump.
const lineBuffer = 256 << 10

// eachLine calls fn with every line of r, without its line ending, in a
// buffer reused for the next line; a line over maxRuleLine calls tooLong
// instead. It returns only a read error.
func eachLine(r io.Reader, tooLong func(), fn func(line []byte)) error {
	br := bufio.NewReaderSize(r, lineBuffer)
	var buf []byte
	for {
		line, b, err := readLine(br, buf)
		buf = b
		switch {
		case err == errLineTooLong:
			tooLong()
		case err == io.EOF:
			return nil
		case err != nil:
			return err
		default:
			fn(line)
		}
	}
}

// feedLines reads `iptables -t table -S CHAIN` output.
func (p *iptParser) feedLines(table string, lines []string) {
	p.table = table
	for _, l := range lines {
		p.line([]byte(l))
	}
}

// line reads one line of iptables-save or -S output: a table, a chain
// declaration, a rule or COMMIT, one case each, the rule case handing the
// rule to its chain's kind (hence its length).
func (p *iptParser) line(line []byte) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] == '#' {
		return
	}
	switch line[0] {
	case '*':
		p.table = string(line[1:])
		return
	case ':':
		// A chain declaration: ":KUBE-SVC-X - [0:0]".
		if p.table == "nat" {
			name, _, _ := bytes.Cut(line[1:], []byte(" "))
			switch classifyChainBytes(name) {
			case kindServices:
				p.hasServices = true
			case kindSep:
				p.declaredSeps++
			case kindSvc, kindSvl, kindXlb, kindExt, kindFw:
				p.declaredChains++
			}
		}
		return
	case '[':
		// iptables-save -c puts "[packets:bytes]" before the rule.
		if i := bytes.IndexByte(line, ']'); i > 0 {
			line = bytes.TrimSpace(line[i+1:])
		}
	}
	if bytes.Equal(line, []byte("COMMIT")) || bytes.HasPrefix(line, []byte("-P ")) || bytes.HasPrefix(line, []byte("-N ")) {
		if bytes.HasPrefix(line, []byte("-N KUBE-SERVICES")) && p.table == "nat" {
			p.hasServices = true
		}
		return
	}
	if !bytes.HasPrefix(line, []byte("-A ")) {
		p.unparsed++
		if p.keepRaw {
			p.foreignUnknown = append(p.foreignUnknown, string(line))
		}
		return
	}
	if p.declaredSeps+p.declaredChains > 0 && len(p.seps) == 0 && len(p.chains) == 0 {
		// The first rule of a dump: size the maps for the chains declared.
		p.seps = make(map[string]*iptSep, p.declaredSeps)
		p.chains = make(map[string]*linkChain, p.declaredChains)
		p.sepSlab = make([]iptSep, 0, p.declaredSeps)
		p.declaredSeps, p.declaredChains = 0, 0
	}
	var r iptRule
	ok := p.parseRule(line, &r)
	// A dump lists a chain's rules together: classify and intern its name
	// once per chain, not once per rule.
	if !bytes.Equal(r.chain, p.cur) || p.curTable != p.table {
		p.cur = append(p.cur[:0], r.chain...)
		p.curTable = p.table
		p.curKind = classifyChainBytes(r.chain)
		p.curName = ""
		if p.curKind != kindForeign {
			p.curName = string(r.chain)
		}
	}
	kind := p.curKind
	if kind == kindForeign {
		return
	}
	chain := p.curName
	if p.table == "nat" && kind == kindServices {
		p.hasServices = true
	}
	serviceChain := false
	if p.table == "nat" {
		switch kind {
		case kindSvc, kindSvl, kindXlb, kindExt, kindFw:
			p.chain(chain)
			serviceChain = true
		case kindSep:
			p.sep(chain)
			serviceChain = true
		}
	}
	known := ok && !r.extra && p.handle(kind, chain, &r, line)
	if kind == kindBuiltin || kind == kindQuiet {
		// Other tools' jumps from built-in chains are none of ours, and
		// kube chains without service data are known by name.
		return
	}
	if !known {
		p.unparsed++
	}
	if !p.keepRaw {
		return
	}
	raw := string(line)
	if serviceChain {
		rc := p.raw(chain)
		rc.rules = append(rc.rules, raw)
		if !known {
			rc.unknown = append(rc.unknown, "*nat "+raw)
		}
		return
	}
	if !known {
		p.foreignUnknown = append(p.foreignUnknown, "*"+p.table+" "+raw)
	}
}

// chain returns the summary of a service-related chain, creating it.
func (p *iptParser) chain(name string) *linkChain {
	if p.curChain != nil && p.curChain.name == name {
		return p.curChain
	}
	c := p.chains[name]
	if c == nil {
		c = &linkChain{name: name}
		p.chains[name] = c
	}
	p.curChain = c
	return c
}

// sep returns the summary of an endpoint chain, creating it.
func (p *iptParser) sep(name string) *iptSep {
	if p.curSep != nil && p.curSep.name == name {
		return p.curSep
	}
	c := p.seps[name]
	if c == nil {
		if len(p.sepSlab) == cap(p.sepSlab) {
			p.sepSlab = make([]iptSep, 0, 1024)
		}
		p.sepSlab = append(p.sepSlab, iptSep{linkEndpoint: linkEndpoint{name: name}})
		c = &p.sepSlab[len(p.sepSlab)-1]
		p.seps[name] = c
	}
	p.curSep = c
	return c
}

// handle files one rule and reports whether it was understood: one case
// per chain kind and target, kept as one switch (hence its length).
func (p *iptParser) handle(kind chainKind, chain string, r *iptRule, line []byte) bool {
	target := r.target
	tkind := classifyChainBytes(target)
	switch kind {
	case kindBuiltin:
		if p.table == "nat" && string(target) == "KUBE-POSTROUTING" && chain == "POSTROUTING" {
			p.masq.PostroutingHooked = true
		}
		return true
	case kindQuiet:
		return true
	case kindMarkMasq:
		if string(target) == "MARK" && len(r.setMark) > 0 {
			p.masq.MarkMasq = true
			v, _, _ := bytes.Cut(r.setMark, []byte("/"))
			p.masq.Mark = string(v)
			return true
		}
	case kindPostrouting:
		switch {
		case r.masquerade:
			p.masq.PostroutingMasquerade = true
			return true
		case string(target) == "RETURN" && len(r.markVal) > 0 && r.markNeg:
			return true
		case string(target) == "MARK":
			return true
		}
	case kindServices, kindNodePorts, kindExternal:
		return p.handleEntry(kind, r, line)
	case kindSvc, kindSvl, kindXlb:
		c := p.chain(chain)
		p.nameFrom(c, r.comment)
		switch {
		case string(target) == "KUBE-MARK-MASQ":
			return true
		case string(target) == "KUBE-MARK-DROP":
			return true
		case tkind == kindSep && r.recentCheck:
			if n, err := strconv.Atoi(string(r.seconds)); err == nil {
				c.affinitySeconds = n
			}
			return true
		case tkind == kindSep:
			h := linkHop{prob: 1}
			if r.hasProb {
				f, err := strconv.ParseFloat(string(r.prob), 64)
				if err != nil || f < 0 || f > 1 {
					return false
				}
				h.prob = f
			}
			// The endpoint chain is shared with its jumps; in a dump it
			// was read first (KUBE-SEP sorts before KUBE-SVC).
			sep := p.seps[string(target)]
			if sep == nil {
				sep = p.sep(string(target))
			}
			h.ep = &sep.linkEndpoint
			if !sep.dnat {
				// Not (yet) read, or flushed: the comment says where.
				if _, ep, found := bytes.Cut(r.comment, []byte(" -> ")); found {
					if ip, port, ok := splitHostPort(string(ep)); ok {
						sep.ip, sep.port = ip, int32(port)
						sep.decide()
					}
				}
			}
			if c.hops == nil {
				if len(p.jumpSlab) < jumpRoom {
					p.jumpSlab = make([]linkHop, 512*jumpRoom)
				}
				c.hops, p.jumpSlab = p.jumpSlab[:0:jumpRoom], p.jumpSlab[jumpRoom:]
			}
			c.hops = append(c.hops, h)
			return true
		case kind == kindXlb && (tkind == kindSvc || tkind == kindSvl):
			c.links = append(c.links, string(target))
			return true
		}
	case kindExt, kindFw:
		c := p.chain(chain)
		p.nameFrom(c, r.comment)
		switch {
		case string(target) == "KUBE-MARK-MASQ", string(target) == "KUBE-MARK-DROP":
			return true
		case len(target) == 0 && kind == kindFw:
			// "other traffic to ns/svc:port will be dropped by KUBE-PROXY-FIREWALL"
			return true
		case tkind == kindSvc || tkind == kindSvl || tkind == kindExt || tkind == kindXlb:
			if kind == kindExt && r.srcLocal == 1 {
				c.localShape = true
			}
			c.links = appendUnique(c.links, string(target))
			return true
		}
	case kindSep:
		c := p.sep(chain)
		switch {
		case string(target) == "KUBE-MARK-MASQ" && len(r.src) > 0 && !r.srcNeg:
			c.hairpinSrc = trimHostMask(string(r.src))
			c.decide()
			return true
		case string(target) == "DNAT" && len(r.toDest) > 0:
			ip, port, ok := splitHostPort(string(r.toDest))
			if !ok {
				return false
			}
			c.ip, c.port, c.dnat = ip, int32(port), true
			c.affinity = r.recentSet
			c.decide()
			return true
		}
	}
	return false
}

// handleEntry files a KUBE-SERVICES, KUBE-NODEPORTS or
// KUBE-EXTERNAL-SERVICES rule: one case per target kind (hence its length).
func (p *iptParser) handleEntry(kind chainKind, r *iptRule, line []byte) bool {
	target := string(r.target)
	tkind := classifyChain(target)
	e := linkEntry{ip: trimHostMask(string(r.dst)), proto: strings.ToLower(string(r.proto)), filter: p.table == "filter", rank: uint8(kind)}
	if len(r.dport) > 0 {
		n, err := strconv.Atoi(string(r.dport))
		if err != nil || n <= 0 || n > 65535 {
			return false
		}
		e.port = n
	}
	name, rest := commentName(r.comment)
	e.name = name
	if p.keepRaw {
		e.raw = string(line)
	}
	if p.table == "filter" {
		switch {
		case target == "ACCEPT" && kind == kindNodePorts:
			return true // a health-check node port
		case target != "REJECT" && target != "DROP":
			return false
		case strings.Contains(rest, "has no local endpoints") || strings.HasPrefix(rest, "traffic not accepted"):
			// DROPs for externalTrafficPolicy Local and the firewall: the
			// nat rules describe these services already.
			return true
		case !strings.Contains(rest, "has no endpoints") && (target != "REJECT" || r.comment != nil):
			// Without a comment kube-proxy's REJECT is still recognisable.
			return target == "DROP" && r.comment == nil
		case e.port == 0:
			return false
		case kind == kindServices && e.ip != "" && !r.dstNeg:
			e.kind = entryNoEndpoints
		case kind == kindExternal && e.ip != "" && !r.dstNeg:
			e.kind = entryNoEndpointsExternal
		case kind == kindExternal && r.dstLocal == 1:
			e.kind = entryNoEndpointsNodePort
		default:
			return false
		}
		p.entries = append(p.entries, e)
		return true
	}
	if p.table != "nat" {
		return false
	}
	switch {
	case target == "KUBE-NODEPORTS" && kind == kindServices:
		return true
	case kind == kindNodePorts && target == "KUBE-MARK-MASQ" && e.port > 0:
		e.kind = entryNodePortMasq
	case kind == kindNodePorts && e.port > 0 && (tkind == kindSvc || tkind == kindSvl || tkind == kindExt || tkind == kindXlb || tkind == kindFw):
		e.kind = entryNodePort
	case kind != kindServices || e.ip == "" || r.dstNeg || e.port == 0:
		return false
	case target == "KUBE-MARK-MASQ":
		e.kind = entryMasq
	case tkind == kindFw:
		e.kind = entryLB
	case strings.HasSuffix(rest, "loadbalancer IP"):
		e.kind = entryLB
	case strings.HasSuffix(rest, "external IP"):
		e.kind = entryExternal
	case strings.HasSuffix(rest, "cluster IP"):
		e.kind = entryCluster
	case tkind == kindExt || tkind == kindXlb:
		e.kind = entryExternal
	case tkind == kindSvc || tkind == kindSvl:
		// No comment: old external-IP rules carry addrtype or physdev
		// matches, the cluster-IP rule never does.
		if r.srcLocal != 0 || r.dstLocal != 0 {
			e.kind = entryExternal
		} else {
			e.kind = entryCluster
		}
	default:
		return false
	}
	if e.kind != entryMasq && e.kind != entryNodePortMasq {
		e.target = string(r.target)
	}
	p.entries = append(p.entries, e)
	return true
}

// nameFrom remembers the first service name seen in a chain's comments.
func (p *iptParser) nameFrom(c *linkChain, comment []byte) {
	if c.svcName != "" || len(comment) == 0 {
		return
	}
	if n, _ := commentName(comment); n != "" {
		c.svcName = n
	}
}

// commentName splits a kube-proxy comment into the service port name
// ("ns/name:port" or "ns/name") and the rest: "ns1/svc1:p80 cluster IP",
// "ns1/svc1:p80 -> 10.1.2.3:80", "masquerade traffic for ns/svc:p
// external destinations" (name found inside).
func commentName(c []byte) (name, rest string) {
	if len(c) == 0 {
		return "", ""
	}
	s := string(c)
	first, rest, _ := strings.Cut(s, " ")
	if isServicePortName(first) {
		return first, rest
	}
	for _, w := range strings.Fields(s) {
		if isServicePortName(w) {
			return w, s
		}
	}
	return "", s
}

// isServicePortName reports whether s looks like "ns/name" or
// "ns/name:port" (DNS labels, a port name of [a-z0-9-]).
func isServicePortName(s string) bool {
	ns, rest, ok := strings.Cut(s, "/")
	if !ok || ns == "" {
		return false
	}
	name, port, _ := strings.Cut(rest, ":")
	return name != "" && isDNSish(ns) && isDNSish(name) && isDNSish(port)
}

func isDNSish(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c >= 'A' && c <= 'Z' || c == '_') {
			return false
		}
	}
	return true
}

// trimHostMask drops a /32 or /128 that iptables-save adds to host addresses.
func trimHostMask(s string) string {
	if strings.HasSuffix(s, "/32") && !strings.Contains(s, ":") {
		return s[:len(s)-3]
	}
	if strings.HasSuffix(s, "/128") {
		return s[:len(s)-4]
	}
	return s
}

// splitHostPort splits a DNAT destination: "10.1.2.3:80", "[fd00::1]:80",
// or an address without a port (port 0).
func splitHostPort(s string) (string, int, bool) {
	if strings.HasPrefix(s, "[") {
		host, rest, ok := strings.Cut(s[1:], "]")
		if !ok {
			return "", 0, false
		}
		if rest == "" {
			return host, 0, true
		}
		if !strings.HasPrefix(rest, ":") {
			return "", 0, false
		}
		n, err := strconv.Atoi(rest[1:])
		if err != nil || n < 0 || n > 65535 {
			return "", 0, false
		}
		return host, n, true
	}
	if strings.Count(s, ":") > 1 {
		return s, 0, true // a bare IPv6 address
	}
	host, port, found := strings.Cut(s, ":")
	if !found {
		return host, 0, true
	}
	// A range ("80-90") is not kube-proxy's.
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, false
	}
	return host, n, true
}

// tokenize splits a rule line into words; a double-quoted word may hold
// spaces and \" or \\ escapes. It reports false for an unterminated quote.
func (p *iptParser) tokenize(line []byte) bool {
	p.toks = p.toks[:0]
	p.scratch = p.scratch[:0]
	// iptables-save separates words with single spaces; hand-written
	// text may use tabs or runs of blanks, which the slow path handles.
	fast := bytes.IndexByte(line, '\t') < 0
	i := 0
	for i < len(line) {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		if i >= len(line) {
			break
		}
		if line[i] != '"' {
			var j int
			if fast {
				j = bytes.IndexByte(line[i:], ' ')
				if j < 0 {
					j = len(line)
				} else {
					j += i
				}
			} else {
				j = i
				for j < len(line) && line[j] != ' ' && line[j] != '\t' {
					j++
				}
			}
			p.toks = append(p.toks, line[i:j])
			i = j
			continue
		}
		// Quoted: find the closing quote, unescaping into scratch only
		// when there is an escape.
		j := i + 1
		esc := false
		for j < len(line) && line[j] != '"' {
			if line[j] == '\\' && j+1 < len(line) {
				esc = true
				j++
			}
			j++
		}
		if j >= len(line) {
			return false
		}
		if !esc {
			p.toks = append(p.toks, line[i+1:j])
		} else {
			start := len(p.scratch)
			for k := i + 1; k < j; k++ {
				if line[k] == '\\' && k+1 < j {
					k++
				}
				p.scratch = append(p.scratch, line[k])
			}
			// parseRule reserved scratch for the whole line, so it never
			// moves and earlier tokens stay valid.
			p.toks = append(p.toks, p.scratch[start:len(p.scratch):len(p.scratch)])
		}
		i = j + 1
	}
	return true
}

// parseRule reads "-A CHAIN options..." into r. It reports false when the
// line cannot be read at all (an unterminated quote, an option without its
// value); r.extra marks options outside kube-proxy's vocabulary. One pass
// over the line with a case per option, which share the cursor and the
// negation state (hence its length).
func (p *iptParser) parseRule(line []byte, r *iptRule) bool {
	// Reserve scratch so that unescaped comments never move it.
	if cap(p.scratch) < len(line) {
		p.scratch = make([]byte, 0, len(line)+64)
	}
	if !p.tokenize(line) {
		if len(p.toks) >= 2 {
			r.chain = p.toks[1]
		}
		return false
	}
	t := p.toks
	if len(t) < 2 {
		return false
	}
	r.chain = t[1]
	ok := true
	// value returns the option's value, taking an old-style "! " after
	// the option ("-s ! 10.0.0.0/8") as negation.
	value := func(i *int, neg *bool) []byte {
		if *i+1 >= len(t) {
			ok = false
			return nil
		}
		*i++
		if string(t[*i]) == "!" && neg != nil && *i+1 < len(t) {
			*neg = true
			*i++
		}
		return t[*i]
	}
	for i := 2; i < len(t); i++ {
		neg := false
		if string(t[i]) == "!" {
			neg = true
			i++
			if i >= len(t) {
				return false
			}
		}
		switch string(t[i]) {
		case "-s", "--source":
			r.src = value(&i, &neg)
			r.srcNeg = neg
		case "-d", "--destination":
			r.dst = value(&i, &neg)
			r.dstNeg = neg
		case "-p", "--protocol":
			r.proto = value(&i, &neg)
			if neg {
				r.extra = true
			}
		case "-m", "--match":
			switch string(value(&i, nil)) {
			case "comment", "tcp", "udp", "sctp", "statistic", "recent", "addrtype", "physdev", "mark", "conntrack", "nfacct":
			default:
				r.extra = true
			}
		case "--comment":
			r.comment = value(&i, nil)
		case "--dport", "--destination-port":
			r.dport = value(&i, nil)
			if neg {
				r.extra = true
			}
		case "--mode":
			if string(value(&i, nil)) != "random" {
				r.extra = true
			}
		case "--probability":
			r.prob = value(&i, nil)
			r.hasProb = true
		case "--name", "--mask", "--nfacct-name", "--ctstate", "--state", "--reject-with":
			value(&i, nil)
		case "--seconds":
			r.seconds = value(&i, nil)
		case "--set":
			r.recentSet = true
		case "--rcheck":
			r.recentCheck = true
		case "--reap", "--rsource", "--physdev-is-in", "--physdev-is-out", "--physdev-is-bridged", "--random", "--random-fully", "--persistent":
		case "--mark":
			r.markVal = value(&i, nil)
			r.markNeg = neg
		case "--src-type":
			r.srcLocal = addrType(value(&i, nil), neg)
		case "--dst-type":
			r.dstLocal = addrType(value(&i, nil), neg)
		case "-j", "--jump", "-g", "--goto":
			r.target = value(&i, nil)
			if string(r.target) == "MASQUERADE" {
				r.masquerade = true
			}
		case "--to-destination":
			r.toDest = value(&i, nil)
		case "--set-xmark", "--or-mark", "--set-mark":
			r.setMark = value(&i, nil)
		case "--xor-mark", "--and-mark":
			value(&i, nil)
		default:
			// Unknown: skip its values so the rest still reads.
			r.extra = true
			for i+1 < len(t) && (len(t[i+1]) == 0 || t[i+1][0] != '-') && string(t[i+1]) != "!" {
				i++
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func addrType(v []byte, neg bool) int8 {
	if string(v) != "LOCAL" {
		return 2
	}
	if neg {
		return -1
	}
	return 1
}
