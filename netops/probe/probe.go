// Package probe proves from the node that a pod reaches itself through a
// Service: it makes connections to the Service from inside the pod's
// network namespace (entered from the node, through the veth peer; nothing
// runs in the pod's containers), follows each in conntrack and through the
// bridge, and explains every failure from what the kernel showed and what
// doctor reads (the port's hairpin mode, kube-proxy's masquerade, the
// Service's endpoints, br_netfilter). Gathering lives in the _linux files;
// Diagnose judges the gathered facts and touches nothing, so every finding
// can be tested on made-up facts.
package probe

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/pods"
)

// Connection results.
const (
	// ResultSucceeded: TCP connected at the first SYN; UDP got a reply.
	ResultSucceeded = "succeeded"
	// ResultRetransmitted: TCP connected, but only after the kernel sent
	// the SYN again (a second after the first, then doubling): the first
	// SYN, or its answer, was lost. A dropped SYN resent is balanced
	// anew, often to another endpoint, so a drop hides behind a slow
	// success: it is a failure.
	ResultRetransmitted = "retransmitted"
	// ResultTimedOut: no answer within the timeout.
	ResultTimedOut = "timed-out"
	// ResultRefused: a TCP reset to the SYN or an ICMP port unreachable.
	ResultRefused = "refused"
	// ResultReset: the connection was reset after it was made.
	ResultReset = "reset"
	// ResultNoReply: a UDP datagram got no answer, which does not tell a
	// drop from a server that does not answer.
	ResultNoReply = "no-reply"
	// ResultError: any other error (unreachable network, ...); the
	// connection's Error says which.
	ResultError = "error"
)

// Bridge verdicts of one connection's first packet, from the trace.
const (
	// BridgeForwarded: it reached the bridge's forward hook bound for a
	// port (a firewall in the FORWARD chain may still drop it there).
	BridgeForwarded = "forwarded"
	// BridgeDelivered: the bridge passed it up to the node (routed on).
	BridgeDelivered = "delivered"
	// BridgeDropped: a frame of the connection entered the bridge from
	// the pod's port, was balanced to the pod itself, and left by no
	// port nor was passed up: the bridge dropped it. Said when it
	// happened at least once, even if a resent SYN got through later.
	BridgeDropped = "dropped"
	// BridgeDroppedEarly: it entered the bridge from the pod's port but
	// never came out of the IP prerouting hooks br_netfilter runs in the
	// bridge (a firewall rule there, for instance): dropped before the
	// bridge decided where it goes.
	BridgeDroppedEarly = "dropped-prerouting"
	// BridgeLost: it came out of the prerouting hooks balanced to another
	// endpoint, yet reached no port and was not passed up.
	BridgeLost = "lost"
	// BridgeUnseen: the trace never saw it enter the bridge.
	BridgeUnseen = "unseen"
)

// Options says what to probe.
type Options struct {
	// Pod is the client: pod/NS/NAME, a pod IP, or a bridge port's name.
	Pod string
	// Service is the Service port, as kubeproxy.ParseServiceArg reads it.
	Service string
	// Count is how many connections to make [DefaultCount].
	Count int
	// Timeout bounds each connection [DefaultTimeout].
	Timeout time.Duration
	// CacheDir is libcni's cache directory (pods.DefaultCacheDir on a node).
	CacheDir string
	// Backend is the kube-proxy backend to read ("" is auto).
	Backend string
	// NoTrace leaves the bridge untraced: nothing is added to the node.
	NoTrace bool
}

// Defaults of Options.
const (
	DefaultCount   = 20
	DefaultTimeout = time.Second
	// MaxCount bounds Count: each connection is a socket in the pod and a
	// conntrack entry on the node.
	MaxCount = 1000
)

// Report is one probe: what was probed, what each connection did, the
// facts read, and the findings.
type Report struct {
	// Pod is the client pod, as every hairpinctl output names a pod
	// (netops/pods.Pod); nil (JSON null) when neither the CNI cache nor
	// the runtime names it.
	Pod *pods.Pod `json:"pod"`
	// Client is where the connections came from.
	Client Client `json:"client"`
	// Service is the Service port probed.
	Service ServiceInfo `json:"service"`
	// Protocol is tcp or udp.
	Protocol string `json:"protocol"`
	// Count is how many connections were made.
	Count int `json:"count"`
	// TimeoutMs is each connection's timeout.
	TimeoutMs int64 `json:"timeoutMs"`
	// DurationMs is how long the connections took, from the first
	// connect to the last result.
	DurationMs float64 `json:"durationMs"`
	// Results counts the connections by result (succeeded, timed-out, ...).
	Results map[string]int `json:"results"`
	// Endpoints are the endpoints the connections reached, per conntrack.
	Endpoints []EndpointCount `json:"endpoints"`
	// Connections are the connections, in the order made.
	Connections []Connection `json:"connections"`
	// Facts are what the node showed besides the connections.
	Facts Facts `json:"facts"`
	// Findings explain the failures; empty when every connection
	// succeeded.
	Findings []Finding `json:"findings"`
	// OK is true when every connection succeeded.
	OK bool `json:"ok"`
}

