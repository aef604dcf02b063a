package kubeproxy

import (
	"net/netip"
	"slices"
	"strings"
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

// lookupLines, the oracle of the netlink lookup's tests, keeps the
// KUBE-SERVICES rules of an `iptables -S` listing a lookup of IPv4 addresses can
// use, so a lookup parses a handful of the 10,000 lines a large cluster has:
// every rule that names one of the addresses; every rule that does not jump
// to a service's chain (the node-port jump, old masquerade rules); and
// every rule that jumps to a chain sharing a kept rule's hash, as a
// service's external and load-balancer addresses do. That is everything
// readIPTablesTargeted would select from the whole chain. ok is false, and
// nothing is filtered, for IPv6 addresses (their text form is not unique
// enough to match as text) and for no addresses at all.
func lookupLines(lines []string, ips []netip.Addr) (kept []string, ok bool) {
	if len(ips) == 0 {
		return lines, false
	}
	texts := make([]string, len(ips))
	for i, a := range ips {
		if !a.Is4() {
			return lines, false
		}
		texts[i] = a.String()
	}
	targets := make([]string, len(lines))
	for i, l := range lines {
		targets[i] = jumpTarget(l)
	}
	keep := lookupKeep(len(lines), func(i int) string { return targets[i] }, func(i int) bool { return namesAddr(lines[i], texts) })
	for i, l := range lines {
		if keep[i] {
			kept = append(kept, l)
		}
	}
	return kept, true
}

// jumpTarget is the chain a rule jumps or goes to, "" when none.
func jumpTarget(rule string) string {
	i := strings.LastIndex(rule, " -j ")
	if j := strings.LastIndex(rule, " -g "); j > i {
		i = j
	}
	if i < 0 {
		return ""
	}
	t := rule[i+4:]
	if k := strings.IndexByte(t, ' '); k >= 0 {
		t = t[:k]
	}
	return t
}

// namesAddr reports whether rule holds one of the addresses as a whole
// word: "10.96.0.1" must not match inside "10.96.0.10/32".
func namesAddr(rule string, addrs []string) bool {
	for _, a := range addrs {
		for from := 0; ; {
			i := strings.Index(rule[from:], a)
			if i < 0 {
				break
			}
			i += from
			end := i + len(a)
			before := i == 0 || rule[i-1] == ' '
			after := end == len(rule) || rule[end] == '/' || rule[end] == ' '
			if before && after {
				return true
			}
			from = i + 1
		}
	}
	return false
}
