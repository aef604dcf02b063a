package netops

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
	"strings"
)

// svcBuild is a service being assembled, with what its raw form needs.
type svcBuild struct {
	svc Service
	// chains are the service's own chains, in the order --raw prints them.
	chains []string
	// entries index the parser's entries that belong to the service.
	entries []int
}

// finish assembles the services that sel selects, in serviceOrder, and
// lists the rules not understood that belong to no service (those inside
// a service's chains are in its Raw).
func (p *iptParser) finish(backend Backend, sel *serviceSelector) (svcs []Service, unknown []string) {
	builds := p.link(backend)
	var slab []Endpoint
	for _, b := range builds {
		p.fillEndpoints(b, &slab)
	}
	return p.collect(builds, sel)
}

// collect copies the assembled services that sel selects into a slice in
// serviceOrder, each once, and lists the rules not understood that belong
// to no service.
func (p *iptParser) collect(builds []*svcBuild, sel *serviceSelector) (svcs []Service, unknown []string) {
	var owned map[string]bool
	if p.keepRaw {
		owned = make(map[string]bool)
	}
	picked := make([]*svcBuild, 0, len(builds))
	for _, b := range builds {
		if p.keepRaw {
			for _, c := range b.chains {
				owned[c] = true
			}
			for _, e := range b.svc.Endpoints {
				owned[e.Chain] = true
			}
		}
		if !sel.match(&b.svc) {
			continue
		}
		if p.keepRaw {
			b.svc.Raw = p.rawOf(b)
		}
		picked = append(picked, b)
	}
	order := serviceOrder(len(picked), func(i int) *Service { return &picked[i].svc })
	svcs = make([]Service, len(order))
	for i, k := range order {
		svcs[i] = picked[k].svc
	}
	if !p.keepRaw {
		return svcs, nil
	}
	unknown = append(unknown, p.foreignUnknown...)
	var chained []string
	for name, rc := range p.raws {
		if !owned[name] {
			for _, r := range rc.unknown {
				chained = append(chained, "*nat "+r)
			}
		}
	}
	slices.Sort(chained)
	return svcs, append(unknown, chained...)
}

// endpointSlab is how many endpoints endpoints allocates room for at once.
const endpointSlab = 4096

