package kubeproxy

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// renderFixtures are the kube-proxy fixtures with a KUBE-SERVICES chain,
// each with the family its tool loads.
type renderCase struct {
	file   string // under testdata/services, or the rules themselves
	family int
}

var renderFixtures = []renderCase{
	{"iptables-modern.rules", 4},
	{"iptables-old.rules", 4},
	{"iptables-odd.rules", 4},
	{"iptables-large.rules", 4},
	{"ip6tables-modern.rules", 6},
}

// declined: the rules renderIPTRule leaves to iptables, for matches and
// targets it does not render.
var declined = regexp.MustCompile(`-m sctp\b|-j SNAT\b|userdata comment| -[sd] ::[0-9]+\.`)

// renderEdgeForms are rule forms the fixtures' KUBE-SERVICES chains lack:
// prefixes off a byte boundary (a bitwise mask in nf_tables), negated
// destinations, bare comments, no comment, goto, built-in verdicts, and
// SCTP, whose port match the renderer declines.
var renderEdgeForms = map[int]string{
	4: `*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES ! -s 10.244.0.0/20 -d 10.96.0.12/32 -p tcp -m comment --comment "ns/a:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -s 10.244.16.0/21 ! -d 10.96.0.0/12 -j RETURN
-A KUBE-SERVICES -d 10.96.0.13/32 -p udp -m comment --comment bare-comment_1 -m udp --dport 53 -g KUBE-SVC-AAAAAAAAAAAAAAAA
-A KUBE-SERVICES -d 10.96.0.14/32 -p tcp -m tcp --dport 8080 -j KUBE-SVC-AAAAAAAAAAAAAAAA
-A KUBE-SERVICES -d 10.96.0.15/32 -p sctp -m comment --comment "ns/s:p cluster IP" -m sctp --dport 80 -j KUBE-SVC-AAAAAAAAAAAAAAAA
-A KUBE-SERVICES -m addrtype ! --dst-type LOCAL -j ACCEPT
COMMIT
`,
	6: `*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-SVC-BBBBBBBBBBBBBBBB - [0:0]
:KUBE-SVC-CCCCCCCCCCCCCCCC - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A KUBE-SERVICES ! -s fd00:10:244::/56 -d fd00:10:96::12/128 -p tcp -m comment --comment "ns/a:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -d ::ffff:10.96.0.13/128 -p udp -m udp --dport 53 -j KUBE-SVC-AAAAAAAAAAAAAAAA
-A KUBE-SERVICES -s fd00:10:244:8::/61 -j RETURN
-A KUBE-SERVICES -d ::10.96.0.1/128 -p tcp -m tcp --dport 80 -j KUBE-SVC-BBBBBBBBBBBBBBBB
-A KUBE-SERVICES -d ::1/128 -p tcp -m tcp --dport 80 -j KUBE-SVC-CCCCCCCCCCCCCCCC
COMMIT
`,
}

// renderEdgeNFT adds, with nft, a rule whose comment is in the rule's
// userdata, where nft keeps comments and iptables prints them too.
var renderEdgeNFT = map[int][]string{
	4: {"add", "rule", "ip", "nat", "KUBE-SERVICES", "meta", "l4proto", "tcp", "ip", "daddr", "10.96.0.16", "tcp", "dport", "80",
		"counter", "jump", "KUBE-SVC-AAAAAAAAAAAAAAAA", "comment", `"userdata comment"`},
}

// renderCases are the fixtures and the edge forms, by name.
func renderCases() map[string]renderCase {
	cases := map[string]renderCase{}
	for _, f := range renderFixtures {
		cases[f.file] = f
	}
	for fam, text := range renderEdgeForms {
		cases[fmt.Sprintf("edge-forms-ipv%d", fam)] = renderCase{text, fam}
	}
	return cases
}

