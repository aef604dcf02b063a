package netops

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

// ServicesOptions selects what Services reads.
type ServicesOptions struct {
	// Backend is "auto" (or empty), "iptables" (whichever iptables backend
	// holds KUBE-SERVICES), "iptables-nft", "iptables-legacy" or "nftables".
	Backend string
	// Family is 4, 6, or 0 for both.
	Family int
	// ClusterIPs and Names filter services; empty selects all. A name is
	// "ns/name" or "ns/name:port".
	ClusterIPs []string
	Names      []string
	// Raw keeps the rules of each selected service verbatim.
	Raw bool
	// Wait bounds how long to wait for the xtables lock.
	WaitSeconds int
}

// ServicesResult is kube-proxy's Service NAT as read from one backend.
type ServicesResult struct {
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
}

// MasqueradePlumbing is the part of kube-proxy's NAT that masquerades
// marked packets: without it a hairpin connection's reply bypasses the node.
type MasqueradePlumbing struct {
	// MarkMasq: the KUBE-MARK-MASQ chain sets the masquerade mark
	// (nftables: the mark-for-masquerade chain).
	MarkMasq bool `json:"markMasq"`
	// PostroutingMasquerade: KUBE-POSTROUTING masquerades marked packets
	// (nftables: the masquerading chain).
	PostroutingMasquerade bool `json:"postroutingMasquerade"`
	// Mark is the mark value, e.g. "0x4000".
	Mark string `json:"mark,omitempty"`
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
	// Raw is the service's rules verbatim (with Raw).
	Raw []string `json:"raw,omitempty"`
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
}
