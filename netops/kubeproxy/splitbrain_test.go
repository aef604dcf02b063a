package kubeproxy

import (
	"strings"
	"testing"
)

func TestSplitBrainWarning(t *testing.T) {
	const tail = "; the other is likely stale or written by a second kube-proxy (see: hairpinctl services --backend "
	tests := []struct {
		nft, leg int
		chosen   Backend
		want     string
	}{
		{1, 1, BackendIPTablesNFT, "split brain: kube-proxy rules in both iptables-nft (1 rule in KUBE-SERVICES) and iptables-legacy (1 rule); showing iptables-nft, as kube-proxy's iptables-wrapper does on a tie" + tail + "iptables-legacy)"},
		{2, 13, BackendIPTablesLegacy, "split brain: kube-proxy rules in both iptables-nft (2 rules in KUBE-SERVICES) and iptables-legacy (13 rules); showing iptables-legacy, which has more" + tail + "iptables-nft)"},
		{13, 1, BackendIPTablesNFT, "split brain: kube-proxy rules in both iptables-nft (13 rules in KUBE-SERVICES) and iptables-legacy (1 rule); showing iptables-nft, which has more" + tail + "iptables-legacy)"},
	}
	for _, tt := range tests {
		chosen, got := splitBrain(tt.nft, tt.leg, "")
		if chosen != tt.chosen || got != tt.want {
			t.Errorf("splitBrain(%d, %d) = %s,\n%q\nwant %s,\n%q", tt.nft, tt.leg, chosen, got, tt.chosen, tt.want)
		}
	}
	// The hint looks where the warning's command looked.
	if _, got := splitBrain(1, 2, "node a"); !strings.HasSuffix(got, "(see: hairpinctl services --backend iptables-nft --netns 'node a')") {
		t.Errorf("with --netns: %q", got)
	}
}
