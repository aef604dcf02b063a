package kubeproxy

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops"
)

// famProbe is what a quick look found for one address family, without
// reading any rules.
type famProbe struct {
	family int
	// nftIPT: iptables-nft's nat table has KUBE-SERVICES (asked over netlink).
	nftIPT bool
	// nftFilter: iptables-nft's filter table has a kube chain to read.
	nftFilter bool
	// legacyNat: an x_tables nat table exists, so iptables-legacy may hold
	// kube-proxy's rules; legacyFilter likewise for the filter table.
	legacyNat, legacyFilter bool
	// nftables: the kube-proxy table of nftables mode exists.
	nftables bool
}

// probe looks at every backend for family: nf_tables over netlink, the
// legacy x_tables through /proc/net/ip{,6}_tables_names. Neither runs a
// binary or changes anything: listing a legacy table that does not exist
// yet would create it in the namespace.
func probeFamily(c *netops.Client, family int) (*famProbe, error) {
	pr := &famProbe{family: family}
	conn, err := nftConn(c)
	if err != nil {
		return nil, err
	}
	defer conn.CloseLasting()
	if pr.nftIPT, err = nftChainExists(conn, family, "nat", "KUBE-SERVICES"); err != nil {
		return nil, err
	}
	for _, ch := range []string{"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"} {
		ok, err := nftChainExists(conn, family, "filter", ch)
		if err != nil {
			return nil, err
		}
		pr.nftFilter = pr.nftFilter || ok
	}
	if pr.nftables, err = nftTableExists(conn, family, "kube-proxy"); err != nil {
		return nil, err
	}
	names := "ip_tables_names"
	if family == 6 {
		names = "ip6_tables_names"
	}
	err = c.Do(func() error {
		// thread-self: the namespace of this thread, which Do moved.
		b, err := os.ReadFile("/proc/thread-self/net/" + names)
		if err != nil {
			return nil // x_tables not loaded: no legacy tables anywhere
		}
		for _, t := range bytes.Fields(b) {
			switch string(t) {
			case "nat":
				pr.legacyNat = true
			case "filter":
				pr.legacyFilter = true
			}
		}
		return nil
	})
	return pr, err
}

// DetectBackends reports, for family (4, 6, or 0 for both), which backends
// hold kube-proxy's Service NAT, without reading it: iptables-nft and
// nftables mode are asked over netlink; iptables-legacy, when an x_tables
// nat table exists, with one `iptables-legacy -t nat -S KUBE-SERVICES`
// that waits at most waitSeconds for the xtables lock. A backend that
// could not be checked has Error set; only an unusable namespace or
// missing privileges fail the call.
func DetectBackends(c *netops.Client, family, waitSeconds int) ([]BackendProbe, error) {
	fams, err := servicesFamilies(family)
	if err != nil {
		return nil, err
	}
	if !netops.HasNetAdmin() {
		return nil, netops.Errorf(netops.ErrPermission, "reading kube-proxy's rules needs CAP_NET_ADMIN: run as root")
	}
	var out []BackendProbe
	for _, fam := range fams {
		pr, err := probeFamily(c, fam)
		if err != nil {
			return nil, err
		}
		nft := BackendProbe{Backend: BackendIPTablesNFT, Family: fam, HasRules: pr.nftIPT}
		leg := BackendProbe{Backend: BackendIPTablesLegacy, Family: fam}
		if pr.legacyNat {
			n, found, err := countServicesRules(c, iptablesFor(BackendIPTablesLegacy, fam), waitSeconds)
			if err != nil {
				leg.Error = err.Error()
			}
			leg.HasRules, leg.Rules = found, n
		}
		out = append(out, nft, leg, BackendProbe{Backend: BackendNFTables, Family: fam, HasRules: pr.nftables})
	}
	return out, nil
}

// countServicesRules counts KUBE-SERVICES rules in the nat table of one
// iptables backend, reporting whether the chain exists.
func countServicesRules(c *netops.Client, ib iptBackend, waitSeconds int) (int, bool, error) {
	ipt, err := ib.golang(waitSeconds)
	if err != nil {
		return 0, false, err
	}
	lines, err := listChain(c, ib, ipt, "nat", "KUBE-SERVICES", waitSeconds)
	if err != nil || len(lines) == 0 {
		return 0, false, err
	}
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			n++
		}
	}
	return n, true, nil
}

func servicesFamilies(family int) ([]int, error) {
	switch family {
	case 0:
		return []int{4, 6}, nil
	case 4:
		return []int{4}, nil
	case 6:
		return []int{6}, nil
	}
	return nil, netops.Errorf(netops.ErrInvalid, "address family %d: use 4, 6 or 0 for both", family)
}

func familiesLabel(fams []int) string {
	if len(fams) == 2 {
		return "IPv4 and IPv6"
	}
	return fmt.Sprintf("IPv%d", fams[0])
}

