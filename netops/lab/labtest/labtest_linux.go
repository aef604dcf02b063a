// Package labtest gives tests a lab (see package lab) that is removed when
// the test ends, failed or not. It is separate from lab so that selftest,
// which uses lab in the shipped binary, does not link the testing package.
package labtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"golang.org/x/sys/unix"
)

// New builds a lab for t and registers its removal. Without root it skips:
// the lab needs CAP_SYS_ADMIN to create namespaces and CAP_NET_ADMIN to
// wire them (CI runs as root, so there it always runs).
func New(t testing.TB, o lab.Options) *lab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces")
	}
	l, err := lab.New(o)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	return l
}

// HoldXtablesLock creates an xtables lock file, holds it as another
// iptables would, and returns its path (for XTABLES_LOCKFILE). The lock is
// released when the test ends.
func HoldXtablesLock(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "xtables.lock")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	return path
}

// RequireCNIPlugins skips t, saying what to install, when the real CNI
// bridge plugin libcni runs is missing (scripts/test-deps.sh installs it).
func RequireCNIPlugins(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(lab.CNIPluginDir, "bridge")); err != nil {
		t.Skipf("no CNI bridge plugin in %s (apt-get install containernetworking-plugins)", lab.CNIPluginDir)
	}
}

// DeleteMasquerade deletes the masquerade rule of the lab's KUBE-POSTROUTING
// (found in the rules the lab loaded), so that marked connections leave
// unmasqueraded: a hairpin connection's reply then bypasses the node.
func DeleteMasquerade(t testing.TB, l *lab.Lab) {
	t.Helper()
	var masq string
	for _, line := range strings.Split(l.Rules, "\n") {
		if strings.HasPrefix(line, "-A KUBE-POSTROUTING") && strings.Contains(line, "-j MASQUERADE") {
			masq = line
		}
	}
	if masq == "" {
		t.Fatalf("no MASQUERADE rule in the lab's rules:\n%s", l.Rules)
	}
	if out, err := l.Exec("", "sh", "-c", "iptables -t nat -D"+strings.TrimPrefix(masq, "-A")); err != nil {
		t.Fatalf("delete %s: %v: %s", masq, err, out)
	}
}