// Client is where the probe's connections came from.
type Client struct {
	// IP is the pod's address the connections came from.
	IP string `json:"ip"`
	// Interface is the node end of the pod's veth, its bridge port (the
	// pod's own end is Pod.Interface), and Bridge the bridge.
	Interface string `json:"interface"`
	Bridge    string `json:"bridge"`
	// Hairpin is the port's hairpin mode as the probe started.
	Hairpin bool `json:"hairpin"`
	// Netns is the path the pod's namespace was entered at.
	Netns string `json:"netns"`
}

// ServiceInfo is the Service port probed, as kube-proxy programmed it.
type ServiceInfo struct {
	// Name is "namespace/name:port" ("namespace/name" for an unnamed
	// port), "" when the rules do not name it.
	Name string `json:"name"`
	// IP and Port are the address connected to.
	IP   string `json:"ip"`
	Port int    `json:"port"`
	// Endpoints are the endpoints kube-proxy balances to, with the share
	// of new connections each gets.
	Endpoints []ServiceEndpoint `json:"endpoints"`
	// NoEndpoints: kube-proxy rejects every connection.
	NoEndpoints bool `json:"noEndpoints"`
	// Backend is where kube-proxy's rules were read.
	Backend string `json:"backend"`
}

// ServiceEndpoint is one endpoint of the Service port.
type ServiceEndpoint struct {
	// IP and Port are the endpoint's address.
	IP   string `json:"ip"`
	Port int    `json:"port"`
	// Share is the fraction of new connections it gets.
	Share float64 `json:"share"`
	// Self: the endpoint is the client pod itself.
	Self bool `json:"self"`
	// HairpinMasq: its rules mark the endpoint's own traffic for
	// masquerade.
	HairpinMasq bool `json:"hairpinMasq"`
	// Local: the endpoint is on this node; nil when unknown.
	Local *bool `json:"local,omitempty"`
}

// EndpointCount is how the connections that reached one endpoint ended.
type EndpointCount struct {
	// IP and Port are the endpoint's address, from the conntrack reply
	// tuple.
	IP   string `json:"ip"`
	Port int    `json:"port"`
	// Self: the endpoint is the client pod itself.
	Self bool `json:"self"`
	// Results counts its connections by result.
	Results map[string]int `json:"results"`
}

// Connection is one connection of the probe.
type Connection struct {
	// SrcPort is its source port in the pod.
	SrcPort uint16 `json:"srcPort"`
	// Result is succeeded, retransmitted, timed-out, refused, reset,
	// no-reply or error.
	Result string `json:"result"`
	// SynRetransmits is how many times the kernel sent the SYN again
	// (TCP_INFO's total_retrans), 0 for UDP.
	SynRetransmits int `json:"synRetransmits"`
	// LatencyMs is the time to the result (the timeout for timed-out).
	LatencyMs float64 `json:"latencyMs"`
	// Error is the socket's error for result error, else "".
	Error string `json:"error,omitempty"`
	// Conntrack: the kernel confirmed a conntrack entry for it; Endpoint,
	// SNAT and State come from that entry.
	Conntrack bool `json:"conntrack"`
	// Endpoint is the endpoint it was balanced to (the reply tuple's
	// source), "" without an entry.
	Endpoint string `json:"endpoint,omitempty"`
	// Self: Endpoint is the client pod itself.
	Self bool `json:"self"`
	// SNAT: the entry shows the source masqueraded.
	SNAT bool `json:"snat"`
	// State is the entry's TCP state when read.
	State string `json:"state,omitempty"`
	// Bridge is what the bridge did with its packets: dropped (at least
	// one, balanced to the pod itself), dropped-prerouting, forwarded,
	// delivered, lost, unseen; "" when the bridge was not traced.
	Bridge string `json:"bridge,omitempty"`
	// BalancedToSelf: the trace saw a frame of it come out of the
	// prerouting hooks addressed to the pod itself (kube-proxy balanced
	// it to its own client).
	BalancedToSelf bool `json:"balancedToSelf,omitempty"`
	// OutPort is the port the bridge forwarded it to.
	OutPort string `json:"outPort,omitempty"`
}

