package netops

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// updateServices rewrites testdata/services/*.golden from the parsers'
// output (go test ./netops -run 'Parse' -update-services). The name is
// specific so that it cannot clash with another golden flag in netops.
var updateServices = flag.Bool("update-services", false, "rewrite testdata/services/*.golden")

const servicesTestdata = "testdata/services"

// parsedView is what a golden file records of a parse.
type parsedView struct {
	Masquerade    MasqueradePlumbing `json:"masquerade"`
	Unparsed      int                `json:"unparsed"`
	UnparsedRules []string           `json:"unparsedRules,omitempty"`
	Services      []Service          `json:"services"`
}

func viewOf(res *ServicesResult) parsedView {
	return parsedView{Masquerade: res.Masquerade, Unparsed: res.Unparsed, UnparsedRules: res.UnparsedRules, Services: res.Services}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	golden := path + ".golden"
	if *updateServices {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (create it with -update-services)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s (rerun with -update-services and review the diff):\n%s", path, golden, got)
	}
}

func marshalView(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func familyOfFixture(name string) int {
	if strings.HasPrefix(name, "ip6tables") || strings.HasPrefix(name, "nftables6") {
		return 6
	}
	return 4
}

func parseFixture(t *testing.T, path string, raw bool) *ServicesResult {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	base := filepath.Base(path)
	var res *ServicesResult
	if strings.HasSuffix(base, ".list") {
		res, err = parseNFTList(f, familyOfFixture(base), raw, nil)
	} else {
		res, err = parseIPTablesSave(f, familyOfFixture(base), BackendIPTablesNFT, raw, nil)
	}
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return res
}

// Every fixture: kube-proxy's own text (*.rules) and what iptables-nft-save
// and iptables-legacy-save print after loading it into a kernel (*.save).
func TestParseIPTablesGolden(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(servicesTestdata, "*.rules"))
	saves, _ := filepath.Glob(filepath.Join(servicesTestdata, "*.save"))
	files = append(files, saves...)
	if len(files) < 10 {
		t.Fatalf("only %d fixtures in %s", len(files), servicesTestdata)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			res := parseFixture(t, path, true)
			checkGolden(t, path, marshalView(t, viewOf(res)))
		})
	}
}

// What kube-proxy wrote and what each iptables backend prints back must
// give the same services: option order, /32, 11-decimal probabilities,
// --set-xmark and comment quoting must not matter.
func TestParseIPTablesNormalisationInvariant(t *testing.T) {
	rules, _ := filepath.Glob(filepath.Join(servicesTestdata, "*.rules"))
	for _, src := range rules {
		base := strings.TrimSuffix(src, ".rules")
		t.Run(filepath.Base(base), func(t *testing.T) {
			want := stripRaw(parseFixture(t, src, false))
			for _, variant := range []string{".nft.save", ".legacy.save"} {
				got := stripRaw(parseFixture(t, base+variant, false))
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s parses differently from %s:\n got %s\nwant %s", base+variant, src, marshalView(t, got), marshalView(t, want))
				}
			}
		})
	}
}

func stripRaw(res *ServicesResult) parsedView {
	v := viewOf(res)
	v.UnparsedRules = nil
	for i := range v.Services {
		v.Services[i].Raw = nil
		// iptables-save prints probabilities with 11 decimals where
		// kube-proxy wrote 10; the kernel keeps 32 bits.
		for j := range v.Services[i].Endpoints {
			e := &v.Services[i].Endpoints[j]
			e.Probability = roundTo(e.Probability, 6)
			e.Share = roundTo(e.Share, 6)
		}
	}
	return v
}

func roundTo(f float64, places int) float64 {
	p := 1.0
	for range places {
		p *= 10
	}
	return float64(int64(f*p+0.5)) / p
}

// source is a dump's text and a name for it.
type source struct {
	name string
	text []byte
}

