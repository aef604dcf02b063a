package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/commands"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/vishvananda/netlink"
	"sigs.k8s.io/yaml"
)

// lockedBuffer collects a running process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// proc is a hairpinctl process running in the background.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr lockedBuffer
	exited         chan struct{}
	code           int
}

// startBin starts hairpinctl (or, with a wrapper, wrapper... hairpinctl)
// and stops it with SIGKILL at the end of the test if it still runs.
// With ns set the process starts inside that network namespace.
func startBin(t *testing.T, ns *lab.Lab, env []string, argv ...string) *proc {
	t.Helper()
	p := &proc{exited: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(append(os.Environ(), "NO_COLOR=1"), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	start := p.cmd.Start
	var err error
	if ns != nil {
		// A child is forked from the locked thread that entered ns.
		err = lab.In(ns.NodeNs, start)
	} else {
		err = start()
	}
	if err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	go func() {
		err := p.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// stop sends sig and waits up to 5 s for the exit code.
func (p *proc) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal: %v", err)
	}
	select {
	case <-p.exited:
		return p.code
	case <-time.After(5 * time.Second):
		t.Fatalf("no exit within 5s of %v; stdout:\n%s\nstderr:\n%s", sig, p.stdout.String(), p.stderr.String())
		return -1
	}
}

// waitFile polls until path exists or p exits.
func waitFile(t *testing.T, p *proc, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("exited %d before writing %s; stdout:\n%s\nstderr:\n%s", p.code, path, p.stdout.String(), p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written within 10s; stdout:\n%s\nstderr:\n%s", path, p.stdout.String(), p.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitHairpin polls a port's hairpin mode until it is want.
func waitHairpin(t *testing.T, l *lab.Lab, port string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for hairpinOf(t, l, port) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s hairpin still %v after 10s", port, !want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type watchLine struct {
	Kind, Port, Bridge, Cause, Error string
	Index, Ports                     int
	Time                             time.Time
}

func TestE2EWatch(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Restore: "none"})
	ready := filepath.Join(t.TempDir(), "ready")
	p := startBin(t, nil, nil, bin, "watch", "--bridge", "cni0", "--netns", l.Node, "--ready-file", ready, "-o", "json")
	waitFile(t, p, ready)
	if b, err := os.ReadFile(ready); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(p.cmd.Process.Pid) {
		t.Errorf("ready file holds %q, %v; want the pid %d", b, err, p.cmd.Process.Pid)
	}
	// Ready means the initial pass is done.
	if !hairpinOf(t, l, "veth1") || !hairpinOf(t, l, "veth2") {
		t.Fatal("ready before the existing ports were set on")
	}

	br, err := l.Handle().LinkByName("cni0")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Handle().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vnew", MasterIndex: br.Attrs().Index}, PeerName: "vnewp", PeerNamespace: netlink.NsFd(int(l.Pod(1).Ns))}); err != nil {
		t.Fatal(err)
	}
	waitHairpin(t, l, "vnew", true)
	v1, _ := l.Handle().LinkByName("veth1")
	if err := l.Handle().LinkSetHairpin(v1, false); err != nil {
		t.Fatal(err)
	}
	// Poll for the line, not the state: the state may be read back on
	// before the watcher saw it off.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stdout.String(), `"cause":"turned-off"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no turned-off line:\n%s", p.stdout.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	waitHairpin(t, l, "veth1", true)

	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0; stderr: %s", code, p.stderr.String())
	}
	if _, err := os.Stat(ready); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ready file left after exit: %v", err)
	}
	if p.stderr.String() != "" {
		t.Errorf("stderr: %q", p.stderr.String())
	}
	var lines []watchLine
	sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
	for sc.Scan() {
		var ln watchLine
		if err := json.Unmarshal(sc.Bytes(), &ln); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		if ln.Time.IsZero() || ln.Kind == "" {
			t.Errorf("line without time or kind: %q", sc.Text())
		}
		lines = append(lines, ln)
	}
	want := []watchLine{
		{Kind: "enabled", Port: "veth1", Bridge: "cni0", Cause: "start"},
		{Kind: "enabled", Port: "veth2", Bridge: "cni0", Cause: "start"},
		{Kind: "ready", Bridge: "cni0", Ports: 2},
		{Kind: "enabled", Port: "vnew", Bridge: "cni0", Cause: "joined"},
		{Kind: "enabled", Port: "veth1", Bridge: "cni0", Cause: "turned-off"},
		{Kind: "stopped", Cause: "SIGTERM"},
	}
	var got []watchLine
	for _, ln := range lines {
		ln.Time, ln.Index = time.Time{}, 0
		got = append(got, ln)
	}
	if !slices.Equal(got, want) {
		t.Errorf("lines:\n%+v\nwant:\n%+v", got, want)
	}
}