// link makes a service of each cluster-IP entry and links the other
// entries and the service chains to it, without endpoints. Chains are
// mapped to services through the jumps only (KUBE-SERVICES → KUBE-SVC,
// KUBE-EXT → KUBE-SVC, ...), never through comments; the shared hash
// suffix of a service's chains is the last resort for a chain reached from
// nowhere else.
func (p *iptParser) link(backend Backend) []*svcBuild {
	n := len(p.entries)
	builds := make([]*svcBuild, 0, n)
	// owner maps each service chain to its service.
	owner := make(map[string]*svcBuild, n)
	byKey := make(map[serviceKey]*svcBuild, n)
	// One allocation for all builds: a service per entry at most.
	slab := make([]svcBuild, 0, n)

	newBuild := func(e *iptEntry) *svcBuild {
		slab = append(slab, svcBuild{svc: Service{
			ClusterIP: e.ip,
			Port:      e.port,
			Protocol:  upperProto(e.proto),
			Endpoints: []Endpoint{},
			Backend:   backend,
			Family:    p.family,
		}})
		b := &slab[len(slab)-1]
		setName(&b.svc, e.name)
		builds = append(builds, b)
		byKey[svcKey(e.ip, e.proto, e.port)] = b
		return b
	}

	// 1. Cluster IPs define the services.
	for i := range p.entries {
		e := &p.entries[i]
		if e.kind != entryCluster {
			continue
		}
		if b := byKey[svcKey(e.ip, e.proto, e.port)]; b != nil {
			b.entries = append(b.entries, i)
			continue
		}
		b := newBuild(e)
		b.entries = append(b.entries, i)
		b.svc.Chain = e.target
		owner[e.target] = b
		b.chains = append(b.chains, e.target)
		if classifyChain(e.target) == kindSvl {
			b.svc.LocalPolicy = true
			b.svc.LocalChain = e.target
		}
	}

	// 2. External, load-balancer and node-port entries reach a service
	// through its KUBE-EXT/KUBE-FW/KUBE-XLB chains.
	for i := range p.entries {
		e := &p.entries[i]
		switch e.kind {
		case entryExternal, entryLB, entryNodePort:
		default:
			continue
		}
		b := p.resolve(e.target, owner)
		if b == nil {
			continue
		}
		b.entries = append(b.entries, i)
		switch e.kind {
		case entryExternal:
			b.svc.ExternalIPs = appendUnique(b.svc.ExternalIPs, e.ip)
		case entryLB:
			b.svc.LoadBalancerIPs = appendUnique(b.svc.LoadBalancerIPs, e.ip)
		case entryNodePort:
			b.svc.NodePorts = appendUniqueInt(b.svc.NodePorts, e.port)
		}
	}

	// 3. Old masquerade rules and the filter table's REJECTs.
	byExternal := make(map[serviceKey]*svcBuild)
	byNodePort := make(map[serviceKey]*svcBuild)
	for _, b := range builds {
		for _, ip := range append(append([]string(nil), b.svc.ExternalIPs...), b.svc.LoadBalancerIPs...) {
			byExternal[svcKey(ip, b.svc.Protocol, b.svc.Port)] = b
		}
		for _, np := range b.svc.NodePorts {
			byNodePort[svcKey("", b.svc.Protocol, np)] = b
		}
	}
	// The REJECTs first, so that a masquerade rule finds a service that
	// only has a REJECT whichever table was read first.
	for i := range p.entries {
		if e := &p.entries[i]; e.kind == entryNoEndpoints {
			b := byKey[svcKey(e.ip, e.proto, e.port)]
			if b == nil {
				b = newBuild(e)
			}
			b.svc.NoEndpoints = true
			b.entries = append(b.entries, i)
		}
	}
	for i := range p.entries {
		e := &p.entries[i]
		switch e.kind {
		case entryMasq:
			key := svcKey(e.ip, e.proto, e.port)
			if b := byKey[key]; b != nil {
				b.entries = append(b.entries, i)
			} else if b := byExternal[key]; b != nil {
				b.entries = append(b.entries, i)
			}
		case entryNodePortMasq:
			if b := byNodePort[svcKey("", e.proto, e.port)]; b != nil {
				b.entries = append(b.entries, i)
			}
		}
	}
	// The filter table's external REJECTs name their service; the index
	// by name is built only when there is one (10,000 keys to join).
	var byName map[string]*svcBuild
	for i := range p.entries {
		e := &p.entries[i]
		if e.kind != entryNoEndpointsExternal && e.kind != entryNoEndpointsNodePort {
			continue
		}
		if byName == nil {
			byName = make(map[string]*svcBuild, len(builds))
			for _, b := range builds {
				if b.svc.Name != "" {
					byName[portName(&b.svc)+"/"+b.svc.Protocol] = b
				}
			}
		}
		b := byName[e.name+"/"+strings.ToUpper(e.proto)]
		if b == nil {
			continue
		}
		b.entries = append(b.entries, i)
		if e.kind == entryNoEndpointsNodePort {
			b.svc.NodePorts = appendUniqueInt(b.svc.NodePorts, e.port)
		} else if !contains(b.svc.LoadBalancerIPs, e.ip) {
			b.svc.ExternalIPs = appendUnique(b.svc.ExternalIPs, e.ip)
		}
	}
	return builds
}

func (p *iptParser) fillEndpoints(b *svcBuild, slab *[]Endpoint) {
	if b.svc.Chain == "" {
		return
	}
	c := p.chains[b.svc.Chain]
	if c == nil {
		return
	}
	if b.svc.Name == "" && c.svcName != "" {
		setName(&b.svc, c.svcName)
	}
	b.svc.SessionAffinitySeconds = c.affinitySeconds
	b.svc.Endpoints = p.endpoints(c, slab)
	if b.svc.Name == "" {
		for _, ch := range b.chains {
			if cc := p.chains[ch]; cc != nil && cc.svcName != "" {
				setName(&b.svc, cc.svcName)
				break
			}
		}
	}
}