// Services reads kube-proxy's Service NAT in the client's namespace: the
// services (ClusterIP:port → endpoints), whether each endpoint's chain
// masquerades the endpoint's own traffic (the hairpin rule), and the
// masquerade plumbing.
//
// With Backend "auto" it looks at iptables-nft, iptables-legacy and
// nftables mode and reads the one that holds kube-proxy's rules, warning
// (in Warnings) when more than one does: kube-proxy may write to a
// different iptables backend than the host's default iptables, a known
// cause of "the rules are missing". A full read dumps the nat table with
// one iptables-save and parses it as it streams; a lookup filtered by
// ClusterIPs or Names on iptables-nft lists only the chains it needs.
//
// No kube-proxy rules in the backends looked at is an error that names
// them; a malformed filter is ErrInvalid; a held xtables lock is waited
// for WaitSeconds (at least 1) and then ErrTimeout.
func Services(c *netops.Client, o Options) (*Result, error) {
	sel, err := newServiceSelector(o.ClusterIPs, o.Names)
	if err != nil {
		return nil, err
	}
	fams, err := servicesFamilies(o.Family)
	if err != nil {
		return nil, err
	}
	backend := o.Backend
	if backend == "" {
		backend = BackendAuto
	}
	switch backend {
	case BackendAuto, BackendIPTables, string(BackendIPTablesNFT), string(BackendIPTablesLegacy), string(BackendNFTables):
	default:
		return nil, netops.Errorf(netops.ErrInvalid, "backend %q: use auto, iptables, iptables-nft, iptables-legacy or nftables", o.Backend)
	}
	if !netops.HasNetAdmin() {
		return nil, netops.Errorf(netops.ErrPermission, "reading kube-proxy's rules needs CAP_NET_ADMIN: run as root")
	}
	probes := make([]*famProbe, len(fams))
	for i, fam := range fams {
		if probes[i], err = probeFamily(c, fam); err != nil {
			return nil, err
		}
	}
	res := newServicesResult("")
	r := &servicesRead{c: c, o: o, sel: sel, fams: fams, probes: probes, res: res}
	if err := r.run(backend); err != nil {
		return nil, err
	}
	res.Unmatched = sel.unmatched()
	markLocal(c, res.Services)
	if res.Unparsed > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d %s rules not understood (kept: see --raw)", res.Unparsed, res.Backend))
	}
	return res, nil
}

// servicesRead is one Services call.
type servicesRead struct {
	c      *netops.Client
	o      Options
	sel    *serviceSelector
	fams   []int
	probes []*famProbe
	res    *Result
	// legacyHadRules: a legacy dump held KUBE-SERVICES.
	legacyHadRules bool
}

func (r *servicesRead) any(f func(*famProbe) bool) bool {
	for _, p := range r.probes {
		if f(p) {
			return true
		}
	}
	return false
}

func (r *servicesRead) run(backend string) error {
	hasNFT := r.any(func(p *famProbe) bool { return p.nftIPT })
	legacyMaybe := r.any(func(p *famProbe) bool { return p.legacyNat })
	hasNFTables := r.any(func(p *famProbe) bool { return p.nftables })
	res := r.res
	res.Checked = checkedBackends(backend)
	if hasNFT {
		res.BackendsWithRules = append(res.BackendsWithRules, BackendIPTablesNFT)
	}
	if hasNFTables && backend == BackendAuto {
		defer func() { res.BackendsWithRules = appendUniqueBackend(res.BackendsWithRules, BackendNFTables) }()
	}

	switch backend {
	case string(BackendIPTablesNFT):
		if !hasNFT {
			return r.none()
		}
		return r.readIPTables(BackendIPTablesNFT)
	case string(BackendIPTablesLegacy):
		if !legacyMaybe {
			return r.none()
		}
		if err := r.readIPTables(BackendIPTablesLegacy); err != nil {
			return err
		}
		if !r.legacyHadRules {
			return r.none()
		}
		return nil
	case string(BackendNFTables):
		if !hasNFTables {
			return r.none()
		}
		res.BackendsWithRules = appendUniqueBackend(res.BackendsWithRules, BackendNFTables)
		return r.readNFTables()
	}

	// auto or iptables: which iptables backend holds KUBE-SERVICES?
	chosen := Backend("")
	switch {
	case hasNFT && legacyMaybe:
		nftN, legN, legacyHas, err := r.countBoth()
		if err != nil {
			return err
		}
		chosen = BackendIPTablesNFT
		if legacyHas {
			res.BackendsWithRules = append(res.BackendsWithRules, BackendIPTablesLegacy)
			var warning string
			chosen, warning = splitBrain(nftN, legN, r.c.Spec())
			res.Warnings = append(res.Warnings, warning)
		}
	case hasNFT:
		chosen = BackendIPTablesNFT
	case legacyMaybe:
		// Read it: whether it holds KUBE-SERVICES shows in the dump.
		if err := r.readIPTables(BackendIPTablesLegacy); err != nil {
			return err
		}
		if r.legacyHadRules {
			res.BackendsWithRules = append(res.BackendsWithRules, BackendIPTablesLegacy)
			r.warnNFTables(hasNFTables && backend == BackendAuto)
			return nil
		}
		*res = *newServicesResultFrom(res)
	}
	if chosen != "" {
		r.warnNFTables(hasNFTables && backend == BackendAuto)
		return r.readIPTables(chosen)
	}
	if hasNFTables && backend == BackendAuto {
		return r.readNFTables()
	}
	return r.none()
}

