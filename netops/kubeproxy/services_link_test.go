package kubeproxy

import (
	"reflect"
	"testing"
)

// testLinkInput is a linkInput named like nftables mode's chains, for
// feeding the linker by hand.
func testLinkInput() *linkInput {
	return &linkInput{
		backend: BackendNFTables, family: 4, keepRaw: true,
		kindOf: nftChainKind, dispatchOf: nftDispatchChains,
		chains: map[string]*linkChain{}, raws: map[string]*linkRaw{},
	}
}

func TestLinkEndpoints(t *testing.T) {
	const svc = "service-AAAAAAAA-ns/web/tcp/http"
	ep := func(name, ip string, port int32, hairpin bool) *linkEndpoint {
		return &linkEndpoint{name: name, ip: ip, port: port, hairpin: hairpin}
	}
	tests := []struct {
		name    string
		chain   linkChain
		hairpin map[string]bool
		want    []Endpoint
	}{
		{
			name: "statistic probabilities multiply down the chain",
			chain: linkChain{hops: []linkHop{
				{ep: ep("a", "10.0.0.1", 80, true), prob: 0.25},
				{ep: ep("b", "10.0.0.2", 80, false), prob: 0.5},
				{ep: ep("c", "10.0.0.3", 80, false), prob: 1},
			}},
			want: []Endpoint{
				{Chain: "a", IP: "10.0.0.1", Port: 80, HairpinMasq: true, Probability: 0.25, Share: 0.25},
				{Chain: "b", IP: "10.0.0.2", Port: 80, Probability: 0.5, Share: 0.375},
				{Chain: "c", IP: "10.0.0.3", Port: 80, Probability: 1, Share: 0.375},
			},
		},
		{
			name: "numgen slots divide by the modulus",
			chain: linkChain{modulus: 4, hops: []linkHop{
				{ep: ep("a", "10.0.0.1", 80, false), weight: 1},
				{ep: ep("b", "10.0.0.2", 80, false), weight: 3},
			}},
			want: []Endpoint{
				{Chain: "a", IP: "10.0.0.1", Port: 80, Weight: 1, Probability: 0.25, Share: 0.25},
				{Chain: "b", IP: "10.0.0.2", Port: 80, Weight: 3, Probability: 0.75, Share: 0.75},
			},
		},
		{
			name: "inline endpoints join the hairpin set by the service's protocol",
			chain: linkChain{modulus: 2, hops: []linkHop{
				{ip: "10.0.0.1", port: 8080, weight: 1},
				{ip: "10.0.0.2", port: 8080, weight: 1},
			}},
			hairpin: map[string]bool{"10.0.0.2 tcp 8080": true, "10.0.0.1 udp 8080": true},
			want: []Endpoint{
				{IP: "10.0.0.1", Port: 8080, Weight: 1, Probability: 0.5, Share: 0.5},
				{IP: "10.0.0.2", Port: 8080, Weight: 1, Probability: 0.5, Share: 0.5, HairpinMasq: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := testLinkInput()
			in.hairpinSet = tt.hairpin
			c := tt.chain
			c.name = svc
			in.chains[svc] = &c
			in.entries = []linkEntry{{kind: entryCluster, ip: "10.96.0.10", proto: "tcp", port: 80, target: svc}}
			svcs, _ := in.link(nil)
			if len(svcs) != 1 {
				t.Fatalf("%d services, want 1", len(svcs))
			}
			if !reflect.DeepEqual(svcs[0].Endpoints, tt.want) {
				t.Errorf("endpoints\n got %+v\nwant %+v", svcs[0].Endpoints, tt.want)
			}
		})
	}
}

// TestLinkChains: entries reach their service through the chains they
// jump to, or through the hash the chains share; rules not understood in
// a chain no service owns are listed.
func TestLinkChains(t *testing.T) {
	const (
		svc   = "service-AAAAAAAA-ns/web/tcp/http"
		ext   = "external-AAAAAAAA-ns/web/tcp/http"
		local = "local-AAAAAAAA-ns/web/tcp/http"
		fw    = "firewall-AAAAAAAA-ns/web/tcp/http"
		stray = "external-BBBBBBBB-ns/gone/tcp/http"
	)
	in := testLinkInput()
	in.chains[svc] = &linkChain{name: svc}
	in.chains[ext] = &linkChain{name: ext, links: []string{svc, local}}
	in.chains[local] = &linkChain{name: local}
	for _, ch := range []string{svc, ext, local, fw, stray} {
		in.raw(ch).rules = []string{"rule of " + ch}
	}
	in.raws[stray].unknown = []string{"odd rule of " + stray}
	in.entries = []linkEntry{
		{kind: entryCluster, ip: "10.96.0.10", proto: "tcp", port: 80, target: svc, name: "ns/web:http", raw: "cluster"},
		{kind: entryFirewall, ip: "192.0.2.1", proto: "tcp", port: 80, target: fw, raw: "firewall"},
		{kind: entryLB, ip: "192.0.2.1", proto: "tcp", port: 80, target: ext, raw: "lb"},
		{kind: entryNodePort, proto: "tcp", port: 30080, target: ext, raw: "nodeport"},
		{kind: entryExternal, ip: "192.0.2.9", proto: "tcp", port: 80, target: stray, raw: "stray"},
	}
	svcs, unknown := in.link(nil)
	if len(svcs) != 1 {
		t.Fatalf("%d services, want 1", len(svcs))
	}
	s := svcs[0]
	got := []any{s.Namespace, s.Name, s.PortName, s.Chain, s.ExternalChain, s.LocalChain, s.FirewallChain, s.LocalPolicy, s.LoadBalancerIPs, s.NodePorts, s.ExternalIPs}
	want := []any{"ns", "web", "http", svc, ext, local, fw, true, []string{"192.0.2.1"}, []int{30080}, []string(nil)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("service\n got %v\nwant %v", got, want)
	}
	wantRaw := []string{"cluster", "firewall", "lb", "nodeport", "rule of " + svc, "rule of " + fw, "rule of " + ext, "rule of " + local}
	if !reflect.DeepEqual(s.Raw, wantRaw) {
		t.Errorf("raw\n got %q\nwant %q", s.Raw, wantRaw)
	}
	if want := []string{"odd rule of " + stray}; !reflect.DeepEqual(unknown, want) {
		t.Errorf("unknown %q, want %q", unknown, want)
	}
}