// iptablesSources reads every iptables fixture: kube-proxy's text and
// what the two backends print back.
func iptablesSources(t *testing.T) []source {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(servicesTestdata, "*.rules"))
	saves, _ := filepath.Glob(filepath.Join(servicesTestdata, "*.save"))
	var sources []source
	for _, path := range append(files, saves...) {
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, source{path, text})
	}
	return sources
}

// A link made while a dump pauses, anywhere, must not change the result:
// kept when the rest adds no entry or link (in order when every service
// was named), redone when it does. Every split point of every iptables
// fixture, plain and --raw.
func TestParseIPTablesSpeculativeLink(t *testing.T) {
	sources := iptablesSources(t)
	// Services named only by their chains' comments, which filling the
	// endpoints reads: unnamed, zz/last sorts before aa/first (by address).
	sources = append(sources, source{"named-by-chains", []byte(`*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-SVC-BBBBBBBBBBBBBBBB - [0:0]
-A KUBE-SEP-AAAAAAAAAAAAAAAA -s 10.244.0.1/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m tcp -j DNAT --to-destination 10.244.0.1:80
-A KUBE-SEP-BBBBBBBBBBBBBBBB -s 10.244.0.2/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-BBBBBBBBBBBBBBBB -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:80
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-AAAAAAAAAAAAAAAA
-A KUBE-SERVICES -d 10.96.0.2/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-BBBBBBBBBBBBBBBB
-A KUBE-SVC-AAAAAAAAAAAAAAAA -m comment --comment "zz/last:http -> 10.244.0.1:80" -j KUBE-SEP-AAAAAAAAAAAAAAAA
-A KUBE-SVC-BBBBBBBBBBBBBBBB -m comment --comment "aa/first:http -> 10.244.0.2:80" -j KUBE-SEP-BBBBBBBBBBBBBBBB
COMMIT
`)})
	// An unnamed service whose dispatch chain is named only after its
	// external chain was: a refill must name it as a plain parse does.
	sources = append(sources, source{"named-late", []byte(`*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-EXT-EEEEEEEEEEEEEEEE - [0:0]
:KUBE-SVC-EEEEEEEEEEEEEEEE - [0:0]
-A KUBE-SEP-AAAAAAAAAAAAAAAA -s 10.244.0.1/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m tcp -j DNAT --to-destination 10.244.0.1:80
-A KUBE-SERVICES -d 10.96.0.5/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-EEEEEEEEEEEEEEEE
-A KUBE-NODEPORTS -p tcp -m tcp --dport 30080 -j KUBE-EXT-EEEEEEEEEEEEEEEE
-A KUBE-EXT-EEEEEEEEEEEEEEEE -m comment --comment "masquerade traffic for ext/name:http external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-EEEEEEEEEEEEEEEE -j KUBE-SVC-EEEEEEEEEEEEEEEE
-A KUBE-SVC-EEEEEEEEEEEEEEEE ! -s 10.244.0.0/16 -d 10.96.0.5/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-EEEEEEEEEEEEEEEE -m comment --comment "svc/name:http -> 10.244.0.1:80" -j KUBE-SEP-AAAAAAAAAAAAAAAA
COMMIT
`)})
	// Two cluster IPs jumping to one dispatch chain: both services read it.
	sources = append(sources, source{"shared-chain", []byte(`*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-SSSSSSSSSSSSSSSS - [0:0]
-A KUBE-SEP-AAAAAAAAAAAAAAAA -s 10.244.0.1/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m tcp -j DNAT --to-destination 10.244.0.1:80
-A KUBE-SEP-BBBBBBBBBBBBBBBB -s 10.244.0.2/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-BBBBBBBBBBBBBBBB -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:80
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "ns/a:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-SSSSSSSSSSSSSSSS
-A KUBE-SERVICES -d 10.96.0.2/32 -p tcp -m comment --comment "ns/b:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-SSSSSSSSSSSSSSSS
-A KUBE-SVC-SSSSSSSSSSSSSSSS -m comment --comment "ns/a:http -> 10.244.0.1:80" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-AAAAAAAAAAAAAAAA
-A KUBE-SVC-SSSSSSSSSSSSSSSS -m comment --comment "ns/a:http -> 10.244.0.2:80" -j KUBE-SEP-BBBBBBBBBBBBBBBB
COMMIT
`)})
	// Fill two services at a time, so that a fill can stop part-way.
	defer func(n int) { fillBatch = n }(fillBatch)
	fillBatch = 2
	quiets := map[string]func() func() bool{
		"no fill":   func() func() bool { return nil },
		"full fill": func() func() bool { return func() bool { return true } },
		"part fill": func() func() bool {
			n := 0
			return func() bool { n++; return n == 1 }
		},
	}
	sorted, kept, redone := 0, 0, 0
	partial, refilled, sepRefill := 0, 0, 0
	for _, src := range sources {
		path := src.name
		lines := bytes.Split(src.text, []byte("\n"))
		fam := familyOfFixture(filepath.Base(path))
		for _, raw := range []bool{false, true} {
			plain, err := parseIPTablesSave(bytes.NewReader(src.text), fam, BackendIPTablesNFT, raw, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := marshalView(t, viewOf(plain))
			for k := 0; k <= len(lines); k++ {
				for how, quiet := range quiets {
					p := newIPTParser(fam, raw)
					for _, l := range lines[:k] {
						p.line(l)
					}
					p.speculate(BackendIPTablesNFT, quiet())
					sp := p.spec
					for _, l := range lines[k:] {
						p.line(l)
					}
					res := newServicesResult(BackendIPTablesNFT)
					p.into(res, nil)
					if got := marshalView(t, viewOf(res)); !bytes.Equal(got, want) {
						t.Fatalf("%s (raw %v), link (%s) made after line %d: differs from a plain parse:\n%s", path, raw, how, k, got)
					}
					switch {
					case p.specSorted > 0:
						sorted++
					case p.specKept > 0:
						kept++
					default:
						redone++
					}
					if p.specKept > 0 && sp.filled > 0 {
						if sp.filled < len(sp.builds) {
							partial++
						}
						if sp.sepTouched {
							sepRefill++
						}
						refilled += p.specRefilled
					}
				}
			}
		}
	}
	// Every path must have run, or the test proves nothing.
	if sorted == 0 || kept == 0 || redone == 0 {
		t.Errorf("speculative links kept in order %d times, kept unordered %d, redone %d: want each", sorted, kept, redone)
	}
	if partial == 0 || refilled == 0 || sepRefill == 0 {
		t.Errorf("kept fills: %d partial, %d services refilled, %d refilled whole for an endpoint chain: want each", partial, refilled, sepRefill)
	}
}

// tableText returns a dump's lines of one table, from "*table" to its
// COMMIT.
func tableText(text []byte, table string) [][]byte {
	var out [][]byte
	in := false
	for _, l := range bytes.Split(text, []byte("\n")) {
		t := bytes.TrimSpace(l)
		if bytes.Equal(t, []byte("*"+table)) {
			in = true
		}
		if in {
			out = append(out, l)
		}
		if in && bytes.Equal(t, []byte("COMMIT")) {
			break
		}
	}
	return out
}

// A full read feeds the filter table's REJECTs wherever the nat stream
// pauses (from a filter save, or as `iptables -S` lines), links and fills
// the services there, and assembles them at the nat table's COMMIT while
// the save exits: none of it may change the result (a nat dump, then the
// filter table), and the assembly is taken only when no line follows it.
func TestParseIPTablesInterjectAndReady(t *testing.T) {
	sources := iptablesSources(t)
	// Rules not understood in both tables (listed nat first, then filter),
	// and a masquerade rule for a service that has only a REJECT.
	sources = append(sources, source{"unknowns", []byte(`*filter
:KUBE-SERVICES - [0:0]
:KUBE-FOO - [0:0]
-A KUBE-SERVICES -d 10.96.0.9/32 -p tcp -m comment --comment "ns/gone:http has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
-A KUBE-SERVICES -d 10.96.0.8/32 -p tcp -m tcp --dport 81 -j ACCEPT
-A KUBE-FOO -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]
-A KUBE-BAR -j ACCEPT
-A KUBE-SEP-AAAAAAAAAAAAAAAA -s 10.244.0.1/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m tcp -j DNAT --to-destination 10.244.0.1:80
-A KUBE-SERVICES ! -s 10.244.0.0/16 -d 10.96.0.9/32 -p tcp -m comment --comment "ns/gone:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "ns/a:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-AAAAAAAAAAAAAAAA
-A KUBE-SERVICES -d 10.96.0.7/32 -p tcp -m tcp --dport 82 -j ACCEPT
-A KUBE-SVC-AAAAAAAAAAAAAAAA -m comment --comment "ns/a:http -> 10.244.0.1:80" -j KUBE-SEP-AAAAAAAAAAAAAAAA
-A KUBE-ZED -j ACCEPT
COMMIT
`)})
	always := func() bool { return true }
	fixtures, rejects, unknowns := 0, 0, 0
	for _, src := range sources {
		path := src.name
		nat, filter := tableText(src.text, "nat"), tableText(src.text, "filter")
		if len(nat) == 0 || len(filter) == 0 {
			continue
		}
		if bytes.Contains(bytes.Join(filter, nil), []byte("has no endpoints")) {
			rejects++
		}
		fixtures++
		natText := append(bytes.Join(nat, []byte("\n")), "\n# Completed on Thu Nov 26 12:00:00 2026\n"...)
		filterText := bytes.Join(filter, []byte("\n"))
		// What `iptables -t filter -S` prints: the rules without the table
		// lines.
		var filterRules []string
		for _, l := range filter {
			if bytes.HasPrefix(l, []byte("-")) {
				filterRules = append(filterRules, string(l))
			}
		}
		fam := familyOfFixture(filepath.Base(path))
		for _, raw := range []bool{false, true} {
			plain := newIPTParser(fam, raw)
			_ = plain.feed(bytes.NewReader(natText))
			_ = plain.feed(bytes.NewReader(filterText))
			res := newServicesResult(BackendIPTablesLegacy)
			plain.into(res, nil)
			want := marshalView(t, viewOf(res))
			if raw && len(res.UnparsedRules) > 2 {
				unknowns++
			}

			// The REJECTs fed between any two lines of the nat table, up to
			// its COMMIT, the services linked and filled there, and
			// assembled at the COMMIT, as readIPTablesFull does.
			for k := 0; k < len(nat); k++ {
				for _, asLines := range []bool{false, true} {
					p := newIPTParser(fam, raw)
					for _, l := range nat[:k] {
						p.line(l)
					}
					if asLines {
						p.interject(nil, "filter", filterRules)
					} else {
						p.interject(filterText, "filter", nil)
					}
					p.speculate(BackendIPTablesLegacy, always)
					rest := append(bytes.Join(nat[k:], []byte("\n")), "\n# Completed on Thu Nov 26 12:00:00 2026\n"...)
					br := bufio.NewReader(bytes.NewReader(rest))
					committed, err := p.feedTable(br)
					if err != nil {
						t.Fatal(err)
					}
					if left, _ := io.ReadAll(br); !committed || !bytes.HasPrefix(left, []byte("# Completed")) {
						t.Fatalf("%s: feedTable stopped before %q (COMMIT seen: %v), want it to stop after the COMMIT", path, left, committed)
					}
					p.prepare(BackendIPTablesLegacy, nil)
					// The save goes quiet as it exits: nothing to do then.
					p.speculate(BackendIPTablesLegacy, always)
					if p.spec != nil {
						t.Fatalf("%s: speculated after the assembly at the COMMIT", path)
					}
					res := newServicesResult(BackendIPTablesLegacy)
					p.into(res, nil)
					if got := marshalView(t, viewOf(res)); !bytes.Equal(got, want) {
						t.Fatalf("%s (raw %v, -S lines %v), REJECTs fed after nat line %d: differs from nat then filter:\n%s\nwant:\n%s", path, raw, asLines, k, got, want)
					}
					if p.readyKept != 1 || p.readyCollected != 1 {
						t.Fatalf("%s: assembly made at the COMMIT not taken (kept %d, copied at the COMMIT %d)", path, p.readyKept, p.readyCollected)
					}
				}
			}

			// With filters, the assembly made at the COMMIT is taken too;
			// which filters matched is recorded only once the dump ended.
			if len(res.Services) > 0 {
				args := []string{res.Services[0].ClusterIP, "10.96.255.254"}
				parse := func(prepare bool) ([]byte, []string, *iptParser) {
					sel, err := newServiceSelector(args, nil)
					if err != nil {
						t.Fatal(err)
					}
					p := newIPTParser(fam, raw)
					p.interject(filterText, "filter", nil)
					br := bufio.NewReader(bytes.NewReader(natText))
					if _, err := p.feedTable(br); err != nil {
						t.Fatal(err)
					}
					if prepare {
						p.prepare(BackendIPTablesLegacy, sel)
						if u := sel.unmatched(); !slices.Equal(u, args) {
							t.Fatalf("%s: filters recorded as matched at the COMMIT: unmatched %v, want %v", path, u, args)
						}
					}
					if err := p.feed(br); err != nil {
						t.Fatal(err)
					}
					got := newServicesResult(BackendIPTablesLegacy)
					p.into(got, sel)
					return marshalView(t, viewOf(got)), sel.unmatched(), p
				}
				wantSel, wantUnmatched, _ := parse(false)
				gotSel, gotUnmatched, p := parse(true)
				if !bytes.Equal(gotSel, wantSel) || !slices.Equal(gotUnmatched, wantUnmatched) {
					t.Fatalf("%s (raw %v), filtered by %v and assembled at the COMMIT:\n%s\nunmatched %v, want:\n%s\nunmatched %v", path, raw, args, gotSel, gotUnmatched, wantSel, wantUnmatched)
				}
				if p.readyKept != 1 || p.readyCollected != 0 {
					t.Fatalf("%s: filtered assembly made at the COMMIT: kept %d, copied at the COMMIT %d, want 1 and 0", path, p.readyKept, p.readyCollected)
				}
				if !slices.Equal(wantUnmatched, args[1:]) {
					t.Fatalf("%s: unmatched %v, want %v", path, wantUnmatched, args[1:])
				}
			}

			// An assembly made before the last line is not taken.
			for k := 0; k < len(nat); k++ {
				p := newIPTParser(fam, raw)
				p.interject(filterText, "filter", nil)
				for _, l := range nat[:k] {
					p.line(l)
				}
				p.prepare(BackendIPTablesLegacy, nil)
				for _, l := range nat[k:] {
					p.line(l)
				}
				res := newServicesResult(BackendIPTablesLegacy)
				p.into(res, nil)
				if got := marshalView(t, viewOf(res)); !bytes.Equal(got, want) {
					t.Fatalf("%s (raw %v), assembled after nat line %d: differs from a plain parse:\n%s", path, raw, k, got)
				}
				if p.readyKept != 0 {
					t.Fatalf("%s: assembly made after nat line %d of %d taken", path, k, len(nat))
				}
			}
		}
	}
	// A dump that ends without its COMMIT says so.
	if committed, _ := newIPTParser(4, false).feedTable(bufio.NewReader(strings.NewReader("*nat\n-A KUBE-SERVICES -j ACCEPT\n"))); committed {
		t.Errorf("feedTable reported a COMMIT in a dump without one")
	}
	if fixtures < 10 || rejects == 0 || unknowns == 0 {
		t.Fatalf("%d fixtures with both tables, %d with REJECTs, %d with unknown rules in both: want at least 10, one and one", fixtures, rejects, unknowns)
	}
}

// Rules as hand-written or older tools print them: any option order,
// negation before or after the option, counters, quotes with escapes.
func TestParseIPTablesRuleVariants(t *testing.T) {
	tests := []struct {
		name, line string
		ok         bool
		check      func(r *iptRule) bool
	}{
		{"kube-proxy order", `-A KUBE-SERVICES -m comment --comment "a/b:c cluster IP" -m tcp -p tcp -d 10.96.0.1 --dport 443 -j KUBE-SVC-X`, true,
			func(r *iptRule) bool {
				return string(r.dst) == "10.96.0.1" && string(r.dport) == "443" && string(r.comment) == "a/b:c cluster IP" && string(r.target) == "KUBE-SVC-X"
			}},
		{"save order", `-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "a/b:c cluster IP" -m tcp --dport 443 -j KUBE-SVC-X`, true,
			func(r *iptRule) bool { return string(r.dst) == "10.96.0.1/32" && string(r.proto) == "tcp" }},
		{"negation before", `-A KUBE-SVC-X ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ`, true,
			func(r *iptRule) bool { return r.srcNeg && string(r.src) == "10.0.0.0/8" }},
		{"negation after (iptables 1.4)", `-A KUBE-SVC-X -s ! 10.0.0.0/8 -j KUBE-MARK-MASQ`, true,
			func(r *iptRule) bool { return r.srcNeg && string(r.src) == "10.0.0.0/8" }},
		{"escaped quotes", `-A KUBE-SERVICES -m comment --comment "say \"hi\" \\ now" -j ACCEPT`, true,
			func(r *iptRule) bool { return string(r.comment) == `say "hi" \ now` }},
		{"bare comment", `-A KUBE-SEP-X -m comment --comment ns/a:b -s 10.1.1.1/32 -j KUBE-MARK-MASQ`, true,
			func(r *iptRule) bool { return string(r.comment) == "ns/a:b" }},
		{"probability 11 decimals", `-A KUBE-SVC-X -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-Y`, true,
			func(r *iptRule) bool { return r.hasProb && string(r.prob) == "0.33333333349" }},
		{"set-xmark", `-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000`, true,
			func(r *iptRule) bool { return string(r.setMark) == "0x4000/0x4000" }},
		{"recent rcheck", `-A KUBE-SVC-X -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-Y --mask 255.255.255.255 --rsource -j KUBE-SEP-Y`, true,
			func(r *iptRule) bool { return r.recentCheck && string(r.seconds) == "10800" && !r.extra }},
		{"unknown option", `-A KUBE-SEP-X -i eth0 -j LOG --log-prefix "x y"`, true,
			func(r *iptRule) bool { return r.extra && string(r.target) == "LOG" }},
		{"unterminated quote", `-A KUBE-SERVICES -m comment --comment "oops -j ACCEPT`, false, nil},
		{"option without value", `-A KUBE-SERVICES -d`, false, nil},
		{"lone bang", `-A KUBE-SERVICES !`, false, nil},
	}
	p := newIPTParser(4, false)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r iptRule
			ok := p.parseRule([]byte(tt.line), &r)
			if ok != tt.ok {
				t.Fatalf("parseRule ok = %v, want %v", ok, tt.ok)
			}
			if tt.check != nil && !tt.check(&r) {
				t.Errorf("parseRule(%q) = %+v", tt.line, r)
			}
		})
	}
}