// resolve finds the service a chain belongs to, following its jumps
// (KUBE-FW → KUBE-EXT → KUBE-SVC/KUBE-SVL, KUBE-XLB → KUBE-SVC) and
// recording every chain on the way as the service's.
func (p *iptParser) resolve(chain string, owner map[string]*svcBuild) *svcBuild {
	if b := owner[chain]; b != nil {
		return b
	}
	var path []string
	var found *svcBuild
	seen := map[string]bool{}
	queue := []string{chain}
	for len(queue) > 0 && found == nil && len(seen) < 16 {
		ch := queue[0]
		queue = queue[1:]
		if seen[ch] {
			continue
		}
		seen[ch] = true
		if b := owner[ch]; b != nil {
			found = b
			break
		}
		path = append(path, ch)
		if c := p.chains[ch]; c != nil {
			queue = append(queue, c.links...)
		}
	}
	if found == nil {
		// The hash after the prefix is shared by a service's chains.
		if _, hash, ok := strings.Cut(strings.TrimPrefix(chain, "KUBE-"), "-"); ok {
			for _, prefix := range []string{"KUBE-SVC-", "KUBE-SVL-"} {
				if b := owner[prefix+hash]; b != nil {
					found = b
					break
				}
			}
		}
	}
	if found == nil {
		return nil
	}
	for _, ch := range path {
		owner[ch] = found
		found.chains = append(found.chains, ch)
		switch classifyChain(ch) {
		case kindExt:
			found.svc.ExternalChain = ch
			if c := p.chains[ch]; c != nil && c.localShape {
				found.svc.LocalPolicy = true
			}
		case kindFw:
			found.svc.FirewallChain = ch
		case kindSvl, kindXlb:
			found.svc.LocalPolicy = true
			found.svc.LocalChain = ch
		}
		// A local-policy chain reached from here (KUBE-EXT → KUBE-SVL).
		if c := p.chains[ch]; c != nil {
			for _, l := range c.links {
				if k := classifyChain(l); (k == kindSvl || k == kindXlb) && owner[l] == nil {
					owner[l] = found
					found.chains = append(found.chains, l)
					found.svc.LocalPolicy = true
					found.svc.LocalChain = l
				}
			}
		}
	}
	return found
}

// endpoints reads a dispatch chain's jumps into endpoints, in room taken
// from slab: one allocation for thousands of services' endpoints, not one
// each.
func (p *iptParser) endpoints(c *iptChain, slab *[]Endpoint) []Endpoint {
	n := len(c.jumps)
	if n == 0 {
		return []Endpoint{}
	}
	if len(*slab) < n {
		*slab = make([]Endpoint, max(n, endpointSlab))
	}
	// Capped: an append to one service's endpoints never runs into the
	// next one's.
	eps := (*slab)[:0:n]
	*slab = (*slab)[n:]
	remaining := 1.0
	for _, j := range c.jumps {
		ep := Endpoint{Chain: j.chain(), Probability: j.prob}
		share := remaining * j.prob
		remaining -= share
		ep.Share = roundShare(share)
		sep := j.to
		if sep == nil {
			sep = p.seps[j.sep]
		}
		if sep != nil {
			ep.IP, ep.Port = sep.ip, int(sep.port)
			ep.SessionAffinity = sep.affinity
			if !sep.dnat && j.epComment != "" {
				// A flushed endpoint chain: the comment still says where.
				if ip, port, ok := splitHostPort(j.epComment); ok {
					ep.IP, ep.Port = ip, port
				}
			}
			if sep.dnat {
				ep.HairpinMasq = sep.hairpin
			} else {
				ep.HairpinMasq = sep.hairpinSrc != "" && sameIP(sep.hairpinSrc, ep.IP)
			}
		} else if ip, port, ok := splitHostPort(j.epComment); ok && j.epComment != "" {
			ep.IP, ep.Port = ip, port
		}
		eps = append(eps, ep)
	}
	return eps
}

