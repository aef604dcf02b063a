package netops

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/lab"
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
			l := newLab(t, lab.Options{Pods: 1, Restore: "none", Prefix: "hpsvc"})
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
