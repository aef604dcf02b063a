package kubeproxy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/clienttest"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
)

// nftFixtures are kube-proxy tables to load with `nft -f`: the real
// kube-proxy's of the kube lab (every release there), and the older
// releases' shapes of testdata/services.
func nftFixtures(t *testing.T) map[string][]string {
	t.Helper()
	out := make(map[string][]string)
	dirs, _ := filepath.Glob(filepath.Join("..", "..", "test", "kube", "testdata", "*", "nftables"))
	for _, d := range dirs {
		for _, f := range []string{"nft-ip.txt", "nft-ip6.txt"} {
			if _, err := os.Stat(filepath.Join(d, f)); err == nil {
				name := filepath.Base(filepath.Dir(d))
				out[name] = append(out[name], filepath.Join(d, f))
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no nftables goldens under ../../test/kube/testdata")
	}
	nft, _ := filepath.Glob(filepath.Join(servicesTestdata, "*.nft"))
	for _, f := range nft {
		out[filepath.Base(f)] = []string{f}
	}
	return out
}

// loadNFTFixture loads files into a fresh lab node and returns a client
// for it.
func loadNFTFixture(t *testing.T, files []string) (*lab.Lab, *netops.Client) {
	t.Helper()
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none", Prefix: "hpnft"})
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Exec(string(text), "nft", "-f", "-"); err != nil {
			t.Fatalf("load %s: %v", f, err)
		}
	}
	return l, clienttest.Open(t, l)
}

// The netlink reader gives exactly what parsing `nft list table` of the
// same kernel gives: services, masquerade plumbing, unparsed counts and,
// with --raw, every rule and element in nft's own text.
func TestReadNFTKernelMatchesText(t *testing.T) {
	for name, files := range nftFixtures(t) {
		t.Run(name, func(t *testing.T) {
			l, c := loadNFTFixture(t, files)
			for _, fam := range []int{4, 6} {
				for _, raw := range []bool{false, true} {
					text, err := l.Exec("", "nft", "list", "table", nftFamilyName(fam), "kube-proxy")
					if err != nil {
						if strings.Contains(err.Error(), "No such file") {
							continue
						}
						t.Fatal(err)
					}
					want, err := parseNFTList(strings.NewReader(text), fam, raw, nil)
					if err != nil {
						t.Fatal(err)
					}
					p, err := readNFTKernel(c, fam, raw)
					if err != nil {
						t.Fatalf("family %d: %v", fam, err)
					}
					got := newServicesResult(BackendNFTables)
					p.into(got, nil)
					if len(want.Services) == 0 {
						t.Fatalf("family %d: the text path found no services", fam)
					}
					compareNFTResults(t, fam, raw, want, got)
				}
			}
		})
	}
}

func compareNFTResults(t *testing.T, fam int, raw bool, want, got *Result) {
	t.Helper()
	if len(got.Services) != len(want.Services) {
		t.Errorf("family %d raw %v: %d services, text path %d", fam, raw, len(got.Services), len(want.Services))
	}
	for i := range min(len(got.Services), len(want.Services)) {
		if !reflect.DeepEqual(got.Services[i], want.Services[i]) {
			g, _ := json.MarshalIndent(got.Services[i], "", "  ")
			w, _ := json.MarshalIndent(want.Services[i], "", "  ")
			t.Errorf("family %d raw %v: service %d differs:\nnetlink: %s\ntext:    %s", fam, raw, i, g, w)
		}
	}
	if got.Masquerade != want.Masquerade {
		t.Errorf("family %d: masquerade %+v, text path %+v", fam, got.Masquerade, want.Masquerade)
	}
	if got.Unparsed != want.Unparsed || !reflect.DeepEqual(got.UnparsedRules, want.UnparsedRules) {
		t.Errorf("family %d raw %v: unparsed %d %q, text path %d %q", fam, raw, got.Unparsed, got.UnparsedRules, want.Unparsed, want.UnparsedRules)
	}
}

// kube-proxy rewrites its table while it is read: every read that
// succeeds is one consistent ruleset (the churning Service whole or
// absent, never half-written), and one that cannot be made says so.
func TestReadNFTKernelChurn(t *testing.T) {
	l, c := loadNFTFixture(t, []string{filepath.Join("..", "..", "test", "kube", "testdata", "v1.37.2", "nftables", "nft-ip.txt")})
	const chain = "service-ZZZZZZZZ-churn/svc/tcp/http"
	add := "add chain ip kube-proxy " + chain + "\n" +
		"add rule ip kube-proxy " + chain + " meta l4proto tcp dnat to 10.244.9.9:8080\n" +
		"add element ip kube-proxy cluster-ips { 10.96.99.99 }\n" +
		"add element ip kube-proxy service-ips { 10.96.99.99 . tcp . 80 : goto " + chain + " }\n"
	del := "delete element ip kube-proxy service-ips { 10.96.99.99 . tcp . 80 }\n" +
		"delete element ip kube-proxy cluster-ips { 10.96.99.99 }\n" +
		"flush chain ip kube-proxy " + chain + "\ndelete chain ip kube-proxy " + chain + "\n"
	stop := make(chan struct{})
	churned := make(chan int)
	go func() {
		n := 0
		defer func() { churned <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			text := add
			if n%2 == 1 {
				text = del
			}
			if _, err := l.Exec(text, "nft", "-f", "-"); err != nil {
				t.Errorf("churn: %v", err)
				return
			}
			n++
		}
	}()
	var reads, seen, changing, lookups int
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		// Lookups read the churning Service's chain and maps alone: also
		// whole or absent.
		for _, sel := range []struct{ ips, names []string }{{ips: []string{"10.96.99.99"}}, {names: []string{"churn/svc:http"}}} {
			s, err := newServiceSelector(sel.ips, sel.names)
			if err != nil {
				t.Fatal(err)
			}
			p, ok, err := readNFTKernelTargeted(c, 4, s, false)
			if err != nil {
				if !strings.Contains(err.Error(), "kept changing") {
					t.Fatalf("lookup %v: %v", sel, err)
				}
				changing++
				continue
			}
			if !ok {
				t.Fatalf("lookup %v: not served by the targeted read", sel)
			}
			lookups++
			res := newServicesResult(BackendNFTables)
			p.into(res, s)
			if len(res.Services) > 1 || len(res.Services) == 1 && (len(res.Services[0].Endpoints) != 1 || res.Services[0].Endpoints[0].IP != "10.244.9.9") {
				t.Fatalf("lookup %v: half-written service %+v", sel, res.Services)
			}
		}
		p, err := readNFTKernel(c, 4, false)
		if err != nil {
			if !strings.Contains(err.Error(), "kept changing") {
				t.Fatalf("read %d: %v", reads, err)
			}
			changing++
			continue
		}
		reads++
		res := newServicesResult(BackendNFTables)
		p.into(res, nil)
		for _, s := range res.Services {
			if s.ClusterIP != "10.96.99.99" {
				continue
			}
			seen++
			if len(s.Endpoints) != 1 || s.Endpoints[0].IP != "10.244.9.9" {
				t.Fatalf("read %d: half-written service %+v", reads, s)
			}
		}
		if res.Unparsed != 0 {
			t.Fatalf("read %d: %d unparsed", reads, res.Unparsed)
		}
	}
	close(stop)
	n := <-churned
	t.Logf("%d commits, %d reads (%d with the churning service) and %d lookups, %d gave up as changing", n, reads, seen, lookups, changing)
	if n < 10 || reads < 10 {
		t.Errorf("only %d commits and %d reads: the test proved nothing", n, reads)
	}
}