// rawOf gathers a service's rules: its KUBE-SERVICES and KUBE-NODEPORTS
// entries, its chains, then its filter-table rules.
//
// The order does not depend on the order the rules were read in (a dump
// sorts chains by name, a targeted read goes by need): KUBE-SERVICES rules,
// KUBE-NODEPORTS rules, the dispatch chain, the local, external and
// firewall chains, then the endpoint chains in the dispatch order.
func (p *iptParser) rawOf(b *svcBuild) []string {
	entries := slices.Clone(b.entries)
	slices.SortStableFunc(entries, func(x, y int) int {
		ex, ey := &p.entries[x], &p.entries[y]
		return cmp.Or(cmp.Compare(ex.from, ey.from), cmp.Compare(x, y))
	})
	var nat, filter []string
	for _, i := range entries {
		if e := &p.entries[i]; e.raw != "" {
			if e.filter {
				filter = append(filter, e.raw)
			} else {
				nat = append(nat, e.raw)
			}
		}
	}
	chains := []string{b.svc.Chain, b.svc.LocalChain, b.svc.ExternalChain, b.svc.FirewallChain}
	for _, ch := range b.chains {
		if classifyChain(ch) != kindSep {
			chains = append(chains, ch)
		}
	}
	for _, e := range b.svc.Endpoints {
		chains = append(chains, e.Chain)
	}
	seen := make(map[string]bool, len(chains))
	for _, ch := range chains {
		if ch == "" || seen[ch] {
			continue
		}
		seen[ch] = true
		if rc := p.raws[ch]; rc != nil {
			nat = append(nat, rc.rules...)
		}
	}
	var out []string
	if len(nat) > 0 {
		out = append(append(out, "*nat"), nat...)
	}
	if len(filter) > 0 {
		out = append(append(out, "*filter"), filter...)
	}
	return out
}

// roundShare keeps six decimals: iptables stores probabilities in 32 bits,
// so more digits are noise.
func roundShare(f float64) float64 {
	return math.Round(f*1e6) / 1e6
}

// setName fills namespace, name and port name from "ns/name:port".
func setName(s *Service, n string) {
	if n == "" {
		return
	}
	ns, rest, _ := strings.Cut(n, "/")
	name, port, _ := strings.Cut(rest, ":")
	s.Namespace, s.Name, s.PortName = ns, name, port
}

// portName is "ns/name:port" (or "ns/name" for an unnamed port).
func portName(s *Service) string {
	n := s.Namespace + "/" + s.Name
	if s.PortName != "" {
		n += ":" + s.PortName
	}
	return n
}

// upperProto spells a protocol as Kubernetes does (TCP, UDP, SCTP).
func upperProto(p string) string {
	switch p {
	case "tcp":
		return "TCP"
	case "udp":
		return "UDP"
	case "sctp":
		return "SCTP"
	}
	return strings.ToUpper(p)
}

// serviceKey identifies a service port by address; addresses come from
// one tool's output, so their spelling is consistent.
type serviceKey struct {
	ip    string
	proto string
	port  int
}

func svcKey(ip, proto string, port int) serviceKey {
	if len(proto) > 0 && proto[0] >= 'A' && proto[0] <= 'Z' {
		proto = strings.ToLower(proto)
	}
	return serviceKey{ip, proto, port}
}

// sameIP compares two addresses, whatever their spelling.
func sameIP(a, b string) bool {
	if a == b {
		return true
	}
	x, err1 := netip.ParseAddr(a)
	y, err2 := netip.ParseAddr(b)
	return err1 == nil && err2 == nil && x == y
}

func appendUnique(s []string, v string) []string {
	if v == "" || contains(s, v) {
		return s
	}
	return append(s, v)
}

func appendUniqueInt(s []int, v int) []int {
	if v == 0 || containsInt(s, v) {
		return s
	}
	return append(s, v)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
