package doctor

import (
	"bytes"
	"fmt"
	"net"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/hairpinctl/hairpinctl/netops"
	"golang.org/x/sys/unix"
)

// findDedupNFT reads the namespace's bridge-family nf_tables rules over
// netlink (nft's own tables and ebtables-nft's, which live there too) for
// a duplicate-suppression rule: a drop of frames the bridge itself sends
// (ether saddr = its MAC), or any drop in a KUBE-DEDUP chain. No nft
// binary is needed, so the check works in the DaemonSet's image. The rule
// is given as nft writes what it matches on; matches it does not decode
// show as "…".
func findDedupNFT(c *netops.Client, bridgeMAC string) (rule, where string, err error) {
	mac, _ := net.ParseMAC(bridgeMAC)
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if !c.Own() {
		opts = append(opts, nftables.WithNetNSFd(int(c.Netns())))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return "", "", fmt.Errorf("nf_tables netlink socket in netns %s: %w", c.NetnsLabel(), err)
	}
	defer conn.CloseLasting()
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		return "", "", fmt.Errorf("list nf_tables bridge chains in netns %s: %w", c.NetnsLabel(), err)
	}
	for _, ch := range chains {
		rules, err := conn.GetRules(ch.Table, ch)
		if err != nil {
			return "", "", fmt.Errorf("read nf_tables bridge chain %s %s in netns %s: %w", ch.Table.Name, ch.Name, c.NetnsLabel(), err)
		}
		for _, r := range rules {
			text, drop, fromMAC := describeBridgeRule(r.Exprs, mac)
			if drop && (fromMAC || ch.Name == dedupChain) {
				return text, fmt.Sprintf("nft table bridge %s chain %s", ch.Table.Name, ch.Name), nil
			}
		}
	}
	return "", "", nil
}

// describeBridgeRule writes a bridge rule's matches as nft does, for the
// forms ebtables-nft and kubenet use (ether saddr/daddr/type, the
// interface names, ip saddr/daddr with a prefix); it reports whether the
// rule's verdict is drop and whether it matches frames from mac.
func describeBridgeRule(exprs []expr.Any, mac net.HardwareAddr) (text string, drop, fromMAC bool) {
	var parts []string
	// What the register holds: a payload or a meta key, and the mask a
	// bitwise expression applied to it.
	var load *expr.Payload
	var meta string
	var mask []byte
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Payload:
			load, meta, mask = e, "", nil
		case *expr.Meta:
			load, meta, mask = nil, metaField(e.Key), nil
		case *expr.Bitwise:
			mask = e.Mask
		case *expr.Cmp:
			var matched []match
			switch {
			case e.Op != expr.CmpOpEq:
			case load != nil:
				matched = payloadMatches(load, e.Data, mask)
			case meta != "":
				matched = []match{{meta, metaValue(meta, e.Data)}}
			}
			if matched == nil {
				parts = append(parts, "…")
			}
			for _, m := range matched {
				parts = append(parts, m.field+" "+m.value)
				if m.field == "ether saddr" && len(mac) == 6 && m.value == mac.String() {
					fromMAC = true
				}
			}
			load, meta = nil, ""
		case *expr.Counter:
			parts = append(parts, "counter")
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictDrop:
				parts, drop = append(parts, "drop"), true
			case expr.VerdictAccept:
				parts = append(parts, "accept")
			case expr.VerdictJump:
				parts = append(parts, "jump "+e.Chain)
			case expr.VerdictGoto:
				parts = append(parts, "goto "+e.Chain)
			default:
				parts = append(parts, "…")
			}
		default:
			parts = append(parts, "…")
		}
	}
	return strings.Join(parts, " "), drop, fromMAC
}

// match is one "field value" of a rule as nft writes it.
type match struct{ field, value string }

// headerField is a header field the dedup rules match on.
type headerField struct {
	name     string
	off, len uint32
}

var (
	etherFields = []headerField{{"ether daddr", 0, 6}, {"ether saddr", 6, 6}, {"ether type", 12, 2}}
	ipFields    = []headerField{{"ip saddr", 12, 4}, {"ip daddr", 16, 4}}
)

// payloadMatches splits a payload compared with data into the header
// fields it covers: nft merges adjacent matches into one load ("ether
// saddr X ether type ip" is one compare of 8 bytes) and compares a
// byte-aligned prefix on its bytes alone ("ip saddr 10.244.0.0/24" is 3
// bytes). nil when the load is not made of such fields.
func payloadMatches(p *expr.Payload, data, mask []byte) []match {
	var fields []headerField
	switch p.Base {
	case expr.PayloadBaseLLHeader:
		fields = etherFields
	case expr.PayloadBaseNetworkHeader:
		fields = ipFields
	default:
		return nil
	}
	if uint32(len(data)) != p.Len {
		return nil
	}
	var out []match
	off, rest := p.Offset, data
	for _, f := range fields {
		if len(rest) == 0 || f.off != off {
			continue
		}
		n := min(f.len, uint32(len(rest)))
		if n < f.len && !strings.HasPrefix(f.name, "ip ") {
			return nil
		}
		out = append(out, match{f.name, fieldValue(f, rest[:n], mask)})
		off, rest = off+n, rest[n:]
	}
	if len(rest) > 0 || mask != nil && len(out) != 1 {
		return nil
	}
	return out
}

// fieldValue writes a header field's value (its first bytes only, for an
// address prefix) in nft's syntax.
func fieldValue(f headerField, b, mask []byte) string {
	switch {
	case strings.HasPrefix(f.name, "ether ") && f.len == 6:
		return net.HardwareAddr(b).String()
	case f.name == "ether type":
		return etherType(b)
	}
	ip := make(net.IP, 4)
	copy(ip, b)
	ones := 8 * len(b)
	if m, bits := net.IPMask(mask).Size(); mask != nil && bits == 32 {
		ones = m
	}
	if ones == 32 {
		return ip.String()
	}
	return fmt.Sprintf("%s/%d", ip, ones)
}

// etherType writes an EtherType as nft does.
func etherType(b []byte) string {
	switch {
	case bytes.Equal(b, []byte{0x08, 0x00}):
		return "ip"
	case bytes.Equal(b, []byte{0x86, 0xdd}):
		return "ip6"
	case bytes.Equal(b, []byte{0x08, 0x06}):
		return "arp"
	}
	return fmt.Sprintf("0x%x", b)
}

// metaField names the meta keys the dedup rules match on, "" for others.
func metaField(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyIIFNAME:
		return "iifname"
	case expr.MetaKeyOIFNAME:
		return "oifname"
	case expr.MetaKeyPROTOCOL:
		return "meta protocol"
	}
	return ""
}

// metaValue writes a compared meta value in nft's syntax.
func metaValue(field string, data []byte) string {
	if field == "meta protocol" {
		return etherType(data)
	}
	// A name compared on fewer bytes than IFNAMSIZ, without its NUL, is a
	// prefix: ebtables' "veth+", nft's "veth*".
	name := strings.TrimRight(string(data), "\x00")
	if len(data) < unix.IFNAMSIZ && !bytes.HasSuffix(data, []byte{0}) {
		name += "*"
	}
	return fmt.Sprintf("%q", name)
}
