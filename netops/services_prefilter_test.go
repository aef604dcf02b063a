package netops

import (
	"net/netip"
	"slices"
	"testing"
)

func TestLookupLines(t *testing.T) {
	lines := []string{
		`-N KUBE-SERVICES`,
		`-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-AAAAAAAAAAAAAAAA`,
		`-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-BBBBBBBBBBBBBBBB`,
		`-A KUBE-SERVICES -d 203.0.113.7/32 -p tcp -m comment --comment "default/web:http external IP" -m tcp --dport 80 -j KUBE-EXT-AAAAAAAAAAAAAAAA`,
		`-A KUBE-SERVICES -d 203.0.113.8/32 -p tcp -m comment --comment "default/other:http external IP" -m tcp --dport 80 -j KUBE-EXT-CCCCCCCCCCCCCCCC`,
		`-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ`,
		`-A KUBE-SERVICES -d 10.96.0.100/32 -p udp -m comment --comment "kube-system/dns:dns" -m udp --dport 53 -g KUBE-SVC-DDDDDDDDDDDDDDDD`,
		`-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
	}
	got, ok := lookupLines(lines, []netip.Addr{netip.MustParseAddr("10.96.0.10")})
	if !ok {
		t.Fatal("IPv4 lookup not filtered")
	}
	// 10.96.0.10's rules, its external IP (same hash), the masquerade and
	// node-port rules and the chain header; not 10.96.0.1 or 10.96.0.100.
	want := []string{lines[0], lines[1], lines[3], lines[5], lines[7]}
	if !slices.Equal(got, want) {
		t.Errorf("kept:\n%q\nwant:\n%q", got, want)
	}
	if _, ok := lookupLines(lines, []netip.Addr{netip.MustParseAddr("fd00::10")}); ok {
		t.Error("IPv6 lookups must not be filtered as text")
	}
	if got, ok := lookupLines(lines, nil); ok || len(got) != len(lines) {
		t.Error("no addresses: nothing may be filtered")
	}
}