// Chains are mapped through jumps: with no comment anywhere (not even the
// ones kube-proxy keeps in large clusters) the endpoints, node ports and
// hairpin rules are still found; only the names are unknown.
func TestParseIPTablesWithoutAnyComment(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(servicesTestdata, "iptables-modern.nft.save"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, l := range strings.Split(string(src), "\n") {
		if i := strings.Index(l, " -m comment --comment "); i >= 0 {
			rest := l[i+len(" -m comment --comment "):]
			if strings.HasPrefix(rest, `"`) {
				rest = rest[strings.Index(rest[1:], `"`)+2:]
			} else if j := strings.IndexByte(rest, ' '); j >= 0 {
				rest = rest[j:]
			}
			l = l[:i] + rest
		}
		b.WriteString(l + "\n")
	}
	if strings.Contains(b.String(), "--comment") {
		t.Fatal("comments left in the input")
	}
	res, err := parseIPTablesSave(strings.NewReader(b.String()), 4, BackendIPTablesNFT, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := stripRaw(parseFixture(t, filepath.Join(servicesTestdata, "iptables-modern.nft.save"), false))
	got := stripRaw(res)
	if len(got.Services) != len(want.Services) {
		t.Fatalf("%d services without comments, %d with", len(got.Services), len(want.Services))
	}
	byIP := map[string]Service{}
	for _, s := range want.Services {
		byIP[s.ClusterIP] = s
	}
	for _, s := range got.Services {
		w := byIP[s.ClusterIP]
		// Names come from comments; everything else from the jumps. The
		// filter table's REJECT carries the no-endpoints service's name.
		if s.Name == "" {
			w.Namespace, w.Name, w.PortName = "", "", ""
		}
		// Both external and load-balancer IPs jump to KUBE-EXT; only the
		// comment tells them apart.
		w.ExternalIPs = append(w.ExternalIPs, w.LoadBalancerIPs...)
		s.ExternalIPs = append(s.ExternalIPs, s.LoadBalancerIPs...)
		w.LoadBalancerIPs, s.LoadBalancerIPs = nil, nil
		slices.Sort(w.ExternalIPs)
		slices.Sort(s.ExternalIPs)
		if !reflect.DeepEqual(s, w) {
			t.Errorf("without comments:\n got %s\nwant %s", marshalView(t, s), marshalView(t, w))
		}
	}
	if got.Unparsed != 0 {
		t.Errorf("unparsed = %d", got.Unparsed)
	}
}

// Nothing crashes the parser and nothing is dropped silently: junk lines
// are counted.
func TestParseIPTablesJunk(t *testing.T) {
	long := "-A KUBE-SERVICES -m comment --comment " + strings.Repeat("x", maxRuleLine+10) + " -j ACCEPT\n"
	in := "*nat\n" + long + "garbage line\n-A KUBE-SVC-X -j KUBE-SEP-Y --bogus\n\x00\xff\n[1:2] -A KUBE-FOO -j RETURN\nCOMMIT\n"
	res, err := parseIPTablesSave(strings.NewReader(in), 4, BackendIPTablesNFT, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Unparsed != 5 {
		t.Errorf("unparsed = %d, want 5 (long line, garbage, unknown option, binary, KUBE-FOO): %q", res.Unparsed, res.UnparsedRules)
	}
	if len(res.Services) != 0 {
		t.Errorf("services from junk: %+v", res.Services)
	}
}

func FuzzParseIPTablesSave(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(servicesTestdata, "*.save"))
	rules, _ := filepath.Glob(filepath.Join(servicesTestdata, "*.rules"))
	for _, p := range append(files, rules...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("*nat\n-A KUBE-SERVICES -d 1.2.3.4/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A\n-A KUBE-SVC-A -j KUBE-SEP-B\n-A KUBE-SEP-B -s 1.1.1.1/32 -j KUBE-MARK-MASQ\n-A KUBE-SEP-B -p tcp -j DNAT --to-destination [::1]:x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, raw := range []bool{false, true} {
			res, err := parseIPTablesSave(bytes.NewReader(data), 4, BackendIPTablesNFT, raw, nil)
			if err != nil {
				t.Fatalf("parse error on in-memory input: %v", err)
			}
			if res.Unparsed < 0 || res.Services == nil {
				t.Fatalf("bad result %+v", res)
			}
			for _, s := range res.Services {
				if s.Endpoints == nil {
					t.Fatalf("nil endpoints in %+v", s)
				}
				for _, e := range s.Endpoints {
					if e.Share < 0 || e.Share > 1 || e.Probability < 0 || e.Probability > 1 {
						t.Fatalf("probability out of range: %+v", e)
					}
				}
			}
		}
	})
}
