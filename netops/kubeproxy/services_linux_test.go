package kubeproxy

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/clienttest"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
)

// captureServices reloads the kube-proxy fixtures into a lab and rewrites
// what iptables-nft-save, iptables-legacy-save and nft print for them
// (testdata/services/*.save, *.list): the parser tests run on real output.
var captureServices = flag.Bool("capture-services", false, "rewrite testdata/services/*.save and *.list from a lab")

// restoreFixture loads a fixture into the lab's node with the backend's
// restore tool (or nft -f) and returns what the backend prints back.
func restoreFixture(t *testing.T, l *lab.Lab, fixture, variant string) string {
	t.Helper()
	text, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	six := strings.HasPrefix(filepath.Base(fixture), "ip6") || strings.HasPrefix(filepath.Base(fixture), "nftables6")
	ipt := "iptables"
	if six {
		ipt = "ip6tables"
	}
	switch variant {
	case ".nft.save", ".legacy.save":
		mode := strings.Split(variant, ".")[1]
		if _, err := l.Exec(string(text), ipt+"-"+mode+"-restore"); err != nil {
			t.Fatalf("load %s: %v", fixture, err)
		}
		out, err := l.Exec("", ipt+"-"+mode+"-save")
		if err != nil {
			t.Fatal(err)
		}
		return out
	case ".list":
		if _, err := l.Exec(string(text), "nft", "-f", "-"); err != nil {
			t.Fatalf("load %s: %v", fixture, err)
		}
		fam := "ip"
		if six {
			fam = "ip6"
		}
		out, err := l.Exec("", "nft", "list", "table", fam, "kube-proxy")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	t.Fatalf("unknown variant %s", variant)
	return ""
}

// The captured fixtures are what this kernel's iptables and nft print:
// loading each kube-proxy fixture and parsing the live output gives what
// parsing the stored capture gives (with -capture-services, the stored
// capture is rewritten instead).
func TestServicesCapturedFixturesMatchKernel(t *testing.T) {
	type job struct{ src, variant string }
	var jobs []job
	rules, _ := filepath.Glob(filepath.Join(servicesTestdata, "*.rules"))
	for _, r := range rules {
		jobs = append(jobs, job{r, ".nft.save"}, job{r, ".legacy.save"})
	}
	nfts, _ := filepath.Glob(filepath.Join(servicesTestdata, "*.nft"))
	for _, n := range nfts {
		jobs = append(jobs, job{n, ".list"})
	}
	if len(jobs) < 12 {
		t.Fatalf("only %d fixtures", len(jobs))
	}
	for _, j := range jobs {
		ext := filepath.Ext(j.src)
		captured := strings.TrimSuffix(j.src, ext) + j.variant
		t.Run(filepath.Base(captured), func(t *testing.T) {
			l := labtest.New(t, lab.Options{Pods: 1, Restore: "none", Prefix: "hpsvc"})
			live := restoreFixture(t, l, j.src, j.variant)
			if *captureServices {
				if err := os.WriteFile(captured, []byte(live), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			tmp := filepath.Join(t.TempDir(), filepath.Base(captured))
			if err := os.WriteFile(tmp, []byte(live), 0o644); err != nil {
				t.Fatal(err)
			}
			got, want := stripRaw(parseFixture(t, tmp, false)), stripRaw(parseFixture(t, captured, false))
			if !reflect.DeepEqual(got, want) {
				t.Errorf("this kernel's output for %s parses differently from %s (recapture with -capture-services):\n got %s\nwant %s",
					j.src, captured, marshalView(t, got), marshalView(t, want))
			}
		})
	}
}

// servicesLab is a lab without Service rules, for loading fixtures.
func servicesLab(t *testing.T) (*lab.Lab, *netops.Client) {
	t.Helper()
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none", Prefix: "hpsvc"})
	return l, clienttest.Open(t, l)
}

func loadFixture(t *testing.T, l *lab.Lab, tool, fixture string) {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(servicesTestdata, fixture))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{}
	if tool == "nft" {
		args = []string{"-f", "-"}
	}
	if _, err := l.Exec(string(text), tool, args...); err != nil {
		t.Fatalf("load %s with %s: %v", fixture, tool, err)
	}
}

// The lab's own Service, loaded by each iptables backend, reads back with
// its endpoint and the hairpin masquerade rule.
func TestServicesLabService(t *testing.T) {
	for _, tt := range []struct {
		restore string
		want    Backend
	}{
		{"iptables-nft-restore", BackendIPTablesNFT},
		{"iptables-legacy-restore", BackendIPTablesLegacy},
	} {
		t.Run(string(tt.want), func(t *testing.T) {
			l := labtest.New(t, lab.Options{Pods: 2, Restore: tt.restore, Prefix: "hpsvc"})
			c := clienttest.Open(t, l)
			res, err := Services(c, Options{WaitSeconds: 2})
			if err != nil {
				t.Fatal(err)
			}
			if res.Backend != tt.want || !reflect.DeepEqual(res.BackendsWithRules, []Backend{tt.want}) || len(res.Warnings) != 0 {
				t.Errorf("backend %s, with rules %v, warnings %q", res.Backend, res.BackendsWithRules, res.Warnings)
			}
			if len(res.Services) != 1 {
				t.Fatalf("services: %+v", res.Services)
			}
			s := res.Services[0]
			if s.Namespace+"/"+s.Name+":"+s.PortName != l.ServiceName || s.ClusterIP != l.ServiceIP.String() || s.Port != l.ServicePort || s.Protocol != "TCP" {
				t.Errorf("service %+v, want %s %s:%d", s, l.ServiceName, l.ServiceIP, l.ServicePort)
			}
			local := true // pod 1 sits in cni0's subnet
			want := Endpoint{IP: l.Pod(1).IP.String(), Port: 8080, Probability: 1, Share: 1, Chain: lab.EndpointChain(l.ServiceName, "tcp", l.Pod(1).IP.String()+":8080"), HairpinMasq: true, Local: &local}
			if len(s.Endpoints) != 1 || !reflect.DeepEqual(s.Endpoints[0], want) {
				t.Errorf("endpoints %+v, want %+v", s.Endpoints, want)
			}
			if !res.Masquerade.MarkMasq || !res.Masquerade.PostroutingMasquerade || !res.Masquerade.PostroutingHooked || res.Masquerade.Mark != "0x4000" {
				t.Errorf("masquerade %+v", res.Masquerade)
			}
		})
	}
}

// A lookup on iptables-nft lists only the chains it needs; it must find
// exactly what a full dump finds, raw rules included.
func TestServicesTargetedMatchesFull(t *testing.T) {
	for _, fixture := range []string{"iptables-modern.rules", "iptables-old.rules", "iptables-odd.rules", "iptables-large.rules", "ip6tables-modern.rules", renderEdgeForms[6]} {
		name := fixture
		if strings.HasPrefix(fixture, "*nat") {
			name = "edge-forms-ipv6" // an IPv4-mapped cluster IP among them
		}
		t.Run(name, func(t *testing.T) {
			l, c := servicesLab(t)
			family, tool := 4, "iptables-nft-restore"
			if strings.HasPrefix(fixture, "ip6") || fixture == renderEdgeForms[6] {
				family, tool = 6, "ip6tables-nft-restore"
			}
			if name == "edge-forms-ipv6" {
				if _, err := l.Exec(fixture, tool); err != nil {
					t.Fatal(err)
				}
			} else {
				loadFixture(t, l, tool, fixture)
			}
			full, err := Services(c, Options{Backend: "iptables-nft", Family: family, Raw: true, FullRead: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(full.Services) < 2 {
				t.Fatalf("%d services", len(full.Services))
			}
			for _, want := range full.Services {
				lookups := []Options{{ClusterIPs: []string{want.ClusterIP}}}
				if want.Name != "" {
					svc := want.Namespace + "/" + want.Name
					if want.PortName != "" {
						svc += ":" + want.PortName
					}
					lookups = append(lookups, Options{Names: []string{svc}})
				}
				for _, ip := range append(slices.Clone(want.ExternalIPs), want.LoadBalancerIPs...) {
					lookups = append(lookups, Options{ClusterIPs: []string{ip}})
				}
				for _, o := range lookups {
					o.Backend, o.Family, o.Raw = "iptables-nft", family, true
					got, err := Services(c, o)
					if err != nil {
						t.Fatal(err)
					}
					if len(got.Services) != 1 || !reflect.DeepEqual(got.Services[0], want) {
						t.Errorf("lookup %v%v:\n got %s\nwant %s", o.ClusterIPs, o.Names, marshalView(t, got.Services), marshalView(t, want))
					}
				}
			}
		})
	}
}

// nftables mode reads back what the captured `nft list` parses to.
func TestServicesNFTablesMode(t *testing.T) {
	l, c := servicesLab(t)
	loadFixture(t, l, "nft", "nftables-modern.nft")
	loadFixture(t, l, "nft", "nftables6-modern.nft")
	res, err := Services(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Backend != BackendNFTables || !reflect.DeepEqual(res.Families, []int{4, 6}) {
		t.Errorf("backend %s families %v", res.Backend, res.Families)
	}
	want := append(stripRaw(parseFixture(t, filepath.Join(servicesTestdata, "nftables-modern.list"), false)).Services,
		stripRaw(parseFixture(t, filepath.Join(servicesTestdata, "nftables6-modern.list"), false)).Services...)
	want = sortServices(want)
	// Local comes from the lab's bridge (cni0, 10.244.0.1/24), not from
	// the rules: checked here, then left out of the comparison.
	_, podNet, _ := net.ParseCIDR("10.244.0.0/24")
	for i := range res.Services {
		for j := range res.Services[i].Endpoints {
			e := &res.Services[i].Endpoints[j]
			if e.Local == nil || *e.Local != podNet.Contains(net.ParseIP(e.IP)) {
				t.Errorf("endpoint %s: local %v", e.IP, e.Local)
			}
			e.Local = nil
		}
	}
	if got := stripRaw(res).Services; !reflect.DeepEqual(got, want) {
		t.Errorf("nftables mode:\n got %s\nwant %s", marshalView(t, got), marshalView(t, want))
	}
	six, err := Services(c, Options{Family: 6, Names: []string{"ns2/svc2"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(six.Services) != 1 || six.Services[0].ClusterIP != "fd00:10:96::42" || six.Services[0].NodePorts[0] != 3002 {
		t.Errorf("-6 ns2/svc2: %+v", six.Services)
	}
}

// Rules in both iptables backends: auto warns and shows the larger.
func TestServicesSplitBrain(t *testing.T) {
	l, c := servicesLab(t)
	loadFixture(t, l, "iptables-nft-restore", "iptables-odd.rules")
	loadFixture(t, l, "iptables-legacy-restore", "iptables-modern.rules")
	probes, err := DetectBackends(c, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	var nft, leg BackendProbe
	for _, p := range probes {
		switch p.Backend {
		case BackendIPTablesNFT:
			nft = p
		case BackendIPTablesLegacy:
			leg = p
		}
	}
	// iptables-modern.rules has 13 rules in KUBE-SERVICES (nat).
	if !nft.HasRules || !leg.HasRules || leg.Rules != 13 {
		t.Fatalf("probes %+v", probes)
	}
	res, err := Services(c, Options{Family: 4, WaitSeconds: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Backend != BackendIPTablesLegacy || len(res.BackendsWithRules) != 2 || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "split brain") {
		t.Errorf("backend %s, with rules %v, warnings %q", res.Backend, res.BackendsWithRules, res.Warnings)
	}
	// Asked for, the other one is there.
	res, err = Services(c, Options{Backend: "iptables-nft", Family: 4})
	if err != nil || res.Backend != BackendIPTablesNFT || len(res.Services) != 2 || res.Unparsed != 4 {
		t.Errorf("--backend iptables-nft: %v %+v", err, res)
	}
}

// A held xtables lock is waited for a bounded time; saves never wait.
func TestServicesXtablesLock(t *testing.T) {
	l, c := servicesLab(t)
	loadFixture(t, l, "iptables-nft-restore", "iptables-odd.rules")
	loadFixture(t, l, "iptables-legacy-restore", "iptables-modern.rules")
	t.Setenv("XTABLES_LOCKFILE", labtest.HoldXtablesLock(t))
	start := time.Now()
	_, err := Services(c, Options{Family: 4, WaitSeconds: 1})
	if !errors.Is(err, netops.ErrTimeout) || !strings.Contains(err.Error(), "xtables lock") || !strings.Contains(err.Error(), "--wait") {
		t.Errorf("with the lock held: %v", err)
	}
	if d := time.Since(start); d < time.Second || d > 10*time.Second {
		t.Errorf("gave up after %v, want about 1s", d)
	}
	// A full dump with iptables-legacy-save takes no lock.
	res, err := Services(c, Options{Backend: "iptables-legacy", Family: 4, WaitSeconds: 1})
	if err != nil || len(res.Services) != 9 {
		t.Errorf("legacy dump with the lock held: %v %+v", err, res)
	}
}

func TestServicesNoRules(t *testing.T) {
	_, c := servicesLab(t)
	for _, tt := range []struct {
		o    Options
		want string
	}{
		{Options{}, "checked: iptables-nft, iptables-legacy, nftables"},
		{Options{Backend: "iptables", Family: 6}, "IPv6, checked: iptables-nft, iptables-legacy"},
		{Options{Backend: "nftables"}, "checked: nftables"},
	} {
		_, err := Services(c, tt.o)
		if err == nil || !strings.Contains(err.Error(), "no kube-proxy rules found") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.o, err, tt.want)
		}
	}
	if _, err := Services(c, Options{Backend: "ipvs"}); !errors.Is(err, netops.ErrInvalid) {
		t.Errorf("backend ipvs: %v", err)
	}
	if _, err := Services(c, Options{Names: []string{"a/b:"}}); !errors.Is(err, netops.ErrInvalid) {
		t.Errorf("bad name: %v", err)
	}
}

// kubeProxyText writes what kube-proxy's iptables mode restores for n
// services of e endpoints each, the first `none` of them without endpoints
// (a filter REJECT instead of nat rules).
func kubeProxyText(n, e, none int) string {
	var nat, filter, decl strings.Builder
	filter.WriteString("*filter\n:KUBE-SERVICES - [0:0]\n:KUBE-EXTERNAL-SERVICES - [0:0]\n")
	decl.WriteString("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n")
	for i := range n {
		name, ip := fmt.Sprintf("ns%d/svc%d:http", i%10, i), fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
		if i < none {
			fmt.Fprintf(&filter, "-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"%s has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable\n", ip, name)
			continue
		}
		svc := fmt.Sprintf("KUBE-SVC-%016X", i)
		fmt.Fprintf(&decl, ":%s - [0:0]\n", svc)
		fmt.Fprintf(&nat, "-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport 80 -j %s\n", ip, name, svc)
		fmt.Fprintf(&nat, "-A %s ! -s 10.244.0.0/16 -d %s/32 -p tcp -m comment --comment \"%s cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ\n", svc, ip, name)
		for j := range e {
			sep, ep := fmt.Sprintf("KUBE-SEP-%08X%08X", i, j), fmt.Sprintf("10.244.%d.%d", (i*e+j)/250, (i*e+j)%250+1)
			fmt.Fprintf(&decl, ":%s - [0:0]\n", sep)
			stat := ""
			if j < e-1 {
				stat = fmt.Sprintf(" -m statistic --mode random --probability %.10f", 1/float64(e-j))
			}
			fmt.Fprintf(&nat, "-A %s -m comment --comment \"%s -> %s:8080\"%s -j %s\n", svc, name, ep, stat, sep)
			fmt.Fprintf(&nat, "-A %s -s %s/32 -m comment --comment \"%s\" -j KUBE-MARK-MASQ\n", sep, ep, name)
			fmt.Fprintf(&nat, "-A %s -p tcp -m comment --comment \"%s\" -m tcp -j DNAT --to-destination %s:8080\n", sep, name, ep)
		}
	}
	nat.WriteString("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\nCOMMIT\n")
	filter.WriteString("COMMIT\n")
	return filter.String() + decl.String() + nat.String()
}

// A full read of a large dump (the nat save streamed, the filter table's
// REJECTs read beside it) gives what a plain parse of the same saves
// gives, nat table then filter table.
func TestServicesFullReadLarge(t *testing.T) {
	const n, e, none = 3000, 5, 40
	text := kubeProxyText(n, e, none)
	for _, b := range []Backend{BackendIPTablesLegacy, BackendIPTablesNFT} {
		t.Run(string(b), func(t *testing.T) {
			l, c := servicesLab(t)
			ib := iptablesFor(b, 4)
			if _, err := l.Exec(text, ib.cmd+"-restore"); err != nil {
				t.Fatalf("load: %v", err)
			}
			pr, err := probeFamily(c, 4)
			if err != nil {
				t.Fatal(err)
			}
			p := newIPTParser(4, false)
			if err := readIPTablesFull(c, ib, p, pr, 5); err != nil {
				t.Fatal(err)
			}
			got := newServicesResult(b)
			p.into(got, nil)

			var saved string
			for _, table := range []string{"nat", "filter"} {
				out, err := l.Exec("", ib.save, "-t", table)
				if err != nil {
					t.Fatal(err)
				}
				saved += out
			}
			want, err := parseIPTablesSave(strings.NewReader(saved), 4, b, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(want.Services) != n {
				t.Fatalf("fixture read back as %d services, want %d", len(want.Services), n)
			}
			noEndpoints := 0
			for _, s := range got.Services {
				if s.NoEndpoints {
					noEndpoints++
				}
			}
			if noEndpoints != none {
				t.Errorf("%d services without endpoints, want %d", noEndpoints, none)
			}
			if !reflect.DeepEqual(viewOf(got), viewOf(want)) {
				t.Errorf("full read differs from a plain parse of the saves:\n got %s\nwant %s", marshalView(t, viewOf(got)), marshalView(t, viewOf(want)))
			}
		})
	}
}
