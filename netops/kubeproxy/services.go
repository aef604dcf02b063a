package kubeproxy

import (
	"net/netip"

	"github.com/hairpinctl/hairpinctl/netops/pods"
)

// Backend names a place kube-proxy keeps its Service NAT.
type Backend string

// The backends hairpinctl reads.
const (
	// BackendIPTablesNFT is iptables-nft: iptables rules stored in nf_tables.
	BackendIPTablesNFT Backend = "iptables-nft"
	// BackendIPTablesLegacy is iptables-legacy: the x_tables kernel API.
	BackendIPTablesLegacy Backend = "iptables-legacy"
	// BackendNFTables is kube-proxy's nftables mode: tables "ip kube-proxy"
	// and "ip6 kube-proxy".
	BackendNFTables Backend = "nftables"
)

// Options selects what Services reads.
type Options struct {
	// Backend is "auto" (or empty), "iptables" (whichever iptables backend
	// holds KUBE-SERVICES), "iptables-nft", "iptables-legacy" or "nftables".
	Backend string
	// Family is 4, 6, or 0 for both.
	Family int
	// ClusterIPs and Names filter services; empty selects all. An address
	// is "IP" or "IP:PORT", a name "ns/name" or "ns/name:port" (see
	// ParseServiceArg).
	ClusterIPs []string
	Names      []string
	// Raw keeps the rules of each selected service verbatim.
	Raw bool
	// Wait bounds how long to wait for the xtables lock.
	WaitSeconds int
	// FullRead reads the whole table even for a filtered lookup, which on
	// iptables-nft and in nftables mode otherwise reads only the chains
	// (and maps) it needs.
	FullRead bool
}

// Result is kube-proxy's Service NAT as read from one backend.
type Result struct {
	// Backend is the backend read.
	Backend Backend `json:"backend"`
	// BackendsWithRules lists every backend found holding kube-proxy rules;
	// more than one iptables backend is a split brain.
	BackendsWithRules []Backend `json:"backendsWithRules"`
	// Checked lists every backend looked at.
	Checked []Backend `json:"checked"`
	// Masquerade describes the masquerade plumbing found.
	Masquerade MasqueradePlumbing `json:"masquerade"`
	// Services are the service ports.
	Services []Service `json:"services"`
	// Unparsed counts rules that were kept but not understood.
	Unparsed int `json:"unparsed"`
	// Warnings are one-line remarks for stderr (split brain, ...).
	Warnings []string `json:"warnings"`
	// UnparsedRules are the rules counted in Unparsed that belong to no
	// service, verbatim (only with Options.Raw).
	UnparsedRules []string `json:"unparsedRules,omitempty"`
	// Families lists the address families read, 4 and/or 6.
	Families []int `json:"families"`
	// Unmatched lists the ClusterIPs and Names filters that selected
	// nothing.
	Unmatched []string `json:"unmatched,omitempty"`
}

// MasqueradePlumbing is the part of kube-proxy's NAT that masquerades
// marked packets: without it a hairpin connection's reply bypasses the node.
type MasqueradePlumbing struct {
	// MarkMasq: the KUBE-MARK-MASQ chain sets the masquerade mark
	// (nftables: the mark-for-masquerade chain, or, in releases without it,
	// the rules that set the mark themselves).
	MarkMasq bool `json:"markMasq"`
	// PostroutingMasquerade: KUBE-POSTROUTING masquerades marked packets
	// (nftables: the masquerading chain).
	PostroutingMasquerade bool `json:"postroutingMasquerade"`
	// Mark is the mark value, e.g. "0x4000".
	Mark string `json:"mark,omitempty"`
	// PostroutingHooked: the POSTROUTING hook jumps to KUBE-POSTROUTING
	// (nftables: nat-postrouting jumps to masquerading); without the jump
	// the masquerade rule never runs.
	PostroutingHooked bool `json:"postroutingHooked"`
	// HairpinSet (nftables mode, releases without endpoint chains): the
	// masquerading chain masquerades DNATed connections listed in the
	// hairpin-connections set, which holds podIP . podIP . proto . port for
	// each of this node's endpoints. There the hairpin masquerade needs no
	// mark, and mark-for-masquerade does not exist.
	HairpinSet bool `json:"hairpinSet,omitempty"`
}

