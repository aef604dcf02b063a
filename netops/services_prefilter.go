package netops

import (
	"net/netip"
	"strings"
)

// lookupLines keeps the KUBE-SERVICES rules a lookup of IPv4 addresses can
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

// lookupKeep marks which of n KUBE-SERVICES rules a lookup keeps, given
// each rule's jump target and whether it names a looked-up address: the
// rules that do not jump to a service's chain, those that name an address,
// and those whose target shares a hash with a kept rule's.
func lookupKeep(n int, target func(i int) string, names func(i int) bool) []bool {
	keep := make([]bool, n)
	hashes := map[string]bool{}
	for i := range n {
		switch t := target(i); {
		case !isServiceChain(t):
			keep[i] = true
		case names(i):
			keep[i] = true
			hashes[chainHash(t)] = true
		}
	}
	for i := range n {
		if !keep[i] && hashes[chainHash(target(i))] {
			keep[i] = true
		}
	}
	return keep
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

func isServiceChain(name string) bool {
	switch classifyChain(name) {
	case kindSvc, kindSvl, kindExt, kindFw, kindXlb:
		return true
	}
	return false
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