func TestE2EWatchText(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Restore: "none"})
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z `)
	for _, journald := range []bool{false, true} {
		t.Run(fmt.Sprintf("journald=%v", journald), func(t *testing.T) {
			var env []string
			if journald {
				env = []string{"JOURNAL_STREAM=8:12345"}
			}
			// veth1 off again for each run.
			v1, _ := l.Handle().LinkByName("veth1")
			if err := l.Handle().LinkSetHairpin(v1, false); err != nil {
				t.Fatal(err)
			}
			ready := filepath.Join(t.TempDir(), "ready")
			p := startBin(t, nil, env, bin, "watch", "--bridge", "cni0", "--netns", l.Node, "--ready-file", ready)
			waitFile(t, p, ready)
			if code := p.stop(t, syscall.SIGINT); code != 0 {
				t.Errorf("exit %d after SIGINT, want 0", code)
			}
			out := p.stdout.String()
			lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
			want := []string{
				"hairpin on veth1 (cni0, pod unknown): found off at start",
				"watching bridge cni0 in netns " + l.Node + ": 1 port",
				"stopped on SIGINT",
			}
			if len(lines) != len(want) {
				t.Fatalf("output:\n%s\nwant %d lines", out, len(want))
			}
			for i, ln := range lines {
				if strings.Contains(ln, "\x1b") {
					t.Errorf("colour escape without a terminal: %q", ln)
				}
				if stamp.MatchString(ln) == journald {
					t.Errorf("line %q: timestamp present = %v under journald = %v", ln, !journald, journald)
				}
				if got := stamp.ReplaceAllString(ln, ""); got != want[i] {
					t.Errorf("line %d = %q, want %q", i, got, want[i])
				}
			}
		})
	}
}

// A bridge named twice is watched, and said, once.
func TestE2EWatchBridgeOnce(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Restore: "none", Hairpin: true})
	ready := filepath.Join(t.TempDir(), "ready")
	p := startBin(t, nil, nil, bin, "watch", "--bridge", "cni0", "--bridge", "cni0,cni0", "--netns", l.Node, "--ready-file", ready)
	waitFile(t, p, ready)
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	if want := "watching bridge cni0 in netns " + l.Node + ": 1 port\n"; !strings.Contains(p.stdout.String(), want) {
		t.Errorf("output:\n%s\nwant a line %q", p.stdout.String(), want)
	}
}

// SIGHUP (an SSH session dropping) stops watch as SIGTERM does: exit 0,
// the ready file removed, the "stopped" line printed.
func TestE2EWatchSIGHUP(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Restore: "none"})
	ready := filepath.Join(t.TempDir(), "ready")
	p := startBin(t, nil, nil, bin, "watch", "--bridge", "cni0", "--netns", l.Node, "--ready-file", ready, "-o", "json")
	waitFile(t, p, ready)
	if code := p.stop(t, syscall.SIGHUP); code != 0 {
		t.Errorf("exit %d after SIGHUP, want 0; stderr: %s", code, p.stderr.String())
	}
	if _, err := os.Stat(ready); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ready file left after SIGHUP: %v", err)
	}
	if !strings.HasSuffix(p.stdout.String(), `"kind":"stopped","cause":"SIGHUP"}`+"\n") {
		t.Errorf("no stopped line for SIGHUP:\n%s", p.stdout.String())
	}
}

func TestE2EWatchBadInput(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Restore: "none"})
	ns := l.Node
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	tests := []badInput{
		{"nothing selected", nil, []string{"watch", "--netns", ns}, 2, "name the bridges with --bridge BR, or use --all"},
		{"both", nil, []string{"watch", "--all", "--bridge", "cni0", "--netns", ns}, 2, "not both"},
		{"arguments", nil, []string{"watch", "veth1", "--bridge", "cni0"}, 2, "takes no arguments"},
		{"negative resync", nil, []string{"watch", "--all", "--resync", "-1s"}, 2, "--resync -1s is negative"},
		{"resync below the floor", nil, []string{"watch", "--all", "--resync", "1ms"}, 2, "--resync 1ms is below the floor of 1s"},
		{"not a bridge", nil, []string{"watch", "--bridge", "veth1", "--netns", ns}, 2, "veth1 is a veth device, not a bridge"},
		{"bad output", nil, []string{"watch", "--all", "-o", "yaml"}, 2, `unknown output format "yaml"`},
		{"no CAP_NET_ADMIN", nobody, []string{"watch", "--all"}, 1, "watch needs CAP_NET_ADMIN: run as root"},
	}
	checkBadInput(t, tests)

	t.Run("stale ready file removed", func(t *testing.T) {
		ready := filepath.Join(t.TempDir(), "ready")
		if err := os.WriteFile(ready, []byte("1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := run(t, "watch", "--bridge", "veth1", "--netns", ns, "--ready-file", ready)
		if r.code != 2 {
			t.Errorf("exit %d: %+v", r.code, r)
		}
		if _, err := os.Stat(ready); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a failed watch left a ready file from an earlier run: %v", err)
		}
	})
	t.Run("ready file not writable", func(t *testing.T) {
		r := run(t, "watch", "--bridge", "cni0", "--netns", ns, "--ready-file", "/nonexistent-dir/ready")
		if r.code != 1 {
			t.Errorf("exit %d: %+v", r.code, r)
		}
		if !strings.Contains(r.stderr, "hairpinctl: watch: write ready file") {
			t.Errorf("stderr %q", r.stderr)
		}
	})
}

// unitEntry is one Key=Value line of a systemd unit file.
type unitEntry struct{ section, key, value string }

// parseUnit reads a systemd unit file the way systemd does for what the
// tests need: [Section] headers, Key=Value, '#' and ';' comments, and
// lines continued with a trailing backslash.
func parseUnit(t *testing.T, path string) []unitEntry {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []unitEntry
	section := ""
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		ln := strings.TrimSpace(lines[i])
		for strings.HasSuffix(ln, `\`) && i+1 < len(lines) {
			i++
			ln = strings.TrimSuffix(ln, `\`) + " " + strings.TrimSpace(lines[i])
		}
		switch {
		case ln == "" || ln[0] == '#' || ln[0] == ';':
		case ln[0] == '[' && ln[len(ln)-1] == ']':
			section = ln[1 : len(ln)-1]
		default:
			k, v, ok := strings.Cut(ln, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not Key=Value in a section: %q", path, i+1, ln)
			}
			out = append(out, unitEntry{section, strings.TrimSpace(k), strings.TrimSpace(v)})
		}
	}
	return out
}

// unitValues returns every value of section.key, in order.
func unitValues(u []unitEntry, section, key string) []string {
	var vs []string
	for _, e := range u {
		if e.section == section && e.key == key {
			vs = append(vs, e.value)
		}
	}
	return vs
}

// unitValue returns the one value of section.key, failing if there is not exactly one.
func unitValue(t *testing.T, u []unitEntry, section, key string) string {
	t.Helper()
	vs := unitValues(u, section, key)
	if len(vs) != 1 {
		t.Fatalf("[%s] %s: %d values %q, want one", section, key, len(vs), vs)
	}
	return vs[0]
}

const installedBin = "/usr/local/bin/hairpinctl"

// execArgs splits ExecStart and checks it runs the installed binary.
func execArgs(t *testing.T, u []unitEntry) []string {
	t.Helper()
	argv := strings.Fields(unitValue(t, u, "Service", "ExecStart"))
	if len(argv) < 2 || argv[0] != installedBin {
		t.Fatalf("ExecStart %q does not run %s", argv, installedBin)
	}
	return argv
}

// The unit files always get this structural check; systemd-analyze
// verify runs as well where systemd is installed.
func TestSystemdUnits(t *testing.T) {
	watch := parseUnit(t, "systemd/hairpinctl-watch.service")
	enable := parseUnit(t, "systemd/hairpinctl-enable.service")

	t.Run("watch unit", func(t *testing.T) {
		argv := execArgs(t, watch)
		if argv[1] != "watch" {
			t.Errorf("ExecStart runs %q, want watch", argv[1])
		}
		for _, kv := range [][3]string{
			{"Service", "Type", "simple"},
			{"Service", "Restart", "on-failure"},
			{"Service", "CapabilityBoundingSet", "CAP_NET_ADMIN"},
			{"Service", "AmbientCapabilities", "CAP_NET_ADMIN"},
			{"Service", "NoNewPrivileges", "yes"},
			{"Service", "ProtectSystem", "strict"},
			{"Service", "ProtectHome", "yes"},
			{"Service", "PrivateTmp", "yes"},
			{"Service", "RestrictAddressFamilies", "AF_NETLINK AF_UNIX"},
			{"Service", "RuntimeDirectory", "hairpinctl"},
			{"Unit", "After", "network-online.target"},
			{"Install", "WantedBy", "multi-user.target"},
		} {
			if got := unitValue(t, watch, kv[0], kv[1]); got != kv[2] {
				t.Errorf("[%s] %s=%s, want %s", kv[0], kv[1], got, kv[2])
			}
		}
		// The ready file must land in the unit's RuntimeDirectory, the
		// one place ProtectSystem=strict leaves writable.
		i := slices.Index(argv, "--ready-file")
		if i < 0 || i+1 >= len(argv) || filepath.Dir(argv[i+1]) != "/run/hairpinctl" {
			t.Errorf("ExecStart %q: --ready-file not under /run/hairpinctl", argv)
		}
	})
	t.Run("enable unit", func(t *testing.T) {
		argv := execArgs(t, enable)
		if argv[1] != "enable" {
			t.Errorf("ExecStart runs %q, want enable", argv[1])
		}
		for _, kv := range [][3]string{
			{"Service", "Type", "oneshot"},
			{"Service", "RemainAfterExit", "yes"},
			{"Service", "CapabilityBoundingSet", "CAP_NET_ADMIN"},
			{"Service", "NoNewPrivileges", "yes"},
			{"Unit", "After", "network-online.target"},
		} {
			if got := unitValue(t, enable, kv[0], kv[1]); got != kv[2] {
				t.Errorf("[%s] %s=%s, want %s", kv[0], kv[1], got, kv[2])
			}
		}
		// One pod churning at boot (a port gone mid-way) is exit 3,
		// partial: every other port was set, so the unit has succeeded.
		if ok := unitValues(enable, "Service", "SuccessExitStatus"); !slices.ContainsFunc(ok, func(v string) bool {
			return slices.Contains(strings.Fields(v), strconv.Itoa(commands.ExitPartial))
		}) {
			t.Errorf("SuccessExitStatus=%q lacks %d (partial): a port deleted at boot would mark the unit failed", ok, commands.ExitPartial)
		}
		i := slices.Index(argv, "--wait-bridge")
		if i < 0 || i+1 >= len(argv) || !slices.Contains(argv, "--bridge") {
			t.Fatalf("ExecStart %q lacks --bridge BR --wait-bridge D", argv)
		}
		wait, err := time.ParseDuration(argv[i+1])
		if err != nil {
			t.Fatal(err)
		}
		start, err := time.ParseDuration(strings.ReplaceAll(unitValue(t, enable, "Service", "TimeoutStartSec"), "min", "m"))
		if err != nil || start <= wait {
			t.Errorf("TimeoutStartSec %v (%v) must exceed --wait-bridge %v", start, err, wait)
		}
	})

	t.Run("systemd-analyze verify", func(t *testing.T) {
		sa, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze not installed: only the structural checks ran")
		}
		// verify insists that ExecStart's binary exists, so it runs against
		// a root holding the built binary at the installed path, the units,
		// and the system's own units (network-online.target, ...).
		root := t.TempDir()
		sys := "/usr/lib/systemd/system"
		if _, err := os.Stat(sys); err != nil {
			t.Skipf("no %s to verify against", sys)
		}
		copyTree(t, sys, filepath.Join(root, sys))
		copyFile(t, bin, filepath.Join(root, installedBin), 0o755)
		for _, u := range []string{"hairpinctl-watch.service", "hairpinctl-enable.service"} {
			copyFile(t, filepath.Join("systemd", u), filepath.Join(root, "etc/systemd/system", u), 0o644)
		}
		out, err := exec.Command(sa, "verify", "--man=no", "--root="+root, "hairpinctl-watch.service", "hairpinctl-enable.service").CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// copyTree copies regular files and symlinks (as symlinks).
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		case d.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(target, dst)
		case d.Type().IsRegular():
			copyFile(t, path, dst, 0o644)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The units' command lines work with the privileges the units grant: an
// unprivileged user (DynamicUser=yes) holding CAP_NET_ADMIN alone
// (AmbientCapabilities, CapabilityBoundingSet), no new privileges. They
// run inside the lab's node namespace, which to them is the host.
func TestSystemdUnitsLeastPrivilege(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	l := newLab(t, lab.Options{Pods: 2, Restore: "none"})
	// Reachable by the unprivileged user (t.TempDir's parent is not).
	dir, err := os.MkdirTemp("", "hairpinctl-unit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	asUnit := func(caps string, argv []string) []string {
		return append([]string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs",
			"--inh-caps=-all" + caps, "--ambient-caps=-all" + caps, "--bounding-set=-all" + caps, "--", bin}, argv[1:]...)
	}

	t.Run("watch", func(t *testing.T) {
		argv := execArgs(t, parseUnit(t, "systemd/hairpinctl-watch.service"))
		// Only the ready file moves: /run/hairpinctl is the unit's
		// RuntimeDirectory, which systemd creates.
		ready := filepath.Join(dir, "ready")
		argv[slices.Index(argv, "--ready-file")+1] = ready
		p := startBin(t, l, nil, asUnit(",+net_admin", argv)...)
		waitFile(t, p, ready)
		if !hairpinOf(t, l, "veth1") || !hairpinOf(t, l, "veth2") {
			t.Error("ready, but the ports are not on")
		}
		if code := p.stop(t, syscall.SIGTERM); code != 0 {
			t.Errorf("exit %d; stderr: %s", code, p.stderr.String())
		}
		if !strings.Contains(p.stdout.String(), "hairpin on veth1 (cni0, pod unknown): found off at start") {
			t.Errorf("stdout:\n%s", p.stdout.String())
		}

		// And CAP_NET_ADMIN is needed: without it watch refuses to start.
		p = startBin(t, l, nil, asUnit("", argv)...)
		<-p.exited
		if p.code != 1 || !strings.Contains(p.stderr.String(), "needs CAP_NET_ADMIN") {
			t.Errorf("without CAP_NET_ADMIN: exit %d, stderr %q", p.code, p.stderr.String())
		}
	})
	t.Run("enable", func(t *testing.T) {
		for _, port := range []string{"veth1", "veth2"} {
			lk, _ := l.Handle().LinkByName(port)
			if err := l.Handle().LinkSetHairpin(lk, false); err != nil {
				t.Fatal(err)
			}
		}
		argv := execArgs(t, parseUnit(t, "systemd/hairpinctl-enable.service"))
		p := startBin(t, l, nil, asUnit(",+net_admin", argv)...)
		<-p.exited
		if p.code != 0 {
			t.Fatalf("exit %d; stdout %s stderr %s", p.code, p.stdout.String(), p.stderr.String())
		}
		if !hairpinOf(t, l, "veth1") || !hairpinOf(t, l, "veth2") {
			t.Error("enable unit's command left ports off")
		}
	})
}

// daemonSet is the part of a DaemonSet the test reads.
type daemonSet struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Template struct {
			Metadata struct {
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
			Spec struct {
				HostNetwork       bool   `json:"hostNetwork"`
				PriorityClassName string `json:"priorityClassName"`
				Tolerations       []struct {
					Key      string `json:"key"`
					Operator string `json:"operator"`
					Effect   string `json:"effect"`
				} `json:"tolerations"`
				Containers []struct {
					Name    string   `json:"name"`
					Image   string   `json:"image"`
					Command []string `json:"command"`
					Args    []string `json:"args"`
					Ports   []struct {
						Name          string `json:"name"`
						ContainerPort int    `json:"containerPort"`
					} `json:"ports"`
					SecurityContext struct {
						Privileged               *bool `json:"privileged"`
						AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
						ReadOnlyRootFilesystem   *bool `json:"readOnlyRootFilesystem"`
						Capabilities             struct {
							Add  []string `json:"add"`
							Drop []string `json:"drop"`
						} `json:"capabilities"`
						SeccompProfile struct {
							Type string `json:"type"`
						} `json:"seccompProfile"`
					} `json:"securityContext"`
					ReadinessProbe *struct {
						HTTPGet *struct {
							Path string `json:"path"`
							Port string `json:"port"`
						} `json:"httpGet"`
					} `json:"readinessProbe"`
					Resources struct {
						Requests map[string]string `json:"requests"`
						Limits   map[string]string `json:"limits"`
					} `json:"resources"`
					VolumeMounts []struct {
						Name      string `json:"name"`
						MountPath string `json:"mountPath"`
						ReadOnly  bool   `json:"readOnly"`
					} `json:"volumeMounts"`
				} `json:"containers"`
				Volumes []struct {
					Name     string `json:"name"`
					HostPath *struct {
						Path string `json:"path"`
					} `json:"hostPath"`
					EmptyDir *struct{} `json:"emptyDir"`
				} `json:"volumes"`
			} `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