// Service is one service port as kube-proxy programmed it.
type Service struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// PortName is the service port's name, "" for an unnamed port.
	PortName  string `json:"portName"`
	Protocol  string `json:"protocol"`
	ClusterIP string `json:"clusterIP"`
	Port      int    `json:"port"`
	// Chain is the KUBE-SVC-… chain (nftables: service-… chain).
	Chain string `json:"chain"`
	// Endpoints in kube-proxy's order.
	Endpoints []Endpoint `json:"endpoints"`
	// NoEndpoints: kube-proxy rejects traffic ("has no endpoints").
	NoEndpoints bool `json:"noEndpoints,omitempty"`
	// NodePorts, ExternalIPs, LoadBalancerIPs where present.
	NodePorts       []int    `json:"nodePorts,omitempty"`
	ExternalIPs     []string `json:"externalIPs,omitempty"`
	LoadBalancerIPs []string `json:"loadBalancerIPs,omitempty"`
	// LocalPolicy: externalTrafficPolicy/internalTrafficPolicy Local (KUBE-SVL/KUBE-XLB/KUBE-EXT chains).
	LocalPolicy bool `json:"localPolicy,omitempty"`
	// SessionAffinity: ClientIP affinity seconds, 0 when none.
	SessionAffinitySeconds int `json:"sessionAffinitySeconds,omitempty"`
	// Raw is the service's rules verbatim (with Raw): iptables-save syntax
	// with "*nat"/"*filter" lines marking the table, or `nft -f` syntax.
	Raw []string `json:"raw,omitempty"`
	// Backend is where the service was read.
	Backend Backend `json:"backend"`
	// Family is 4 or 6.
	Family int `json:"family"`
	// LocalChain, ExternalChain and FirewallChain are the service's
	// KUBE-SVL/KUBE-XLB, KUBE-EXT and KUBE-FW chains (nftables: local-,
	// external- and firewall- chains) where present.
	LocalChain    string `json:"localChain,omitempty"`
	ExternalChain string `json:"externalChain,omitempty"`
	FirewallChain string `json:"firewallChain,omitempty"`
}

// Endpoint is one backend pod of a service port.
type Endpoint struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
	// Probability is the statistic-match probability of reaching this
	// endpoint's rule (iptables), 1 for the last; nftables mode gives Weight.
	Probability float64 `json:"probability"`
	// Chain is the KUBE-SEP-… chain (nftables: endpoint-… chain).
	Chain string `json:"chain"`
	// HairpinMasq: the endpoint's chain marks traffic from the endpoint
	// itself for masquerade (-s podIP -j KUBE-MARK-MASQ).
	HairpinMasq bool `json:"hairpinMasq"`
	// SessionAffinity: the endpoint chain records the client (-m recent).
	SessionAffinity bool `json:"sessionAffinity"`
	// Share is the fraction of new connections (without affinity) that
	// reach this endpoint: iptables multiplies the statistic probabilities
	// down the chain, nftables divides the endpoint's numgen slots by the
	// modulus. In nftables mode Probability equals Share.
	Share float64 `json:"share"`
	// Weight is the endpoint's number of numgen slots (nftables mode only).
	Weight int `json:"weight,omitempty"`
	// Local: the endpoint is on this node (its address is in a subnet of
	// one of the namespace's bridges), false when it is on another node;
	// unset when the namespace has no bridge to tell by. HairpinMasq
	// applies only to a local endpoint: kube-proxy's nftables mode
	// (1.36+) writes the hairpin masquerade for this node's endpoints
	// only, and another node's endpoint is masqueraded by its own node.
	Local *bool `json:"local,omitempty"`
	// Pod is the pod behind this node's bridge port that holds the
	// endpoint's IP (see NameEndpoints), with where its name came from;
	// absent for another node's endpoint and for one nothing names.
	Pod *pods.Pod `json:"pod,omitempty"`
}

// NameEndpoints fills Endpoint.Pod of svcs from byIP (PodsByIP of the
// ports listed with their pods).
func NameEndpoints(svcs []Service, byIP map[netip.Addr]*pods.Pod) {
	if len(byIP) == 0 {
		return
	}
	for i := range svcs {
		for j := range svcs[i].Endpoints {
			ep := &svcs[i].Endpoints[j]
			if a, err := netip.ParseAddr(ep.IP); err == nil {
				ep.Pod = byIP[a.Unmap()]
			}
		}
	}
}

// BackendAuto and BackendIPTables are Options.Backend values that
// pick a backend: auto looks at all three, iptables at the two iptables
// backends.
const (
	BackendAuto     = "auto"
	BackendIPTables = "iptables"
)

// BackendProbe is what DetectBackends found in one backend for one family.
type BackendProbe struct {
	// Backend is the backend looked at.
	Backend Backend `json:"backend"`
	// Family is 4 or 6.
	Family int `json:"family"`
	// HasRules: the backend holds kube-proxy's Service NAT (a KUBE-SERVICES
	// chain in the nat table, or the kube-proxy table in nftables mode).
	HasRules bool `json:"hasRules"`
	// Rules is the number of rules in KUBE-SERVICES (nat), when counted; it
	// tells a live backend from a stale one in a split brain.
	Rules int `json:"rules,omitempty"`
	// Error says why the backend could not be checked, "" when it was.
	Error string `json:"error,omitempty"`
}