// checkedBackends are the backends a read for backend looks at.
func checkedBackends(backend string) []Backend {
	switch backend {
	case BackendAuto:
		return []Backend{BackendIPTablesNFT, BackendIPTablesLegacy, BackendNFTables}
	case BackendIPTables:
		return []Backend{BackendIPTablesNFT, BackendIPTablesLegacy}
	default:
		return []Backend{Backend(backend)}
	}
}

// countBoth counts the KUBE-SERVICES rules of both iptables backends, for
// a node where both have a nat table, and says whether legacy's has the
// chain at all.
func (r *servicesRead) countBoth() (nftN, legN int, legacyHas bool, err error) {
	for _, fam := range r.fams {
		if p := r.probe(fam); p.legacyNat {
			n, found, err := countServicesRules(r.c, iptablesFor(BackendIPTablesLegacy, fam), r.o.WaitSeconds)
			if err != nil {
				return 0, 0, false, fmt.Errorf("check iptables-legacy for kube-proxy rules: %w", err)
			}
			legacyHas = legacyHas || found
			legN += n
		}
		if p := r.probe(fam); p.nftIPT {
			n := 0
			if err := nftRules(r.c, fam, "nat", "KUBE-SERVICES", func(nftRule) { n++ }); err != nil {
				return 0, 0, false, err
			}
			nftN += n
		}
	}
	return nftN, legN, legacyHas, nil
}

// newServicesResultFrom keeps what was learnt about backends and drops
// what a read added.
func newServicesResultFrom(old *Result) *Result {
	res := newServicesResult("")
	res.Checked, res.BackendsWithRules, res.Warnings = old.Checked, old.BackendsWithRules, old.Warnings
	return res
}

func (r *servicesRead) warnNFTables(both bool) {
	if both {
		r.res.Warnings = append(r.res.Warnings, "kube-proxy rules in both iptables and nftables mode (table kube-proxy); showing iptables: kube-proxy removes the mode it does not use when it starts, so one is stale "+r.c.SeeHint("services --backend nftables"))
	}
}

func (r *servicesRead) probe(fam int) *famProbe {
	for _, p := range r.probes {
		if p.family == fam {
			return p
		}
	}
	return &famProbe{family: fam}
}

// none is the error for "no kube-proxy rules where we looked".
func (r *servicesRead) none() error {
	names := make([]string, len(r.res.Checked))
	for i, b := range r.res.Checked {
		names[i] = string(b)
	}
	where := "this namespace"
	if !r.c.Own() {
		where = "netns " + r.c.NetnsLabel()
	}
	return fmt.Errorf("no kube-proxy rules found in %s (%s, checked: %s): is kube-proxy running, in ipvs mode, or on another namespace? (see: --netns, --backend)",
		where, familiesLabel(r.fams), strings.Join(names, ", "))
}

// readIPTables reads every family where backend may hold rules.
func (r *servicesRead) readIPTables(b Backend) error {
	r.res.Backend = b
	for _, fam := range r.fams {
		pr := r.probe(fam)
		if b == BackendIPTablesNFT && !pr.nftIPT || b == BackendIPTablesLegacy && !pr.legacyNat {
			continue
		}
		ib := iptablesFor(b, fam)
		p := newIPTParser(fam, r.o.Raw)
		done := false
		if r.sel != nil && b == BackendIPTablesNFT && !r.o.FullRead {
			tp, ok, err := readIPTablesTargeted(r.c, fam, pr, r.sel, r.o.Raw)
			if err != nil {
				return err
			}
			if done = ok; ok {
				p = tp
			}
		}
		switch {
		case done:
		case b == BackendIPTablesNFT:
			// iptables-nft's tables are in nf_tables: read over netlink.
			var err error
			if p, err = readIPTablesNFTKernel(r.c, fam, r.o.Raw); err != nil {
				return err
			}
		default:
			if err := readIPTablesFull(r.c, ib, p, pr, r.o.WaitSeconds); err != nil {
				return err
			}
		}
		if !p.hasServices {
			continue
		}
		if b == BackendIPTablesLegacy {
			r.legacyHadRules = true
		}
		p.into(r.res, r.sel)
	}
	return nil
}

func (r *servicesRead) readNFTables() error {
	r.res.Backend = BackendNFTables
	for _, fam := range r.fams {
		if !r.probe(fam).nftables {
			continue
		}
		if r.sel != nil && !r.o.FullRead {
			p, ok, err := readNFTKernelTargeted(r.c, fam, r.sel, r.o.Raw)
			if err != nil {
				return err
			}
			if ok {
				p.into(r.res, r.sel)
				continue
			}
		}
		p, err := readNFTKernel(r.c, fam, r.o.Raw)
		if err != nil {
			return err
		}
		p.into(r.res, r.sel)
	}
	return nil
}

func appendUniqueBackend(s []Backend, b Backend) []Backend {
	for _, x := range s {
		if x == b {
			return s
		}
	}
	return append(s, b)
}
