package lab_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
)

// The lab's nftables-mode Service, programmed over netlink, behaves as
// kube-proxy's: another pod reaches the endpoint, the endpoint cannot reach
// itself while its port's hairpin is off, and can once it is on (which
// needs the hairpin-connections masquerade for the reply).
func TestNFTablesModeOverNetlink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1}, Restore: lab.RestoreNFTables})
	self, other := l.Pod(1), l.Pod(2)
	if got, err := l.ConnectService(other, 3*time.Second); err != nil || got != self.Name {
		t.Fatalf("pod 2 → Service = %q, %v; want %q", got, err, self.Name)
	}
	if got, err := l.ConnectService(self, 1500*time.Millisecond); err == nil {
		t.Fatalf("pod 1 reached itself (%q) with hairpin off", got)
	}
	lk, err := l.Handle().LinkByName(self.HostVeth)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Handle().LinkSetHairpin(lk, true); err != nil {
		t.Fatal(err)
	}
	if got, err := l.ConnectService(self, 3*time.Second); err != nil || got != self.Name {
		t.Fatalf("hairpin on: pod 1 → Service = %q, %v", got, err)
	}
	// What nft makes of it, where nft is installed: the shapes of
	// kube-proxy 1.37 (test/kube/testdata/v1.37.2/nftables).
	if _, err := exec.LookPath("nft"); err != nil {
		return
	}
	out, err := l.Exec("", "nft", "list", "table", "ip", "kube-proxy")
	if err != nil {
		t.Fatalf("nft list: %v: %s", err, out)
	}
	for _, want := range []string{
		"ip daddr . meta l4proto . th dport vmap @service-ips",
		"ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections masquerade fully-random",
		"meta l4proto tcp dnat to " + self.IP.String() + ":8080",
		self.IP.String() + " . " + self.IP.String() + " . tcp . 8080",
		"10.96.0.10 . tcp . 80 : goto service-",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("nft list lacks %q:\n%s", want, out)
		}
	}
}
