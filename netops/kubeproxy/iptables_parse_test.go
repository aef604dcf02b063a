package kubeproxy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// updateServices rewrites testdata/services/*.golden from the parsers'
// output (go test ./netops/kubeproxy -run 'Parse' -update-services). The name is
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

func viewOf(res *Result) parsedView {
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

func parseFixture(t *testing.T, path string, raw bool) *Result {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	base := filepath.Base(path)
	var res *Result
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

func stripRaw(res *Result) parsedView {
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