// Facts are what the probe read from the node besides its connections.
type Facts struct {
	// BrNetfilter is the value of BrNetfilterSysctl ("1", "0"), "" when
	// it could not be read (br_netfilter not loaded shows as "").
	BrNetfilter string `json:"brNetfilter"`
	// BrNetfilterSysctl is the sysctl BrNetfilter was read from, in the
	// pod address's family: net.bridge.bridge-nf-call-iptables, or
	// net.bridge.bridge-nf-call-ip6tables for IPv6.
	BrNetfilterSysctl string `json:"brNetfilterSysctl"`
	// Masquerade is kube-proxy's masquerade plumbing.
	Masquerade Masquerade `json:"masquerade"`
	// Traced: the bridge was traced (an nf_tables bridge table counted
	// the probe's packets); TraceError says why not, when asked for.
	Traced     bool   `json:"traced"`
	TraceError string `json:"traceError,omitempty"`
	// ConntrackError says why conntrack could not be read, "" when it was.
	ConntrackError string `json:"conntrackError,omitempty"`
}

// Masquerade is the part of kube-proxy's NAT a hairpin connection needs.
type Masquerade struct {
	// MarkMasq, PostroutingMasquerade, PostroutingHooked and HairpinSet
	// are kubeproxy.MasqueradePlumbing's.
	MarkMasq              bool `json:"markMasq"`
	PostroutingMasquerade bool `json:"postroutingMasquerade"`
	PostroutingHooked     bool `json:"postroutingHooked"`
	HairpinSet            bool `json:"hairpinSet"`
}

// Finding is one explanation.
type Finding struct {
	// ID names the kind: hairpin-off, no-snat, no-endpoints, refused,
	// br-netfilter-off, udp-no-reply, unexplained.
	ID string `json:"id"`
	// Finding is the explanation, one sentence.
	Finding string `json:"finding"`
	// Evidence lists what the finding rests on, each naming its source
	// (kernel port state, kube-proxy's rules, conntrack, bridge trace).
	Evidence []string `json:"evidence"`
	// Fix is a command that fixes it, "" when none applies.
	Fix string `json:"fix,omitempty"`
	// Connections is how many connections it explains.
	Connections int `json:"connections"`
}

// Finding IDs.
const (
	FindingHairpinOff  = "hairpin-off"
	FindingNoSNAT      = "no-snat"
	FindingNoEndpoints = "no-endpoints"
	FindingRefused     = "refused"
	FindingBrNetfilter = "br-netfilter-off"
	FindingUDPNoReply  = "udp-no-reply"
	FindingUnexplained = "unexplained"
)

// FixResult is --fix: the fix applied and the probe after it.
type FixResult struct {
	// Before is the probe before the fix.
	Before *Report `json:"before"`
	// Applied says what was changed, "" when no fix applies. It is set
	// as soon as the change is made: RunFix returns it with the error of
	// a probe after it that failed or was stopped.
	Applied string `json:"applied"`
	// Undo is the command that undoes Applied, "" when nothing was.
	Undo string `json:"undo"`
	// After is the probe after the fix, nil when none was applied.
	After *Report `json:"after"`
}

// datagram is what a UDP probe sends to port: to 53, a DNS query for the
// root's name servers (". IN NS", which every DNS server answers, if only
// with an error), its ID the source port; elsewhere a newline, which an
// echo server answers and most others ignore.
func datagram(port, id uint16) []byte {
	if port != 53 {
		return []byte{'\n'}
	}
	q := binary.BigEndian.AppendUint16(nil, id)
	q = append(q,
		0x01, 0x00, // a standard query, recursion desired
		0, 1, 0, 0, 0, 0, 0, 0, // one question; no answers, authorities, additions
		0,    // the root name
		0, 2, // type NS
		0, 1, // class IN
	)
	return q
}

// Addr is the endpoint as IP:PORT ([IP]:PORT for IPv6).
func (e ServiceEndpoint) Addr() string { return joinHostPort(e.IP, e.Port) }

// Addr is the endpoint as IP:PORT ([IP]:PORT for IPv6).
func (e EndpointCount) Addr() string { return joinHostPort(e.IP, e.Port) }

func joinHostPort(ip string, port int) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip + ":" + strconv.Itoa(port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)).String()
}
