package kubeproxy

import (
	"fmt"

	"github.com/hairpinctl/hairpinctl/netops"
)

// splitBrain picks the iptables backend to show when kube-proxy's rules
// are in both iptables-nft (nftN rules in KUBE-SERVICES) and
// iptables-legacy (legN), and words the warning. The larger wins; a tie
// goes to iptables-nft, as kube-proxy's own iptables-wrapper decides
// (legacy only when it holds more rules). netns is the --netns value, for
// the hint.
func splitBrain(nftN, legN int, netns string) (chosen Backend, warning string) {
	chosen, other := BackendIPTablesNFT, BackendIPTablesLegacy
	why := "which has more"
	switch {
	case legN > nftN:
		chosen, other = BackendIPTablesLegacy, BackendIPTablesNFT
	case legN == nftN:
		why = "as kube-proxy's iptables-wrapper does on a tie"
	}
	return chosen, fmt.Sprintf(
		"split brain: kube-proxy rules in both iptables-nft (%s in KUBE-SERVICES) and iptables-legacy (%s); showing %s, %s; the other is likely stale or written by a second kube-proxy (see: %s)",
		countRules(nftN), countRules(legN), chosen, why, netops.HairpinctlCmd(netns, "services --backend "+string(other)))
}

// countRules is "1 rule" or "N rules".
func countRules(n int) string {
	if n == 1 {
		return "1 rule"
	}
	return fmt.Sprintf("%d rules", n)
}
