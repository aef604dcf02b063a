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

// findDedupNft looks through `nft list ruleset bridge` output for a rule
// that drops frames the bridge itself sends (ether saddr = the bridge's
// MAC), or any drop rule in a KUBE-DEDUP chain. ebtables-nft keeps its
// rules in these tables, so this also finds rules ebtables-nft added.
func findDedupNft(out, bridgeMAC string) (rule, where string) {
	mac := normalizeMAC(bridgeMAC)
	var table, chain string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "table":
			table, chain = f[1]+" "+f[2], ""
			continue
		case len(f) >= 2 && f[0] == "chain":
			chain = f[1]
			continue
		case chain == "" || len(f) == 0 || f[len(f)-1] != "drop":
			continue
		}
		match := chain == dedupChain
		for i := 0; i+2 < len(f) && !match; i++ {
			if f[i] == "ether" && f[i+1] == "saddr" && mac != "" && normalizeMAC(f[i+2]) == mac {
				match = true
			}
		}
		if match {
			return line, fmt.Sprintf("nft table %s chain %s", table, chain)
		}
	}
	return "", ""
}

// findDedupEbtables does the same for `ebtables -t filter -L` output
// (ebtables-legacy, whose rules nft cannot see).
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
