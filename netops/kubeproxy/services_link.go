package kubeproxy

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// This file is the one linker of kube-proxy's Service NAT. Both backends
// read their rules into the same form (linkInput): the rules that name a
// service by address (linkEntry), the per-service chains with their jumps
// to other chains and their dispatch to endpoints (linkChain, linkHop),
// and each endpoint's facts (linkEndpoint). What a rule means is the
// backend's to decide (an iptables KUBE-SEP's masquerade rule, nftables'
// hairpin-connections set, a statistic probability or numgen slots); the
// linker only joins: a cluster-IP entry defines a service, the other
// entries reach it through the chains they jump to, and the service's
// dispatch chain gives its endpoints.

// entryKind says what a linkEntry is to its service.
type entryKind uint8

const (
	entryCluster entryKind = iota
	entryExternal
	entryLB
	entryMasq // an old-style masquerade rule for a service address
	entryNodePort
	entryNodePortMasq
	entryNoEndpoints
	entryNoEndpointsExternal
	entryNoEndpointsNodePort
	// entryFirewall leads to a service's firewall chain without adding an
	// address (nftables' firewall-ips map).
	entryFirewall
)

// linkEntry is a rule (or map element) that names a service by address: a
// KUBE-SERVICES or KUBE-NODEPORTS jump, a filter-table REJECT, an element
// of nftables' service-ips map.
type linkEntry struct {
	kind   entryKind
	ip     string
	proto  string
	port   int
	target string
	name   string // ns/name:port, "" when the backend does not say
	raw    string
	// filter: the rule is in the second table --raw prints (iptables'
	// filter table).
	filter bool
	// rank orders --raw: entries print by rank, then in read order.
	rank uint8
}

// linkChain summarises one per-service chain: dispatch (SVC, SVL, XLB),
// external (EXT) or firewall (FW). A node holds one per service port and
// traffic policy.
type linkChain struct {
	name string
	// hops are the dispatch chain's endpoints, in order.
	hops []linkHop
	// modulus: the hops carry numgen slots out of modulus (nftables);
	// 0 when they carry statistic probabilities (iptables).
	modulus         int
	affinitySeconds int
	// links are jumps and gotos to other service chains (EXT→SVC,
	// FW→EXT, XLB→SVC).
	links []string
	// svcName is "ns/name:port" from any comment in the chain.
	svcName string
	// localShape: an external chain of externalTrafficPolicy Local, which
	// routes the node's own traffic specially even when no endpoint is
	// local (so there is no local chain).
	localShape bool
}

// linkHop is one endpoint of a dispatch chain: its endpoint chain, or an
// address the dispatch chain DNATs to itself.
type linkHop struct {
	ep   *linkEndpoint
	ip   string
	port int32
	// weight is the numgen slots (with a modulus), prob the statistic
	// probability of reaching the rule (without).
	weight int32
	prob   float64
}

// linkEndpoint is what a backend decided about one endpoint chain.
type linkEndpoint struct {
	name     string
	ip       string
	port     int32
	affinity bool
	// hairpin: a connection from the endpoint to itself is masqueraded.
	hairpin bool
}

// linkRaw holds a chain's rules verbatim, in raw mode only; unknown are
// the ones not understood, as the unknown-rule list prints them.
type linkRaw struct {
	rules, unknown []string
}

// linkInput is what a backend read of one address family, for the linker.
type linkInput struct {
	backend Backend
	family  int
	keepRaw bool
	// kindOf classifies the backend's chain names; dispatchOf names the
	// dispatch chains (cluster, local policy) that share a chain's hash, a
	// chain reached from nowhere else belonging to their service.
	kindOf     func(name string) chainKind
	dispatchOf func(chain string) (svc, svl string, ok bool)
	// stableRaw: the read order depends on how the rules were read (a
	// dump or a targeted read), so --raw lists a service's chains by role
	// and the unknown rules sorted, not in read order.
	stableRaw bool
	// rawTables head the two tables' rules in --raw ("" for none).
	rawTables [2]string

	entries []linkEntry
	chains  map[string]*linkChain
	raws    map[string]*linkRaw
	// rawOrder lists the chains of raws in read order.
	rawOrder []string
	// foreignUnknown are rules not understood outside any service chain.
	foreignUnknown []string
	// hairpinSet holds "ip proto port" of the endpoints whose connections
	// to themselves a set masquerades (nil when none does).
	hairpinSet map[string]bool
}