// kubeServicesListing loads fixture (a file under testdata/services, or
// rules text) with iptables-nft (or ip6tables-nft) and returns what `-t
// nat -S KUBE-SERVICES` prints.
func kubeServicesListing(t *testing.T, fixture string, family int) (*netops.Client, []string) {
	t.Helper()
	l, c := servicesLab(t)
	tool := "iptables-nft"
	if family == 6 {
		tool = "ip6tables-nft"
	}
	if strings.HasPrefix(fixture, "*nat") {
		if _, err := l.Exec(fixture, tool+"-restore"); err != nil {
			t.Fatal(err)
		}
		if add := renderEdgeNFT[family]; add != nil {
			if _, err := l.Exec("", "nft", add...); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		loadFixture(t, l, tool+"-restore", fixture)
	}
	out, err := l.Exec("", tool, "-t", "nat", "-S", "KUBE-SERVICES")
	if err != nil {
		t.Fatal(err)
	}
	return c, strings.Split(strings.TrimSpace(out), "\n")
}

// Every KUBE-SERVICES rule renderIPTRule renders from the kernel's
// nf_tables expressions is the very line `iptables-nft -S` prints, and it
// declines exactly the rules with matches or targets it does not know.
func TestRenderIPTRuleMatchesIPTables(t *testing.T) {
	for name, f := range renderCases() {
		t.Run(name, func(t *testing.T) {
			c, listing := kubeServicesListing(t, f.file, f.family)
			want := slices.DeleteFunc(slices.Clone(listing), func(l string) bool { return !strings.HasPrefix(l, "-A ") })
			var got []string
			err := nftRules(c, f.family, "nat", "KUBE-SERVICES", func(r nftRule) {
				rr, ok := renderNFTRule(f.family, "KUBE-SERVICES", r)
				if !ok {
					rr.line = "(declined)"
				}
				got = append(got, rr.line)
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 || len(got) != len(want) {
				t.Fatalf("dump has %d rules, iptables -S %d", len(got), len(want))
			}
			rendered := 0
			for i, w := range want {
				switch {
				case declined.MatchString(w) != (got[i] == "(declined)"):
					t.Errorf("rule %d: rendered %q for %q", i, got[i], w)
				case got[i] == "(declined)":
				case got[i] != w:
					t.Errorf("rule %d:\n got %s\nwant %s", i, got[i], w)
				default:
					rendered++
				}
			}
			if rendered < len(want)/2 {
				t.Errorf("rendered only %d of %d rules", rendered, len(want))
			}
		})
	}
}

var ruleAddr = regexp.MustCompile(` -[sd] ([0-9a-f:.]+)/`)

// A lookup over netlink keeps what lookupLines keeps of the -S listing,
// for every address the chain names and one it does not; when a rule it
// must keep is one it declines, it says so and the caller lists the chain
// with iptables instead.
func TestKubeServicesLookupNFTMatchesListing(t *testing.T) {
	for name, f := range renderCases() {
		t.Run(name, func(t *testing.T) {
			c, listing := kubeServicesListing(t, f.file, f.family)
			addrs := []netip.Addr{netip.MustParseAddr("10.99.99.99"), netip.MustParseAddr("fd00:99::99")}
			for _, l := range listing {
				for _, m := range ruleAddr.FindAllStringSubmatch(l, -1) {
					addrs = append(addrs, netip.MustParseAddr(m[1]))
				}
			}
			fallbacks := 0
			for _, a := range addrs {
				// Lookups take unmapped addresses, as the selector gives them.
				a = a.Unmap()
				got, ok, err := kubeServicesLookupNFT(c, f.family, []netip.Addr{a})
				if err != nil {
					t.Fatal(err)
				}
				// What lookupLines keeps, by text (the fixtures write
				// addresses as ip6tables prints them).
				targets := make([]string, len(listing))
				for i, l := range listing {
					targets[i] = jumpTarget(l)
				}
				texts := []string{a.String()}
				if f.family == 6 && a.Is4() {
					texts = append(texts, "::ffff:"+a.String())
				}
				keep := lookupKeep(len(listing), func(i int) string { return targets[i] }, func(i int) bool { return namesAddr(listing[i], texts) })
				var want []string
				mustDecline := false
				for i, l := range listing {
					if keep[i] || strings.HasPrefix(l, "-N ") {
						want = append(want, l)
						mustDecline = mustDecline || declined.MatchString(l)
					}
				}
				// It must fall back when it keeps a rule it cannot render,
				// and may only where the chain has one it might keep.
				if ok && mustDecline || !ok && !slices.ContainsFunc(listing, declined.MatchString) {
					t.Errorf("lookup %s: ok %v, a kept rule to decline %v", a, ok, mustDecline)
				}
				if !ok {
					fallbacks++
					continue
				}
				if !slices.Equal(got, want) {
					t.Errorf("lookup %s:\n got %q\nwant %q", a, got, want)
				}
			}
			t.Logf("%d lookups, %d fell back to iptables", len(addrs), fallbacks)
			if fallbacks == len(addrs) {
				t.Errorf("every lookup fell back to iptables")
			}
		})
	}
}

// Quoting as xtables_save_string quotes: bare words stay bare; anything
// else is quoted with quote marks and backslashes escaped.
func TestXtablesQuote(t *testing.T) {
	for in, want := range map[string]string{
		"ns1/svc:http":          `"ns1/svc:http"`,
		"kube-proxy_rule-1":     `kube-proxy_rule-1`,
		"":                      `""`,
		"two words":             `"two words"`,
		`say "hi"`:              `"say \"hi\""`,
		`back\slash and 'tick'`: `"back\\slash and \'tick\'"`,
	} {
		if got := xtablesQuote(in); got != want {
			t.Errorf("xtablesQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestIsPrefixMask(t *testing.T) {
	for _, tt := range []struct {
		mask []byte
		want bool
	}{
		{[]byte{0xff, 0xff, 0xf0}, true},
		{[]byte{0xff, 0xff, 0xff, 0xff}, true},
		{[]byte{0x80, 0x00}, true},
		{[]byte{0xff, 0x0f}, false},
		{[]byte{0x00, 0xff}, false},
		{[]byte{0xf0, 0xf0}, false},
	} {
		if got := isPrefixMask(tt.mask); got != tt.want {
			t.Errorf("isPrefixMask(% x) = %v, want %v", tt.mask, got, tt.want)
		}
	}
}

// A rule whose attributes or expressions are malformed is an error, never
// a shorter list of expressions.
func TestLocateRuleMalformed(t *testing.T) {
	elem := nl.NewRtAttr(unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, []byte{0xff, 0x00, 0x01, 0x00})
	list := nl.NewRtAttr(unix.NFTA_RULE_EXPRESSIONS|unix.NLA_F_NESTED, elem.Serialize())
	good := nl.NewRtAttr(unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, nl.NewRtAttr(unix.NFTA_EXPR_NAME, nl.ZeroTerminated("counter")).Serialize())
	for name, attrs := range map[string][]byte{
		"truncated attribute":  {0x01, 0x00},
		"length past the end":  {0x08, 0x00, 0x01, 0x00},
		"bad expression entry": list.Serialize(),
	} {
		if r, err := locateRule(unix.NFPROTO_IPV4, attrs); err == nil {
			t.Errorf("%s: no error, %d expressions", name, len(r.exprs))
		}
	}
	ok := nl.NewRtAttr(unix.NFTA_RULE_EXPRESSIONS|unix.NLA_F_NESTED, append(good.Serialize(), good.Serialize()...))
	r, err := locateRule(unix.NFPROTO_IPV4, ok.Serialize())
	if err != nil || len(r.exprs) != 2 || string(r.exprs[1].name) != "counter" {
		t.Errorf("well-formed rule: %d expressions, %v", len(r.exprs), err)
	}
}

func TestUserdataComment(t *testing.T) {
	for _, tt := range []struct {
		udata []byte
		want  bool
	}{
		{nil, false},
		{[]byte{0, 3, 'a', 'b', 'c'}, true},       // NFTNL_UDATA_RULE_COMMENT
		{[]byte{1, 1, 'x'}, false},                // another entry
		{[]byte{1, 1, 'x', 0, 2, 'h', 'i'}, true}, // a comment after it
		{[]byte{1, 5, 'x'}, true},                 // cannot be walked
	} {
		if got := (nftRule{userdata: tt.udata}).userdataComment(); got != tt.want {
			t.Errorf("userdata % x: comment %v, want %v", tt.udata, got, tt.want)
		}
	}
}

// A lookup in a namespace without KUBE-SERVICES finds nothing, as iptables
// -S does; an empty chain is listed as empty.
func TestKubeServicesLookupNFTMissingChain(t *testing.T) {
	l, c := servicesLab(t)
	if _, err := l.Exec("*nat\n:KUBE-OTHER - [0:0]\nCOMMIT\n", "iptables-nft-restore"); err != nil {
		t.Fatal(err)
	}
	addr := []netip.Addr{netip.MustParseAddr("10.96.0.10")}
	lines, ok, err := kubeServicesLookupNFT(c, 4, addr)
	if err != nil || !ok || lines != nil {
		t.Errorf("missing chain: %q ok %v err %v", lines, ok, err)
	}
	if _, err := l.Exec("*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n", "iptables-nft-restore"); err != nil {
		t.Fatal(err)
	}
	lines, ok, err = kubeServicesLookupNFT(c, 4, addr)
	if err != nil || !ok || !slices.Equal(lines, []string{"-N KUBE-SERVICES"}) {
		t.Errorf("empty chain: %q ok %v err %v", lines, ok, err)
	}
}
