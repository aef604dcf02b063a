package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// nftables mode is read over netlink: services (by --backend and by auto
// detection), --raw and doctor work on a node without nft, as the
// DaemonSet's image and many hosts are.
func TestE2EServicesNFTablesWithoutNft(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading the goldens needs root")
	}
	dirs, _ := filepath.Glob(filepath.Join(goldenDir, "v*", "nftables"))
	if len(dirs) == 0 {
		t.Fatalf("no nftables goldens under %s", goldenDir)
	}
	noNft := []string{"PATH=" + t.TempDir()}
	for _, dir := range dirs {
		t.Run(filepath.Base(filepath.Dir(dir)), func(t *testing.T) {
			ns := scratchNetns(t)
			loadGolden(t, ns, dir, "nftables")
			for _, args := range [][]string{
				{"services", "--netns", ns, "--backend", "nftables", "-o", "json"},
				{"services", "--netns", ns, "-o", "json"},
			} {
				r := runWithEnv(t, noNft, args...)
				var svcs []jsonService
				if err := json.Unmarshal([]byte(r.stdout), &svcs); r.code != 0 || err != nil || len(svcs) == 0 {
					t.Fatalf("%v without nft: exit %d, %v: %s", args, r.code, err, r.stderr)
				}
				eps := 0
				for _, s := range svcs {
					eps += len(s.Endpoints)
					if s.Backend != "nftables" {
						t.Errorf("%v: %s from %s", args, s.Name, s.Backend)
					}
				}
				if eps == 0 {
					t.Errorf("%v: %d services and no endpoint", args, len(svcs))
				}
			}
			r := runWithEnv(t, noNft, "services", "--netns", ns, "--raw", "10.96.0.1")
			if r.code != 0 || !strings.Contains(r.stdout, "add element ip kube-proxy service-ips { 10.96.0.1 . tcp . 443 : goto service-2QRHZV4L-default/kubernetes/tcp/https }") ||
				!strings.Contains(r.stdout, "add rule ip kube-proxy service-2QRHZV4L-default/kubernetes/tcp/https ") {
				t.Errorf("--raw without nft: %+v", r)
			}
			r = runWithEnv(t, noNft, "doctor", "--netns", ns, "-o", "json")
			if !strings.Contains(r.stdout, "kube-proxy's rules are in nftables") || strings.Contains(r.stdout, "nft not found") {
				t.Errorf("doctor without nft: exit %d: %s %s", r.code, r.stdout, r.stderr)
			}
		})
	}
}
