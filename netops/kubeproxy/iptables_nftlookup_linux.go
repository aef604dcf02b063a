package kubeproxy

import (
	"net/netip"
	"slices"

	"github.com/google/nftables/expr"
	"github.com/hairpinctl/hairpinctl/netops"
)

// kubeServicesLookupNFT reads iptables-nft's KUBE-SERVICES chain for a
// lookup of addrs with one nf_tables rule dump instead of `iptables-nft -S
// KUBE-SERVICES`, which for 10,000 services costs about 100 ms, most of
// a lookup. It returns what lookupLines would keep of the -S listing, in
// the same text ("-N KUBE-SERVICES" first). Rules are decoded lazily: a
// rule whose bytes cannot hold an address looked up and whose verdict is
// a jump to a service's chain is rendered only if another kept rule of its
// service pulls it in. ok is false when a rule to be kept is one
// renderIPTRule cannot render: the caller then lists the chain with
// iptables.
func kubeServicesLookupNFT(c *netops.Client, family int, addrs []netip.Addr) (lines []string, ok bool, err error) {
	needles := addrNeedles(addrs)
	render := func(r nftRule) (renderedRule, bool) { return renderNFTRule(family, "KUBE-SERVICES", r) }
	var items []lookupItem
	err = nftRules(c, family, "nat", "KUBE-SERVICES", func(r nftRule) {
		mayName := slices.ContainsFunc(needles, r.holds)
		if !mayName {
			if t := nftJumpTarget(r); isServiceChain(t) {
				items = append(items, lookupItem{rule: r, rendered: renderedRule{target: t}, deferred: true})
				return
			}
		}
		if rr, ok := render(r); ok {
			items = append(items, lookupItem{rendered: rr})
			return
		}
		items = append(items, lookupItem{rule: r, rendered: renderedRule{target: nftJumpTarget(r)}, declined: true})
	})
	if err != nil {
		return nil, false, err
	}
	if len(items) == 0 && !nftChainPresent(c, family, "nat", "KUBE-SERVICES") {
		// The dump of a missing chain is as empty as that of an empty
		// one; iptables -S says "no chain" for it, which reads as nothing.
		return nil, true, nil
	}
	keep := lookupKeep(len(items),
		func(i int) string { return items[i].rendered.target },
		func(i int) bool { return items[i].namesAny(needles, addrs) })
	lines = []string{"-N KUBE-SERVICES"}
	for i := range items {
		if !keep[i] {
			continue
		}
		if items[i].declined {
			return nil, false, nil
		}
		if items[i].deferred {
			rr, ok := render(items[i].rule)
			if !ok {
				return nil, false, nil
			}
			items[i].rendered = rr
		}
		lines = append(lines, items[i].rendered.line)
	}
	return lines, true, nil
}

// lookupItem is one rule of KUBE-SERVICES in kubeServicesLookupNFT.
type lookupItem struct {
	rendered renderedRule
	rule     nftRule
	// deferred: not rendered yet, as it cannot name an address.
	deferred bool
	// declined: renderIPTRule cannot render it; whether it names an
	// address is then the first look's guess.
	declined bool
}

// namesAny says whether the rule names one of addrs, whose needles are
// their bytes as addrNeedles cuts them.
func (it *lookupItem) namesAny(needles [][]byte, addrs []netip.Addr) bool {
	switch {
	case it.deferred:
		return false
	case it.declined:
		return slices.ContainsFunc(needles, it.rule.holds)
	}
	// The lookup's addresses are unmapped; ip6tables rules may hold
	// IPv4-mapped ones.
	return slices.ContainsFunc(it.rendered.addrs, func(a netip.Addr) bool { return slices.Contains(addrs, a.Unmap()) })
}

// addrNeedles are the addresses' bytes, without their trailing zero
// bytes: a rule naming one with any prefix compares its leading bytes
// (payload + cmp).
func addrNeedles(addrs []netip.Addr) [][]byte {
	needles := make([][]byte, len(addrs))
	for i, a := range addrs {
		b := a.AsSlice()
		n := len(b)
		for n > 1 && b[n-1] == 0 {
			n--
		}
		needles[i] = b[:n]
	}
	return needles
}

// nftJumpTarget is the chain a rule jumps or goes to, "" for none.
func nftJumpTarget(r nftRule) string {
	v, err := r.verdict()
	if err != nil || v == nil || v.Kind != expr.VerdictJump && v.Kind != expr.VerdictGoto {
		return ""
	}
	return v.Chain
}

// renderNFTRule renders a dumped iptables-nft rule as `iptables -S` prints
// it, or says it cannot (ok false): see renderIPTRule. A comment nft put in
// the rule's userdata, which iptables prints too, is declined.
func renderNFTRule(family int, chain string, r nftRule) (renderedRule, bool) {
	if r.userdataComment() {
		return renderedRule{}, false
	}
	exprs, err := r.decode()
	if err != nil {
		return renderedRule{}, false
	}
	return renderIPTRule(family, chain, exprs)
}
