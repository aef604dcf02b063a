package kubeproxy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
)

// goldensDir holds what the real kube-proxy of each release wrote in the
// kube lab (test/kube).
const goldensDir = "../../test/kube/testdata"

// loadIPTGolden loads a golden's iptables-save text of family with
// iptables-nft-restore, creating the nfacct objects it counts into first.
func loadIPTGolden(t *testing.T, c *netops.Client, exec func(stdin, name string, args ...string) (string, error), file string, family int) bool {
	t.Helper()
	text, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(text), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "--nfacct-name" {
				if out, err := exec("", "nfacct", "add", f[i+1]); err != nil && !strings.Contains(out+err.Error(), "exists") && !strings.Contains(out+err.Error(), "busy") {
					t.Fatalf("nfacct add %s: %v: %s", f[i+1], err, out)
				}
			}
		}
	}
	tool := "iptables-nft-restore"
	if family == 6 {
		tool = "ip6tables-nft-restore"
	}
	if _, err := exec(string(text), tool); err != nil {
		t.Fatalf("load %s: %v", file, err)
	}
	return true
}

// Every golden of kube-proxy's iptables mode on iptables-nft, read from the
// kernel over netlink, gives exactly what iptables-nft-save's text gives:
// the services, the masquerade plumbing, what was not understood, --raw.
func TestIPTablesNFTKernelMatchesSave(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(goldensDir, "v*", "iptables-nft"))
	if len(dirs) == 0 {
		t.Fatalf("no iptables-nft goldens under %s", goldensDir)
	}
	type load struct {
		family int
		file   string
	}
	type tcase struct {
		name  string
		loads []load
	}
	var cases []tcase
	for _, dir := range dirs {
		cases = append(cases, tcase{filepath.Base(filepath.Dir(dir)), []load{{4, filepath.Join(dir, "iptables-save.txt")}, {6, filepath.Join(dir, "ip6tables-save.txt")}}})
	}
	// The hand-made fixtures' older and odd forms.
	for _, f := range []string{"iptables-modern.rules", "iptables-old.rules", "iptables-odd.rules", "ip6tables-modern.rules"} {
		fam := 4
		if strings.HasPrefix(f, "ip6") {
			fam = 6
		}
		cases = append(cases, tcase{f, []load{{fam, filepath.Join(servicesTestdata, f)}}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, c := servicesLab(t)
			for _, ld := range tc.loads {
				family := ld.family
				if !loadIPTGolden(t, c, l.Exec, ld.file, family) {
					continue
				}
				probe, err := probeFamily(c, family)
				if err != nil {
					t.Fatal(err)
				}
				for _, raw := range []bool{true, false} {
					text := newIPTParser(family, raw)
					if err := readIPTablesFull(c, iptablesFor(BackendIPTablesNFT, family), text, probe, 5); err != nil {
						t.Fatal(err)
					}
					kern, err := readIPTablesNFTKernel(c, family, raw)
					if err != nil {
						t.Fatal(err)
					}
					want, got := newServicesResult(BackendIPTablesNFT), newServicesResult(BackendIPTablesNFT)
					text.into(want, nil)
					kern.into(got, nil)
					if len(want.Services) == 0 {
						t.Fatalf("IPv%d: the save path read no services", family)
					}
					wj, _ := json.MarshalIndent(want, "", " ")
					gj, _ := json.MarshalIndent(got, "", " ")
					t.Logf("IPv%d raw=%v: %d services, %d unparsed, %d JSON bytes", family, raw, len(got.Services), got.Unparsed, len(gj))
					if string(wj) != string(gj) {
						wl, gl := strings.Split(string(wj), "\n"), strings.Split(string(gj), "\n")
						for i := range min(len(wl), len(gl)) {
							if wl[i] != gl[i] {
								t.Fatalf("IPv%d raw=%v: netlink differs from iptables-nft-save at line %d:\nsave:    %s\nnetlink: %s", family, raw, i, wl[i], gl[i])
							}
						}
						t.Fatalf("IPv%d raw=%v: netlink gives %d lines of JSON, save %d", family, raw, len(gl), len(wl))
					}
				}
			}
		})
	}
}

// Reads while the rules are rewritten, each rewrite one transaction as
// kube-proxy's iptables-nft-restore is, see one whole ruleset or the
// other, or give up saying the rules kept changing: never a half-written
// Service.
func TestIPTablesNFTKernelChurn(t *testing.T) {
	const n = 300
	l, c := servicesLab(t)
	sets := []string{kubeProxyText(n, 2, 0), kubeProxyText(n, 3, 0)}
	if _, err := l.Exec(sets[0], "iptables-nft-restore"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	writes := 0
	go func() {
		for i := 1; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := l.Exec(sets[i%2], "iptables-nft-restore"); err != nil {
				done <- err
				return
			}
			writes++
		}
	}()
	reads, changed, lookups := 0, 0, 0
	pr, err := probeFamily(c, 4)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(4 * time.Second); time.Now().Before(deadline) || reads < 20; {
		// A lookup of one Service and one by name, read chain by chain:
		// also one ruleset or the other.
		for _, sel := range []struct{ ips, names []string }{{ips: []string{"10.96.0.7"}}, {names: []string{"ns3/svc13"}}} {
			s, err := newServiceSelector(sel.ips, sel.names)
			if err != nil {
				t.Fatal(err)
			}
			p, ok, err := readIPTablesTargeted(c, 4, pr, s, false)
			if err != nil {
				if strings.Contains(err.Error(), "kept changing") {
					changed++
					continue
				}
				t.Fatal(err)
			}
			if !ok {
				t.Fatalf("lookup %v: not served by the chain-by-chain read", sel)
			}
			lookups++
			res := newServicesResult(BackendIPTablesNFT)
			p.into(res, s)
			if len(res.Services) != 1 {
				t.Fatalf("lookup %v: %d services", sel, len(res.Services))
			}
			if eps := res.Services[0].Endpoints; len(eps) != 2 && len(eps) != 3 || !res.Masquerade.MarkMasq || slices.ContainsFunc(eps, func(e Endpoint) bool { return !e.HairpinMasq }) {
				t.Fatalf("lookup %v: %+v (mark-masq %v): a half-written ruleset", sel, eps, res.Masquerade.MarkMasq)
			}
		}
		p, err := readIPTablesNFTKernel(c, 4, false)
		if err != nil {
			if strings.Contains(err.Error(), "kept changing") {
				changed++
				continue
			}
			t.Fatal(err)
		}
		reads++
		res := newServicesResult(BackendIPTablesNFT)
		p.into(res, nil)
		if len(res.Services) != n || res.Unparsed != 0 {
			t.Fatalf("read %d: %d services, %d unparsed; want %d, 0", reads, len(res.Services), res.Unparsed, n)
		}
		want := len(res.Services[0].Endpoints)
		for _, s := range res.Services {
			if len(s.Endpoints) != want || want != 2 && want != 3 || !res.Masquerade.MarkMasq {
				t.Fatalf("read %d: %s has %d endpoints, another %d (mark-masq %v): a half-written ruleset %+v", reads, s.ClusterIP, len(s.Endpoints), want, res.Masquerade.MarkMasq, s.Endpoints)
			}
			for _, e := range s.Endpoints {
				if !e.HairpinMasq {
					t.Fatalf("read %d: %s endpoint %s without its hairpin rule", reads, s.ClusterIP, e.IP)
				}
			}
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d whole reads and %d lookups, %d gave up as changing, during %d rewrites", reads, lookups, changed, writes)
	if writes < 5 {
		t.Fatalf("only %d rewrites during the reads", writes)
	}
}