// raw returns a chain's raw rules, creating them.
func (in *linkInput) raw(chain string) *linkRaw {
	rc := in.raws[chain]
	if rc == nil {
		rc = &linkRaw{}
		in.raws[chain] = rc
		in.rawOrder = append(in.rawOrder, chain)
	}
	return rc
}

// svcBuild is a service being assembled, with what its raw form needs.
type svcBuild struct {
	svc Service
	// chains are the service's own chains, in the order they were reached.
	chains []string
	// entries index the entries that belong to the service.
	entries []int
}

// link assembles the services that sel selects, in serviceOrder, and
// lists the rules not understood that belong to no service (those inside
// a service's chains are in its Raw).
func (in *linkInput) link(sel *serviceSelector) (svcs []Service, unknown []string) {
	builds := in.join()
	var slab []Endpoint
	for _, b := range builds {
		in.fillEndpoints(b, &slab)
	}
	return in.collect(builds, sel)
}

// collect copies the assembled services that sel selects into a slice in
// serviceOrder, each once, and lists the rules not understood that belong
// to no service.
func (in *linkInput) collect(builds []*svcBuild, sel *serviceSelector) (svcs []Service, unknown []string) {
	var owned map[string]bool
	if in.keepRaw {
		owned = make(map[string]bool)
	}
	picked := make([]*svcBuild, 0, len(builds))
	for _, b := range builds {
		if in.keepRaw {
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
		if in.keepRaw {
			b.svc.Raw = in.rawOf(b)
		}
		picked = append(picked, b)
	}
	order := serviceOrder(len(picked), func(i int) *Service { return &picked[i].svc })
	svcs = make([]Service, len(order))
	for i, k := range order {
		svcs[i] = picked[k].svc
	}
	if !in.keepRaw {
		return svcs, nil
	}
	unknown = append(unknown, in.foreignUnknown...)
	var chained []string
	for _, name := range in.rawOrder {
		if !owned[name] {
			chained = append(chained, in.raws[name].unknown...)
		}
	}
	if in.stableRaw {
		slices.Sort(chained)
	}
	return svcs, append(unknown, chained...)
}

// endpointSlab is how many endpoints endpoints allocates room for at once.
const endpointSlab = 4096

// join makes a service of each cluster-IP entry and links the other
// entries and the service chains to it, without endpoints. Chains are
// mapped to services through the jumps only (KUBE-SERVICES → KUBE-SVC,
// KUBE-EXT → KUBE-SVC, ...), never through comments; the shared hash
// of a service's chains is the last resort for a chain reached from
// nowhere else.
func (in *linkInput) join() []*svcBuild {
	n := len(in.entries)
	j := &joiner{
		in:     in,
		builds: make([]*svcBuild, 0, n),
		owner:  make(map[string]*svcBuild, n),
		byKey:  make(map[serviceKey]*svcBuild, n),
		slab:   make([]svcBuild, 0, n),
	}
	j.clusterIPs()
	j.externals()
	// The no-endpoint entries before the masquerade rules, so that a
	// masquerade rule finds a service that only has a REJECT whichever
	// table was read first; the masquerade indexes are built before both.
	byExternal, byNodePort := j.masqIndexes()
	j.noEndpoints()
	j.masquerades(byExternal, byNodePort)
	j.namedNoEndpoints()
	return j.builds
}

// joiner holds the services join builds and the indexes its steps share.
type joiner struct {
	in     *linkInput
	builds []*svcBuild
	// owner maps each service chain to its service.
	owner map[string]*svcBuild
	byKey map[serviceKey]*svcBuild
	// slab is one allocation for all builds: a service per entry at most.
	slab []svcBuild
}

// newBuild makes the service an entry defines.
func (j *joiner) newBuild(e *linkEntry) *svcBuild {
	j.slab = append(j.slab, svcBuild{svc: Service{
		ClusterIP: e.ip,
		Port:      e.port,
		Protocol:  upperProto(e.proto),
		Endpoints: []Endpoint{},
		Backend:   j.in.backend,
		Family:    j.in.family,
	}})
	b := &j.slab[len(j.slab)-1]
	setName(&b.svc, e.name)
	j.builds = append(j.builds, b)
	j.byKey[svcKey(e.ip, e.proto, e.port)] = b
	return b
}

// clusterIPs makes the services: cluster IPs define them.
func (j *joiner) clusterIPs() {
	in := j.in
	for i := range in.entries {
		e := &in.entries[i]
		if e.kind != entryCluster {
			continue
		}
		if b := j.byKey[svcKey(e.ip, e.proto, e.port)]; b != nil {
			b.entries = append(b.entries, i)
			continue
		}
		b := j.newBuild(e)
		b.entries = append(b.entries, i)
		b.svc.Chain = e.target
		j.owner[e.target] = b
		b.chains = append(b.chains, e.target)
		if in.kindOf(e.target) == kindSvl {
			b.svc.LocalPolicy = true
			b.svc.LocalChain = e.target
		}
	}
}

// externals links the external, load-balancer, node-port and firewall
// entries, which reach a service through its external, firewall and local
// chains.
func (j *joiner) externals() {
	in := j.in
	for i := range in.entries {
		e := &in.entries[i]
		switch e.kind {
		case entryExternal, entryLB, entryNodePort, entryFirewall:
		default:
			continue
		}
		b := in.resolve(e.target, j.owner)
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
}

// masqIndexes indexes the services by external or load-balancer IP and by
// node port, for the old masquerade rules.
func (j *joiner) masqIndexes() (byExternal, byNodePort map[serviceKey]*svcBuild) {
	byExternal = make(map[serviceKey]*svcBuild)
	byNodePort = make(map[serviceKey]*svcBuild)
	for _, b := range j.builds {
		for _, ip := range append(append([]string(nil), b.svc.ExternalIPs...), b.svc.LoadBalancerIPs...) {
			byExternal[svcKey(ip, b.svc.Protocol, b.svc.Port)] = b
		}
		for _, np := range b.svc.NodePorts {
			byNodePort[svcKey("", b.svc.Protocol, np)] = b
		}
	}
	return byExternal, byNodePort
}

// noEndpoints links the "has no endpoints" entries of cluster IPs, making
// the service when only the REJECT names it.
func (j *joiner) noEndpoints() {
	in := j.in
	for i := range in.entries {
		if e := &in.entries[i]; e.kind == entryNoEndpoints {
			b := j.byKey[svcKey(e.ip, e.proto, e.port)]
			if b == nil {
				b = j.newBuild(e)
			}
			b.svc.NoEndpoints = true
			b.entries = append(b.entries, i)
		}
	}
}

// masquerades links the old masquerade rules by cluster IP, external IP
// or node port.
func (j *joiner) masquerades(byExternal, byNodePort map[serviceKey]*svcBuild) {
	in := j.in
	for i := range in.entries {
		e := &in.entries[i]
		switch e.kind {
		case entryMasq:
			key := svcKey(e.ip, e.proto, e.port)
			if b := j.byKey[key]; b != nil {
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
}

// namedNoEndpoints links the external and node-port no-endpoint entries,
// which name their service; the index by name is built only when there is
// one (10,000 keys to join).
func (j *joiner) namedNoEndpoints() {
	in := j.in
	var byName map[string]*svcBuild
	for i := range in.entries {
		e := &in.entries[i]
		if e.kind != entryNoEndpointsExternal && e.kind != entryNoEndpointsNodePort {
			continue
		}
		if byName == nil {
			byName = make(map[string]*svcBuild, len(j.builds))
			for _, b := range j.builds {
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
		} else if !slices.Contains(b.svc.LoadBalancerIPs, e.ip) {
			b.svc.ExternalIPs = appendUnique(b.svc.ExternalIPs, e.ip)
		}
	}
}

// fillEndpoints gives a service its dispatch chain's endpoints, its
// affinity, and a name from the chains' comments when the entries had none.
func (in *linkInput) fillEndpoints(b *svcBuild, slab *[]Endpoint) {
	if b.svc.Chain == "" {
		return
	}
	c := in.chains[b.svc.Chain]
	if c == nil {
		return
	}
	if b.svc.Name == "" && c.svcName != "" {
		setName(&b.svc, c.svcName)
	}
	b.svc.SessionAffinitySeconds = c.affinitySeconds
	b.svc.Endpoints = in.endpoints(c, b.svc.Protocol, slab)
	if b.svc.Name == "" {
		for _, ch := range b.chains {
			if cc := in.chains[ch]; cc != nil && cc.svcName != "" {
				setName(&b.svc, cc.svcName)
				break
			}
		}
	}
}

// resolve finds the service a chain belongs to, following its jumps
// (KUBE-FW → KUBE-EXT → KUBE-SVC/KUBE-SVL, KUBE-XLB → KUBE-SVC) and
// recording every chain on the way as the service's.
func (in *linkInput) resolve(chain string, owner map[string]*svcBuild) *svcBuild {
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
		if c := in.chains[ch]; c != nil {
			queue = append(queue, c.links...)
		}
	}
	if found == nil {
		if svc, svl, ok := in.dispatchOf(chain); ok {
			if found = owner[svc]; found == nil {
				found = owner[svl]
			}
		}
	}
	if found == nil {
		return nil
	}
	for _, ch := range path {
		owner[ch] = found
		found.chains = append(found.chains, ch)
		switch in.kindOf(ch) {
		case kindExt:
			found.svc.ExternalChain = ch
			if c := in.chains[ch]; c != nil && c.localShape {
				found.svc.LocalPolicy = true
			}
		case kindFw:
			found.svc.FirewallChain = ch
		case kindSvl, kindXlb:
			found.svc.LocalPolicy = true
			found.svc.LocalChain = ch
		}
		// A local-policy chain reached from here (KUBE-EXT → KUBE-SVL).
		if c := in.chains[ch]; c != nil {
			for _, l := range c.links {
				if k := in.kindOf(l); (k == kindSvl || k == kindXlb) && owner[l] == nil {
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

// endpoints reads a dispatch chain's hops into endpoints, in room taken
// from slab: one allocation for thousands of services' endpoints, not one
// each. proto is the service's, for the hairpin set.
func (in *linkInput) endpoints(c *linkChain, proto string, slab *[]Endpoint) []Endpoint {
	n := len(c.hops)
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
	for _, h := range c.hops {
		var ep Endpoint
		if c.modulus > 0 {
			// numgen: each endpoint owns slots out of the modulus.
			ep.Weight = int(h.weight)
			ep.Share = roundShare(float64(h.weight) / float64(c.modulus))
			ep.Probability = ep.Share
		} else {
			// statistic: each rule takes its probability of what the
			// rules before it left.
			share := remaining * h.prob
			remaining -= share
			ep.Probability, ep.Share = h.prob, roundShare(share)
		}
		if e := h.ep; e != nil {
			ep.Chain, ep.IP, ep.Port = e.name, e.ip, int(e.port)
			ep.SessionAffinity, ep.HairpinMasq = e.affinity, e.hairpin
		} else {
			ep.IP, ep.Port = h.ip, int(h.port)
		}
		if !ep.HairpinMasq && in.hairpinSet != nil {
			ep.HairpinMasq = in.hairpinSet[hairpinKey(ep.IP, proto, ep.Port)]
		}
		eps = append(eps, ep)
	}
	return eps
}

// rawOf gathers a service's rules: its entries, then its chains, then its
// entries in the second table.
//
// With stableRaw the order does not depend on the order the rules were
// read in (a dump sorts chains by name, a targeted read goes by need):
// KUBE-SERVICES rules, KUBE-NODEPORTS rules, the dispatch chain, the
// local, external and firewall chains, then the endpoint chains in the
// dispatch order. Without, the chains come in the order they were reached.
func (in *linkInput) rawOf(b *svcBuild) []string {
	entries := slices.Clone(b.entries)
	slices.SortStableFunc(entries, func(x, y int) int {
		ex, ey := &in.entries[x], &in.entries[y]
		return cmp.Or(cmp.Compare(ex.rank, ey.rank), cmp.Compare(x, y))
	})
	var first, second []string
	for _, i := range entries {
		if e := &in.entries[i]; e.raw != "" {
			if e.filter {
				second = append(second, e.raw)
			} else {
				first = append(first, e.raw)
			}
		}
	}
	var chains []string
	if in.stableRaw {
		chains = []string{b.svc.Chain, b.svc.LocalChain, b.svc.ExternalChain, b.svc.FirewallChain}
		for _, ch := range b.chains {
			if in.kindOf(ch) != kindSep {
				chains = append(chains, ch)
			}
		}
	} else {
		chains = slices.Clone(b.chains)
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
		if rc := in.raws[ch]; rc != nil {
			first = append(first, rc.rules...)
		}
	}
	var out []string
	for t, rules := range [][]string{first, second} {
		if len(rules) == 0 {
			continue
		}
		if in.rawTables[t] != "" {
			out = append(out, in.rawTables[t])
		}
		out = append(out, rules...)
	}
	return out
}

// hairpinKey is a hairpinSet key.
func hairpinKey(ip, proto string, port int) string {
	return ip + " " + strings.ToLower(proto) + " " + strconv.Itoa(port)
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
	if v == "" || slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

func appendUniqueInt(s []int, v int) []int {
	if v == 0 || slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}
