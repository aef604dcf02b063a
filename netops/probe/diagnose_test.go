package probe

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/pods"
)

// report builds facts: a pod at 10.244.0.5 behind vethab12, a Service
// default/web:http with the given endpoints (the pod's own first when
// self), and connections made by conn.
func report(hairpin bool, eps int, self bool, conns ...Connection) *Report {
	r := &Report{
		Pod:      &pods.Pod{Namespace: "default", Name: "web-0"},
		Client:   Client{IP: "10.244.0.5", Interface: "vethab12", Bridge: "cni0", Hairpin: hairpin},
		Service:  ServiceInfo{Name: "default/web:http", IP: "10.96.0.10", Port: 80, Backend: "iptables-nft", Endpoints: []ServiceEndpoint{}},
		Protocol: "tcp",
		Facts: Facts{BrNetfilter: "1", BrNetfilterSysctl: "net.bridge.bridge-nf-call-iptables", Traced: true, Masquerade: Masquerade{
			MarkMasq: true, PostroutingMasquerade: true, PostroutingHooked: true,
		}},
	}
	for i := range eps {
		e := ServiceEndpoint{IP: fmt.Sprintf("10.244.0.%d", 6+i), Port: 8080, Share: 1 / float64(eps), HairpinMasq: true}
		if i == 0 && self {
			e.IP, e.Self = "10.244.0.5", true
		}
		r.Service.Endpoints = append(r.Service.Endpoints, e)
	}
	r.Connections = conns
	r.Count = len(conns)
	return r
}

func repeat(n int, c Connection) []Connection {
	out := make([]Connection, n)
	for i := range out {
		out[i] = c
		out[i].SrcPort = uint16(40000 + i)
	}
	return out
}

var (
	ok      = Connection{Result: ResultSucceeded, Conntrack: true, Endpoint: "10.244.0.6:8080", Bridge: BridgeForwarded}
	dropped = Connection{Result: ResultTimedOut, Bridge: BridgeDropped, BalancedToSelf: true}
	// retried: the first SYN balanced to the pod itself and dropped, the
	// resent one balanced to another pod.
	retried = Connection{Result: ResultRetransmitted, SynRetransmits: 1, Conntrack: true, Endpoint: "10.244.0.6:8080", Bridge: BridgeDropped, BalancedToSelf: true}
	// early: dropped in IP prerouting (a firewall rule), never balanced.
	early     = Connection{Result: ResultTimedOut, Bridge: BridgeDroppedEarly}
	noSNAT    = Connection{Result: ResultTimedOut, Conntrack: true, Endpoint: "10.244.0.5:8080", Self: true, State: "SYN_SENT", Bridge: BridgeForwarded}
	refusedBy = Connection{Result: ResultRefused, Conntrack: true, Endpoint: "10.244.0.6:8080", State: "CLOSE", Bridge: BridgeForwarded}
	rejected  = Connection{Result: ResultRefused, Bridge: BridgeDelivered}
	forwarded = Connection{Result: ResultTimedOut, Conntrack: true, Endpoint: "10.244.0.6:8080", State: "SYN_SENT", Bridge: BridgeForwarded}
)