// The DaemonSet's shape; the live API server's verdict on it is in
// test/kube (deploy_linux_test.go).
func TestDaemonSet(t *testing.T) {
	b, err := os.ReadFile("deploy/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds daemonSet
	if err := yaml.Unmarshal(b, &ds); err != nil {
		t.Fatalf("deploy/daemonset.yaml is not YAML: %v", err)
	}
	if ds.APIVersion != "apps/v1" || ds.Kind != "DaemonSet" || ds.Metadata.Name == "" || ds.Metadata.Namespace == "" {
		t.Errorf("header: %s %s %s/%s", ds.APIVersion, ds.Kind, ds.Metadata.Namespace, ds.Metadata.Name)
	}
	sel := ds.Spec.Selector.MatchLabels
	if len(sel) == 0 {
		t.Error("no selector")
	}
	for k, v := range sel {
		if ds.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels", k, v)
		}
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostNetwork {
		t.Error("hostNetwork is not true: the bridge lives in the host namespace")
	}
	if pod.PriorityClassName != "hairpinctl-node-critical" {
		t.Errorf("priorityClassName %q, want deploy/priorityclass.yaml's", pod.PriorityClassName)
	}
	tolerateAll := false
	for _, tol := range pod.Tolerations {
		if tol.Operator == "Exists" && tol.Key == "" && tol.Effect == "" {
			tolerateAll = true
		}
	}
	if !tolerateAll {
		t.Error("no toleration for every taint (operator: Exists without key)")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Image != "IMAGE" {
		t.Errorf("image %q, want the placeholder IMAGE that make deploy-manifest and kustomize replace", c.Image)
	}

	// The same binary and flags as the systemd watch unit (but the ready
	// file: the probe asks /readyz), then the metrics.
	unit := execArgs(t, parseUnit(t, "systemd/hairpinctl-watch.service"))
	if i := slices.Index(unit, "--ready-file"); i >= 0 {
		unit = slices.Delete(unit, i, i+2)
	}
	got := append(slices.Clone(c.Command), c.Args...)
	if len(got) < len(unit) || !slices.Equal(got[:len(unit)], unit) {
		t.Errorf("DaemonSet runs %q,\nsystemd unit runs %q", got, unit)
	}
	i := slices.Index(got, "--metrics-listen")
	if i < 0 || i+1 >= len(got) {
		t.Fatalf("no --metrics-listen in %q", got)
	}
	_, port, err := net.SplitHostPort(got[i+1])
	if err != nil {
		t.Fatalf("--metrics-listen %s: %v", got[i+1], err)
	}
	named := ""
	for _, p := range c.Ports {
		if strconv.Itoa(p.ContainerPort) == port {
			named = p.Name
		}
	}
	if named != "metrics" {
		t.Errorf("port %s of --metrics-listen is not the container port named metrics: %+v", port, c.Ports)
	}
	ann := ds.Spec.Template.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != port || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v, want scrape true, port %s, path /metrics", ann, port)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port != "metrics" {
		t.Errorf("readiness probe %+v, want GET /readyz on the metrics port", p)
	}

	sc := c.SecurityContext
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) || !slices.Equal(sc.Capabilities.Add, []string{"NET_ADMIN"}) {
		t.Errorf("capabilities drop %v add %v, want drop [ALL] add [NET_ADMIN]", sc.Capabilities.Drop, sc.Capabilities.Add)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged container")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("seccomp profile %q, want RuntimeDefault", sc.SeccompProfile.Type)
	}
	for _, m := range []map[string]string{c.Resources.Requests, c.Resources.Limits} {
		if m["cpu"] == "" || m["memory"] == "" {
			t.Errorf("resources %v lack cpu or memory", c.Resources)
		}
	}

	mounts := map[string]string{} // mount path → volume
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
		if !m.ReadOnly {
			t.Errorf("%s is mounted read-write", m.MountPath)
		}
	}
	hostPath := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPath[v.Name] = v.HostPath.Path
		}
	}
	for _, p := range []string{"/run/netns", "/etc/cni/net.d"} {
		if vol, ok := mounts[p]; !ok || hostPath[vol] != p {
			t.Errorf("the host's %s is not mounted at %s", p, p)
		}
	}
}

// disable while a watch keeps the bridge is undone at once: disable says
// so (and who), only for the namespace and bridge that watch keeps.
func TestE2EDisableWarnsOfWatcher(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Restore: "none"})
	other := newLab(t, lab.Options{Pods: 1, Restore: "none"})
	ready := filepath.Join(t.TempDir(), "ready")
	p := startBin(t, nil, []string{"HAIRPINCTL_NETNS=" + l.Node}, bin, "watch", "--bridge", "cni0", "--ready-file", ready)
	waitFile(t, p, ready)

	r := run(t, "--netns", l.Node, "disable", "veth1")
	want := fmt.Sprintf("hairpinctl: disable: hairpinctl watch (pid %d) keeps hairpin on for cni0 in this namespace", p.cmd.Process.Pid)
	if r.code != 0 || !strings.Contains(r.stderr, want) {
		t.Errorf("disable under a watcher: exit %d, stderr %q; want it to contain %q", r.code, r.stderr, want)
	}
	waitHairpin(t, l, "veth1", true) // as it said
	if r := run(t, "--netns", other.Node, "disable", "--bridge", "cni0"); r.code != 0 || strings.Contains(r.stderr, "hairpinctl watch") {
		t.Errorf("disable in another namespace: %+v", r)
	}
}
