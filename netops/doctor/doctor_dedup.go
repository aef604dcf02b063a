package doctor

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// dedupChain is the chain kubenet filled with its duplicate-suppression
// rules for promiscuous-bridge mode (ebtables -t filter, called from OUTPUT).
const dedupChain = "KUBE-DEDUP"

// normalizeMAC writes a MAC address the way net.HardwareAddr prints it:
// ebtables-legacy drops leading zeros ("2:42:a:0:0:1"), nft does not.
// A "/mask" suffix is dropped. It returns "" for anything else.
func normalizeMAC(s string) string {
	s, _, _ = strings.Cut(s, "/")
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return ""
	}
	var b strings.Builder
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 16, 8)
		if err != nil || p == "" || len(p) > 2 {
			return ""
		}
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02x", v)
	}
	return b.String()
}

// findDedupEbtables looks through `ebtables -t filter -L` output
// (ebtables-legacy, whose rules are not in nf_tables) for a drop of frames
// from the bridge's MAC, or any drop in a KUBE-DEDUP chain.
func findDedupEbtables(out, bridgeMAC string) (rule, where string) {
	mac := normalizeMAC(bridgeMAC)
	var chain string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, "Bridge chain: "); ok {
			chain, _, _ = strings.Cut(name, ",")
			continue
		}
		if !strings.HasPrefix(line, "-") {
			continue
		}
		f := strings.Fields(line)
		drop := false
		match := chain == dedupChain
		for i := 0; i+1 < len(f); i++ {
			switch f[i] {
			case "-j":
				drop = f[i+1] == "DROP"
			case "-s", "--src":
				if mac != "" && normalizeMAC(f[i+1]) == mac {
					match = true
				}
			}
		}
		if drop && match {
			return line, "ebtables-legacy filter chain " + chain
		}
	}
	return "", ""
}