func TestDiagnose(t *testing.T) {
	tests := []struct {
		name string
		r    *Report
		// want is the finding IDs, each with the connections it explains
		// and pieces of its text and evidence.
		want []wantFinding
	}{
		{"all succeeded", report(false, 3, true, repeat(20, ok)...), nil},
		{"hairpin off, 1 of 3, traced", report(false, 3, true, append(repeat(13, ok), repeat(7, dropped)...)...), []wantFinding{
			{FindingHairpinOff, 7, []string{"7 of 20 timed out", "1 of 3 endpoints of default/web:http", "port vethab12 has hairpin off", "expected ≈ 1 in 3", "bridge trace: 7 ", "enable vethab12"}},
		}},
		{"hairpin off, only endpoint, untraced", func() *Report {
			r := report(false, 1, true, repeat(20, Connection{Result: ResultTimedOut})...)
			r.Facts.Traced = false
			return r
		}(), []wantFinding{
			{FindingHairpinOff, 20, []string{"20 of 20 timed out", "the only endpoint", "expected all of them", "inferred, not seen"}},
		}},
		{"hairpin off but the pod is no endpoint: not blamed", report(false, 2, false, repeat(5, dropped)...), []wantFinding{
			{FindingUnexplained, 5, []string{"5 of 5 timed out, unexplained", "bridge trace: 5 balanced to this pod itself and dropped"}},
		}},
		{"hairpin off, SYN dropped then resent elsewhere: a failure, put on the hairpin", report(false, 3, true, append(repeat(22, ok), repeat(8, retried)...)...), []wantFinding{
			{FindingHairpinOff, 8, []string{"8 of 30 retransmitted", "hairpin off", "8 connected only after the kernel sent the SYN again"}},
		}},
		{"retransmitted without a drop the trace saw: unexplained", report(true, 3, true, append(repeat(2, ok), Connection{Result: ResultRetransmitted, SynRetransmits: 1, Conntrack: true, Endpoint: "10.244.0.6:8080", Bridge: BridgeForwarded})...), []wantFinding{
			{FindingUnexplained, 1, []string{"1 of 3 retransmitted, unexplained", "1 connected only after the kernel sent the SYN again"}},
		}},
		{"hairpin off, but dropped in prerouting before balancing: unexplained", report(false, 3, true, repeat(6, early)...), []wantFinding{
			{FindingUnexplained, 6, []string{"6 of 6 timed out, unexplained", "6 dropped before the bridge decided", "not the hairpin"}},
		}},
		{"hairpin off, untraced: no more put on it than the pod's share", func() *Report {
			r := report(false, 3, true, repeat(30, Connection{Result: ResultTimedOut})...)
			r.Facts.Traced = false
			return r
		}(), []wantFinding{
			{FindingHairpinOff, 19, []string{"19 of 30 timed out", "inferred", "at most 19 of 30"}},
			{FindingUnexplained, 11, []string{"11 of 30 timed out, unexplained"}},
		}},
		{"no SNAT, masquerade rule missing", func() *Report {
			r := report(true, 2, true, append(repeat(10, ok), repeat(10, noSNAT)...)...)
			r.Facts.Masquerade.PostroutingMasquerade = false
			return r
		}(), []wantFinding{
			{FindingNoSNAT, 10, []string{"10 of 20 timed out", "NO-SNAT", "no rule masquerades marked packets"}},
		}},
		{"no SNAT, endpoint without its hairpin rule", func() *Report {
			r := report(true, 1, true, repeat(4, noSNAT)...)
			r.Service.Endpoints[0].HairpinMasq = false
			return r
		}(), []wantFinding{
			{FindingNoSNAT, 4, []string{"does not mark the endpoint's own traffic"}},
		}},
		{"refused by an endpoint", report(true, 2, true, append(repeat(3, ok), repeat(2, refusedBy)...)...), []wantFinding{
			{FindingRefused, 2, []string{"2 of 5 refused by endpoint 10.244.0.6:8080", "nothing listens"}},
		}},
		{"no endpoints", func() *Report {
			r := report(true, 0, false, repeat(3, rejected)...)
			r.Service.NoEndpoints = true
			return r
		}(), []wantFinding{
			{FindingNoEndpoints, 3, []string{"3 of 3 refused", "has no endpoints"}},
		}},
		{"no endpoints, some rejections rate-limited", func() *Report {
			r := report(true, 0, false, append(repeat(6, rejected), repeat(14, Connection{Result: ResultTimedOut, Bridge: BridgeDelivered})...)...)
			r.Service.NoEndpoints = true
			return r
		}(), []wantFinding{
			{FindingNoEndpoints, 20, []string{"14 timed out and 6 refused of 20", "icmp_ratelimit"}},
		}},
		{"br_netfilter off", func() *Report {
			r := report(true, 2, false, repeat(4, forwarded)...)
			r.Facts.BrNetfilter = "0"
			return r
		}(), []wantFinding{
			{FindingBrNetfilter, 4, []string{"bridge-nf-call-iptables is 0"}},
		}},
		{"br_netfilter off for IPv6: the ip6tables sysctl is named and fixed", func() *Report {
			r := report(true, 2, false, repeat(4, forwarded)...)
			r.Client.IP = "fd00:10:244::5"
			r.Facts.BrNetfilter, r.Facts.BrNetfilterSysctl = "0", "net.bridge.bridge-nf-call-ip6tables"
			return r
		}(), []wantFinding{
			{FindingBrNetfilter, 4, []string{"bridge-nf-call-ip6tables is 0", "sysctl: net.bridge.bridge-nf-call-ip6tables = 0", "sysctl -w net.bridge.bridge-nf-call-ip6tables=1"}},
		}},
		{"forwarded and timed out, with everything in place: unexplained", report(true, 2, false, append(repeat(3, ok), repeat(2, forwarded)...)...), []wantFinding{
			{FindingUnexplained, 2, []string{"2 of 5 timed out, unexplained", "2 reached the bridge's forward hook", "2 to 10.244.0.6:8080"}},
		}},
		{"udp without replies", report(true, 1, false, repeat(3, Connection{Result: ResultNoReply, Conntrack: true, Endpoint: "10.244.0.6:8080", Bridge: BridgeForwarded})...), []wantFinding{
			{FindingUDPNoReply, 3, []string{"cannot be judged"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			Diagnose(tt.r, func(a string) string { return "hairpinctl " + a })
			if tt.r.OK != (len(tt.want) == 0) {
				t.Errorf("OK = %v with findings %+v", tt.r.OK, tt.r.Findings)
			}
			if len(tt.r.Findings) != len(tt.want) {
				t.Fatalf("findings %+v, want %d", tt.r.Findings, len(tt.want))
			}
			total := 0
			for i, w := range tt.want {
				f := tt.r.Findings[i]
				text := f.Finding + "\n" + strings.Join(f.Evidence, "\n") + "\n" + f.Fix
				if f.ID != w.id || f.Connections != w.n {
					t.Errorf("finding %d: %s for %d, want %s for %d", i, f.ID, f.Connections, w.id, w.n)
				}
				for _, s := range w.has {
					if !strings.Contains(text, s) {
						t.Errorf("finding %s lacks %q:\n%s", f.ID, s, text)
					}
				}
				total += f.Connections
			}
			if failed := len(tt.r.Connections) - tt.r.Results[ResultSucceeded]; total != failed {
				t.Errorf("findings explain %d connections, %d failed", total, failed)
			}
		})
	}
}

type wantFinding struct {
	id  string
	n   int
	has []string
}

func TestDiagnoseCountsEndpoints(t *testing.T) {
	self := Connection{Result: ResultSucceeded, Conntrack: true, Endpoint: "10.244.0.5:8080", Self: true}
	r := report(true, 2, true, ok, ok, self, dropped)
	Diagnose(r, func(a string) string { return a })
	if len(r.Endpoints) != 2 || r.Endpoints[0].IP != "10.244.0.5" || r.Endpoints[0].Port != 8080 || !r.Endpoints[0].Self || r.Endpoints[0].Results[ResultSucceeded] != 1 ||
		r.Endpoints[1].Results[ResultSucceeded] != 2 {
		t.Errorf("endpoints %+v", r.Endpoints)
	}
	if r.Results[ResultSucceeded] != 3 || r.Results[ResultTimedOut] != 1 || r.Results[ResultRefused] != 0 {
		t.Errorf("results %v", r.Results)
	}
}

// Without conntrack, the evidence says so rather than "no entry".
func TestDiagnoseConntrackUnread(t *testing.T) {
	r := report(false, 1, true, repeat(3, dropped)...)
	r.Facts.ConntrackError = "permission denied"
	Diagnose(r, func(a string) string { return a })
	ev := strings.Join(r.Findings[0].Evidence, "\n")
	if !strings.Contains(ev, "conntrack not read (permission denied)") || strings.Contains(ev, "no entry confirmed") {
		t.Errorf("evidence without conntrack:\n%s", ev)
	}
}

// A UDP probe to port 53 sends a DNS query a server answers; elsewhere a
// newline.
func TestDatagram(t *testing.T) {
	q := datagram(53, 0x1234)
	want := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1}
	if string(q) != string(want) {
		t.Errorf("datagram(53) = % x, want % x (query . IN NS, ID 0x1234)", q, want)
	}
	if d := datagram(9999, 1); string(d) != "\n" {
		t.Errorf("datagram(9999) = %q, want a newline", d)
	}
}

// A probe whose only finding is UDP's unanswered datagrams cannot be
// judged: a warning, not a failure; with any other finding it is judged.
func TestUnjudged(t *testing.T) {
	noReply := Connection{Result: ResultNoReply, Conntrack: true, Endpoint: "10.244.0.6:8080", Bridge: BridgeForwarded}
	r := report(true, 1, false, repeat(3, noReply)...)
	Diagnose(r, func(a string) string { return a })
	if !Unjudged(r) {
		t.Errorf("only udp-no-reply: Unjudged false, findings %+v", r.Findings)
	}
	r = report(true, 1, false, append(repeat(3, noReply), refusedBy)...)
	Diagnose(r, func(a string) string { return a })
	if Unjudged(r) {
		t.Errorf("udp-no-reply and refused: Unjudged true, findings %+v", r.Findings)
	}
	r = report(true, 1, false, repeat(3, ok)...)
	Diagnose(r, func(a string) string { return a })
	if Unjudged(r) {
		t.Error("all succeeded: Unjudged true")
	}
}
