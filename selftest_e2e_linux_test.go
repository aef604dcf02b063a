package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// selftestPrefix is a namespace prefix no other test or run uses, so
// "nothing left" can be checked by name.
func selftestPrefix(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: selftest builds network namespaces")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	prefix := "hpst" + hex.EncodeToString(b)
	t.Cleanup(func() {
		// Never leave anything behind, even when the test failed.
		for _, ns := range leftNamespaces(t, prefix) {
			_ = syscall.Unmount(filepath.Join("/run/netns", ns), syscall.MNT_DETACH)
			_ = os.Remove(filepath.Join("/run/netns", ns))
		}
	})
	return prefix
}

func leftNamespaces(t *testing.T, prefix string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join("/run/netns", prefix+"-*"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

func TestE2ESelftest(t *testing.T) {
	prefix := selftestPrefix(t)
	r := run(t, "selftest", "--prefix", prefix)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	steps := []string{
		"kube-proxy rules", "br_netfilter", "build namespaces",
		"pod2 -> svc, hairpin off", "pod1 -> own svc, hairpin off", "set hairpin on veth1",
		"pod1 -> own svc, hairpin on", "pod2 -> svc, hairpin on", "clean up",
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) < len(steps)+1 || strings.Join(strings.Fields(lines[0]), " ") != "STEP WANT GOT RESULT" {
		t.Fatalf("table:\n%s", r.stdout)
	}
	for i, s := range steps {
		row := lines[i+1]
		if !strings.HasPrefix(row, s+"  ") || !strings.HasSuffix(row, "  ok") {
			t.Errorf("row %d = %q, want step %q ok", i+1, row, s)
		}
	}
	if !strings.Contains(r.stdout, "PASS: a pod reaches itself through its Service only with hairpin on") {
		t.Errorf("no verdict:\n%s", r.stdout)
	}
	for _, ln := range lines {
		if len(ln) > 80 {
			t.Errorf("wider than 80 columns: %q", ln)
		}
	}
	// Progress came on stderr, step by step.
	for _, want := range []string{
		"selftest: created namespace " + prefix + "-node-",
		"selftest: ok: pod2 -> svc, hairpin off: reach pod1",
		"selftest: ok: pod1 -> own svc, hairpin off: blocked",
		"selftest: ok: pod1 -> own svc, hairpin on: reach pod1",
		"selftest: ok: clean up: nothing left (removed 3 namespaces)",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if left := leftNamespaces(t, prefix); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// $HAIRPINCTL_NETNS, exported for the other commands, does not stop
// selftest: it says it ignores it and runs. A typed --netns is refused
// (TestE2ESelftestDiffers/bad_input).
func TestE2ESelftestIgnoresNetnsEnv(t *testing.T) {
	prefix := selftestPrefix(t)
	r := runCmd(t, nil, []string{"HAIRPINCTL_NETNS=no-such-ns-x"}, "selftest", "--prefix", prefix, "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "selftest: ignoring HAIRPINCTL_NETNS=no-such-ns-x: selftest builds namespaces of its own") {
		t.Errorf("stderr does not say the variable is ignored:\n%s", r.stderr)
	}
	if left := leftNamespaces(t, prefix); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestE2ESelftestJSONLegacy(t *testing.T) {
	prefix := selftestPrefix(t)
	r := run(t, "selftest", "--prefix", prefix, "-o", "json", "--backend", "iptables-legacy")
	var rep struct {
		Passed     bool
		Kernel     string
		Backend    string
		Restore    string
		Namespaces []string
		Steps      []struct {
			Name, Want, Got, Detail string
			OK                      bool
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("exit %d, not JSON: %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	if r.code != 0 || !rep.Passed {
		t.Fatalf("exit %d, passed %v:\n%s\n%s", r.code, rep.Passed, r.stdout, r.stderr)
	}
	if rep.Backend != "iptables-legacy" || rep.Restore != "iptables-legacy-restore" || rep.Kernel == "" {
		t.Errorf("backend %q restore %q kernel %q", rep.Backend, rep.Restore, rep.Kernel)
	}
	if len(rep.Steps) != 9 || len(rep.Namespaces) != 3 {
		t.Errorf("%d steps, %d namespaces", len(rep.Steps), len(rep.Namespaces))
	}
	for _, s := range rep.Steps {
		// The backend step wants one found and names it.
		if !s.OK || s.Got != s.Want && s.Name != "kube-proxy rules" {
			t.Errorf("step %+v", s)
		}
	}
	if rep.Steps[0].Got != "iptables-legacy" {
		t.Errorf("backend step %+v", rep.Steps[0])
	}
	for _, ns := range rep.Namespaces {
		if !strings.HasPrefix(ns, prefix+"-") {
			t.Errorf("namespace %s lacks the prefix", ns)
		}
	}
	if left := leftNamespaces(t, prefix); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// Interrupted, selftest removes everything it created and exits 1.
func TestE2ESelftestInterrupted(t *testing.T) {
	tests := []struct {
		name  string
		after string // the progress line to interrupt at
		sig   syscall.Signal
	}{
		{"SIGINT once built", "selftest: ok: build namespaces", syscall.SIGINT},
		{"SIGINT while building", "selftest: created namespace", syscall.SIGINT},
		{"SIGTERM while connecting", "selftest: ok: pod2 -> svc, hairpin off", syscall.SIGTERM},
		// An SSH session that drops sends SIGHUP.
		{"SIGHUP once built", "selftest: ok: build namespaces", syscall.SIGHUP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := selftestPrefix(t)
			p := startBin(t, nil, nil, bin, "selftest", "--prefix", prefix)
			deadline := time.Now().Add(20 * time.Second)
			for !strings.Contains(p.stderr.String(), tt.after) {
				select {
				case <-p.exited:
					t.Fatalf("exited %d before %q:\n%s", p.code, tt.after, p.stderr.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("no %q within 20s:\n%s", tt.after, p.stderr.String())
				}
				time.Sleep(time.Millisecond)
			}
			if len(leftNamespaces(t, prefix)) == 0 {
				t.Fatal("no namespace existed when interrupting: the test proves nothing")
			}
			code := p.stop(t, tt.sig)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if left := leftNamespaces(t, prefix); len(left) > 0 {
				t.Errorf("left behind after %v: %v", tt.sig, left)
			}
			lines := strings.Split(strings.TrimRight(p.stderr.String(), "\n"), "\n")
			last := lines[len(lines)-1]
			want := "hairpinctl: selftest: interrupted by " + map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM", syscall.SIGHUP: "SIGHUP"}[tt.sig] + ": removed the namespaces it created"
			if last != want {
				t.Errorf("last stderr line %q, want %q", last, want)
			}
			if p.stdout.String() != "" {
				t.Errorf("an interrupted run printed a result:\n%s", p.stdout.String())
			}
		})
	}
}

// When the kernel (here: a node without the Service's rules) does not
// behave as expected, selftest exits 1 naming each step that differed.
func TestE2ESelftestDiffers(t *testing.T) {
	prefix := selftestPrefix(t)
	fake := t.TempDir()
	for name, script := range map[string]string{
		"iptables":             "#!/bin/sh\necho 'iptables v1.8.9 (nf_tables)'\n",
		"iptables-nft-restore": "#!/bin/sh\ncat >/dev/null\n", // loads nothing
	} {
		if err := os.WriteFile(filepath.Join(fake, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmdEnv := func(path string) []string { return []string{"PATH=" + path} }

	t.Run("no Service rules", func(t *testing.T) {
		p := startBin(t, nil, cmdEnv(fake+":"+os.Getenv("PATH")), bin, "selftest", "--prefix", prefix)
		<-p.exited
		if p.code != 1 {
			t.Fatalf("exit %d, want 1\n%s\n%s", p.code, p.stdout.String(), p.stderr.String())
		}
		if !strings.Contains(p.stdout.String(), "DIFFERS") || !strings.Contains(p.stdout.String(), "FAIL: the kernel did not behave as expected") {
			t.Errorf("table:\n%s", p.stdout.String())
		}
		lines := strings.Split(strings.TrimRight(p.stderr.String(), "\n"), "\n")
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "hairpinctl: selftest: ") || !strings.Contains(last, "differed: pod2 -> svc, hairpin off: want reach pod1, got ") {
			t.Errorf("last stderr line %q", last)
		}
		if !strings.Contains(p.stderr.String(), "selftest: DIFFERS: pod2 -> svc, hairpin off: got ") {
			t.Errorf("progress does not show the difference:\n%s", p.stderr.String())
		}
		if left := leftNamespaces(t, prefix); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})
	// Without iptables, auto falls back to nftables mode
	// (TestE2ESelftestWithoutIptables); a backend asked for by name is not
	// replaced by another.
	t.Run("chosen backend missing", func(t *testing.T) {
		r := runEnv(t, cmdEnv(t.TempDir()), "selftest", "--prefix", prefix, "--backend", "iptables-legacy")
		if r.code != 1 {
			t.Fatalf("exit %d, want 1: %+v", r.code, r)
		}
		oneLineErrLast(t, r.stderr, "hairpinctl: selftest: 1 step differed: kube-proxy rules: want found, got not found")
		if !strings.Contains(r.stderr, "install iptables") {
			t.Errorf("stderr does not say what to do:\n%s", r.stderr)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		for _, args := range [][]string{
			{"selftest", "--backend", "ipvs"},
			{"selftest", "extra"},
			{"--netns", "x", "selftest"},
			{"selftest", "--netns", "x"},
			{"selftest", "--prefix", "Bad/Name"},
		} {
			r := run(t, args...)
			if r.code != 2 {
				t.Errorf("%v: exit %d, want 2: %+v", args, r.code, r)
			}
			oneLineErr(t, r, "selftest")
		}
		r := runAs(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "selftest", "--prefix", prefix)
		if r.code != 1 {
			t.Errorf("unprivileged: exit %d, want 1: %+v", r.code, r)
		}
		oneLineErr(t, r, "selftest: creating network namespaces needs CAP_SYS_ADMIN and CAP_NET_ADMIN: run as root")
	})
}

// runEnv runs hairpinctl with extra environment.
func runEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	p := startBin(t, nil, env, append([]string{bin}, args...)...)
	<-p.exited
	return result{stdout: p.stdout.String(), stderr: p.stderr.String(), code: p.code}
}

// oneLineErrLast checks the last stderr line is want.
func oneLineErrLast(t *testing.T, stderr, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if last := lines[len(lines)-1]; last != want {
		t.Errorf("last stderr line %q, want %q", last, want)
	}
}

// On a machine without iptables (a fresh Debian, a minimal image) selftest
// programs the Service as kube-proxy's nftables mode does, over netlink,
// says so, and still proves hairpin: the README's first command works.
func TestE2ESelftestWithoutIptables(t *testing.T) {
	prefix := selftestPrefix(t)
	empty := t.TempDir() // a PATH with no iptables, nft or ip
	r := runCmd(t, nil, []string{"PATH=" + empty}, "selftest", "--prefix", prefix, "-o", "json")
	var rep struct {
		Passed           bool
		Backend, Restore string
		Steps            []struct{ Name, Got, Detail string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("exit %d, not JSON: %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	if r.code != 0 || !rep.Passed || rep.Backend != "nftables" || rep.Restore != "nftables" {
		t.Fatalf("exit %d, passed %v, backend %q, restore %q:\n%s\n%s", r.code, rep.Passed, rep.Backend, rep.Restore, r.stdout, r.stderr)
	}
	if s := rep.Steps[0]; s.Name != "kube-proxy rules" || !strings.Contains(s.Detail, "no iptables command") || !strings.Contains(s.Detail, "over netlink") {
		t.Errorf("first step does not say which it used: %+v", s)
	}
	if strings.Count(r.stderr, "iptables") > 1 {
		t.Errorf("stderr repeats itself:\n%s", r.stderr)
	}
	if left := leftNamespaces(t, prefix); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
