package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// doctorJSON is doctor's -o json schema.
type doctorJSON struct {
	Checks []struct {
		ID      string   `json:"id"`
		Status  string   `json:"status"`
		Finding string   `json:"finding"`
		Fix     string   `json:"fix"`
		Details []string `json:"details"`
	} `json:"checks"`
	Summary struct {
		Status string `json:"status"`
		Pass   int    `json:"pass"`
		Warn   int    `json:"warn"`
		Fail   int    `json:"fail"`
		Skip   int    `json:"skip"`
		Netns  string `json:"netns"`
	} `json:"summary"`
}

func doctorRun(t *testing.T, args ...string) (doctorJSON, result) {
	t.Helper()
	r := run(t, append([]string{"doctor", "-o", "json"}, args...)...)
	var d doctorJSON
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		t.Fatalf("doctor %v: exit %d, %v\nstdout %s\nstderr %s", args, r.code, err, r.stdout, r.stderr)
	}
	return d, r
}

// status returns check id's status, finding and fix.
func (d doctorJSON) check(t *testing.T, id string) (status, finding, fix string) {
	t.Helper()
	for _, c := range d.Checks {
		if c.ID == id {
			return c.Status, c.Finding, c.Fix
		}
	}
	t.Fatalf("no check %s in %+v", id, d.Checks)
	return
}

// cniDir is a --cni-conf-dir holding one configuration from netops' testdata.
func cniDir(t *testing.T, file string) string {
	t.Helper()
	dir := t.TempDir()
	setCNI(t, dir, file)
	return dir
}

func setCNI(t *testing.T, dir, file string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("netops/doctor/testdata/cni", file))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-pods.conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// runHairpinctlFix runs a fix that is a hairpinctl command line with the
// binary under test.
func runHairpinctlFix(t *testing.T, fix string) {
	t.Helper()
	args, ok := strings.CutPrefix(fix, "hairpinctl ")
	if !ok || strings.ContainsAny(args, ";()'\"") {
		t.Fatalf("fix %q is not a plain hairpinctl command", fix)
	}
	if r := run(t, strings.Fields(args)...); r.code != 0 {
		t.Fatalf("fix %q: %+v", fix, r)
	}
}

// From a broken node to a healthy one through the binary: exit 4 with the
// headline and its fix in the table, the fixes taken from the JSON and run,
// then exit 0 and the endpoint reaches itself.
func TestE2EDoctor(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Endpoints: []int{1}, Restore: "iptables-nft-restore"})
	cni := cniDir(t, "bridge-nohairpin.conflist")

	r := run(t, "doctor", "10.96.0.10", "--netns", l.Node, "--cni-conf-dir", cni)
	if r.code != 4 || r.stderr != "" {
		t.Fatalf("doctor: exit %d (want 4), stderr %q\n%s", r.code, r.stderr, r.stdout)
	}
	for _, ln := range strings.Split(r.stdout, "\n") {
		if n := utf8.RuneCountInString(ln); n > 80 {
			t.Errorf("line of %d columns: %q", n, ln)
		}
	}
	flat := strings.Join(strings.Fields(r.stdout), " ")
	const headline = "default/web:http 10.96.0.10:80 → endpoint 10.244.0.11:8080 (pod unknown) sits behind veth1 on cni0 with hairpin off: it cannot reach itself through this Service (every one of its connections will hang)"
	if !strings.Contains(flat, headline+" Fix: hairpinctl enable veth1 --netns "+l.Node) {
		t.Errorf("headline with its fix not in the table:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "FAIL    service:default/web:http\n") || !strings.Contains(r.stdout, "WARN    cni-config\n") {
		t.Errorf("table rows:\n%s", r.stdout)
	}

	d, r := doctorRun(t, "default/web:http", "--netns", l.Node, "--cni-conf-dir", cni)
	if r.code != 4 || d.Summary.Status != "FAIL" || d.Summary.Fail != 2 || d.Summary.Netns != l.Node {
		t.Fatalf("json: exit %d, summary %+v", r.code, d.Summary)
	}
	st, finding, fix := d.check(t, "service:default/web:http")
	if st != "FAIL" || finding != headline || fix != "hairpinctl enable veth1 --netns "+l.Node {
		t.Errorf("service check %s %q %q", st, finding, fix)
	}
	// The selectors services takes, doctor takes: the port by number, IP:PORT.
	for _, sel := range []string{"default/web:80", "10.96.0.10:80"} {
		d, r := doctorRun(t, sel, "--netns", l.Node, "--cni-conf-dir", cni)
		if st, _, _ := d.check(t, "service:default/web:http"); r.code != 4 || st != "FAIL" {
			t.Errorf("doctor %s: exit %d, service check %s", sel, r.code, st)
		}
	}
	runHairpinctlFix(t, fix)
	d, _ = doctorRun(t, "default/web:http", "--netns", l.Node, "--cni-conf-dir", cni)
	if st, _, _ := d.check(t, "service:default/web:http"); st != "PASS" {
		t.Errorf("after the fix the service check is %s", st)
	}
	st, _, fix = d.check(t, "bridge-hairpin") // veth2 is still off
	if st != "FAIL" {
		t.Errorf("bridge-hairpin %s with veth2 off", st)
	}
	runHairpinctlFix(t, fix)
	setCNI(t, cni, "10-flannel.conflist")

	r = run(t, "doctor", "--netns", l.Node, "--cni-conf-dir", cni)
	if r.code != 0 || strings.Contains(r.stdout, "FAIL") || strings.Contains(r.stdout, "WARN") {
		t.Fatalf("healthy node: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.HasSuffix(r.stdout, "PASS: 0 fail, 0 warn, 8 pass, 0 skip (netns "+l.Node+")\n") {
		t.Errorf("summary:\n%s", r.stdout)
	}
	if got, err := l.ConnectService(l.Pod(1), 3*time.Second); err != nil || got != l.Pod(1).Name {
		t.Errorf("doctor passes but the endpoint cannot reach itself: %q, %v", got, err)
	}
}

// WARNs alone exit 0; a sysctl FAIL exits 4 and its fix, pasted into a
// shell, repairs it.
func TestE2EDoctorWarnAndSysctl(t *testing.T) {
	if _, err := exec.LookPath("iptables-legacy-restore"); err != nil {
		t.Skip("iptables-legacy-restore not installed")
	}
	l := newLab(t, lab.Options{Pods: 1, Restore: "iptables-nft-restore", Hairpin: true})
	cni := cniDir(t, "10-flannel.conflist")
	if err := l.Restore("iptables-legacy-restore", l.Rules); err != nil {
		t.Fatal(err)
	}
	d, r := doctorRun(t, "--netns", l.Node, "--cni-conf-dir", cni)
	if st, finding, _ := d.check(t, "kube-proxy"); r.code != 0 || st != "WARN" || !strings.Contains(finding, "split brain") {
		t.Errorf("split brain: exit %d, %s %q", r.code, st, finding)
	}

	if out, err := l.Exec("", "sysctl", "-w", "net.bridge.bridge-nf-call-iptables=0"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	d, r = doctorRun(t, "--netns", l.Node, "--cni-conf-dir", cni)
	st, _, fix := d.check(t, "br-netfilter")
	if r.code != 4 || st != "FAIL" {
		t.Fatalf("bridge-nf-call-iptables=0: exit %d, %s", r.code, st)
	}
	cmd, _, _ := strings.Cut(fix, " (")
	if out, err := exec.Command("sh", "-c", cmd).CombinedOutput(); err != nil {
		t.Fatalf("fix %q: %v %s", cmd, err, out)
	}
	d, r = doctorRun(t, "--netns", l.Node, "--cni-conf-dir", cni)
	if st, _, _ := d.check(t, "br-netfilter"); r.code != 0 || st != "PASS" {
		t.Errorf("after the fix: exit %d, %s", r.code, st)
	}
}

func TestE2EDoctorUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"doctor", "web"}, `doctor: "web" is neither an IP address, IP:PORT, NS/NAME nor NS/NAME:PORT`},
		{[]string{"doctor", "-o", "yaml"}, `unknown output format "yaml"`},
		{[]string{"doctor", "--bridge", "nosuchbr0"}, "bridge nosuchbr0 not found"},
		{[]string{"doctor", "--netns", "hp-no-such-ns"}, "netns hp-no-such-ns does not exist"},
		{[]string{"metrics"}, "metrics: --textfile DIR is required"},
		{[]string{"metrics", "--textfile", "/nonexistent/hp"}, "metrics: --textfile /nonexistent/hp does not exist"},
		{[]string{"metrics", "--textfile", "/etc/hostname"}, "is not a directory"},
	} {
		r := run(t, tt.args...)
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (%q)", tt.args, r.code, r.stderr)
		}
		oneLineErr(t, r, tt.want)
	}
	for _, cmd := range []string{"doctor", "metrics"} {
		r := run(t, cmd, "--help")
		// The exit codes are said once, in the top-level help.
		if r.code != 0 || !strings.Contains(r.stdout, "EXAMPLES:") {
			t.Errorf("%s --help: %+v", cmd, r)
		}
	}
}

// Without privileges doctor still lists the bridge and reads the sysctls;
// what needs CAP_NET_ADMIN SKIPs and says to run as root.
func TestE2EDoctorUnprivileged(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed")
	}
	l := newLab(t, lab.Options{Pods: 1, Restore: "iptables-nft-restore"})
	cni := cniDir(t, "10-flannel.conflist")
	for _, d := range []string{cni, filepath.Dir(cni)} { // t.TempDir makes them 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("ip", "netns", "exec", l.Node, "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--",
		bin, "doctor", "-o", "json", "--cni-conf-dir", cni)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 4) {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
	var d doctorJSON
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for id, want := range map[string]string{"bridge-hairpin": "FAIL", "br-netfilter": "PASS", "ip-forward": "PASS", "kube-proxy": "SKIP", "conntrack": "SKIP", "cni-config": "PASS"} {
		st, finding, fix := d.check(t, id)
		if st != want || want == "SKIP" && fix != "run as root" {
			t.Errorf("%s unprivileged: %s %q fix %q, want %s", id, st, finding, fix, want)
		}
	}
}

// readMetrics parses a textfile the way node_exporter does.
func readMetrics(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, b)
	}
	return fams
}

// gauge returns the value of the series of name with the given labels.
func gauge(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	for _, m := range fams[name].GetMetric() {
		match := 0
		for _, lp := range m.GetLabel() {
			if v, ok := labels[lp.GetName()]; ok && v == lp.GetValue() {
				match++
			}
		}
		if match == len(labels) {
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

// metrics writes a file node_exporter parses, replaced by rename: a
// reader never sees a partial file, the inode changes, nothing is left.
func TestE2EMetrics(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 3, Endpoints: []int{1}, Restore: "iptables-nft-restore"})
	dir := t.TempDir()
	path := filepath.Join(dir, "hairpinctl.prom")
	args := []string{"metrics", "--textfile", dir, "--netns", l.Node, "--cni-conf-dir", cniDir(t, "10-flannel.conflist")}
	if r := run(t, args...); r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Fatalf("metrics: %+v", r)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fams := readMetrics(t, b)
	if on, off := gauge(t, fams, "hairpinctl_bridge_ports", map[string]string{"bridge": "cni0", "hairpin": "on"}),
		gauge(t, fams, "hairpinctl_bridge_ports", map[string]string{"bridge": "cni0", "hairpin": "off"}); on != 0 || off != 3 {
		t.Errorf("cni0 ports on %v off %v, want 0 and 3", on, off)
	}
	for check, status := range map[string]string{"bridge-hairpin": "fail", "services": "fail", "kube-proxy": "pass", "cni-config": "pass", "conntrack": "pass"} {
		for _, s := range []string{"pass", "warn", "fail", "skip"} {
			want := 0.0
			if s == status {
				want = 1
			}
			if got := gauge(t, fams, "hairpinctl_doctor_check_status", map[string]string{"check": check, "status": s}); got != want {
				t.Errorf("%s %s = %v, want %v", check, s, got, want)
			}
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v: node_exporter runs as another user", st.Mode().Perm())
	}
	// Held open, the first file keeps its inode: a later file cannot reuse
	// the number, and a file replaced by rename is left with no links.
	first, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	ino := st.Sys().(*syscall.Stat_t).Ino

	// Rewrite it while a reader keeps parsing it: every read is whole.
	if r := run(t, "enable", "--bridge", "cni0", "--netns", l.Node); r.code != 0 {
		t.Fatalf("enable: %+v", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reads := make(chan int, 1)
	go func() {
		n := 0
		defer func() { reads <- n }()
		for ctx.Err() == nil {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("read during rewrite: %v", err)
				return
			}
			p := expfmt.NewTextParser(model.LegacyValidation)
			fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
			if err != nil || len(fams["hairpinctl_doctor_check_status"].GetMetric()) != 32 {
				t.Errorf("partial file seen (%v):\n%s", err, b)
				return
			}
			n++
		}
	}()
	for i := 0; i < 5; i++ {
		if r := run(t, args...); r.code != 0 {
			t.Errorf("metrics run %d: %+v", i, r)
		}
	}
	cancel()
	if n := <-reads; n == 0 {
		t.Error("the reader never read the file")
	}
	b, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fams = readMetrics(t, b)
	if on := gauge(t, fams, "hairpinctl_bridge_ports", map[string]string{"bridge": "cni0", "hairpin": "on"}); on != 3 {
		t.Errorf("after enable: %v ports on, want 3", on)
	}
	if got := gauge(t, fams, "hairpinctl_doctor_check_status", map[string]string{"check": "bridge-hairpin", "status": "pass"}); got != 1 {
		t.Errorf("bridge-hairpin pass = %v after enable", got)
	}
	st, err = os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	held, err := first.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Sys().(*syscall.Stat_t).Ino == ino || held.Sys().(*syscall.Stat_t).Nlink != 0 {
		t.Error("the first file is still linked: it was rewritten in place, not replaced")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("left in the textfile directory: %v", entries)
	}
}

// --textfile - prints the same text on stdout, with hairpinctl_up 1 and
// the time of this run.
func TestE2EMetricsStdout(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Restore: "iptables-nft-restore"})
	before := time.Now()
	r := run(t, "metrics", "--textfile", "-", "--netns", l.Node, "--cni-conf-dir", cniDir(t, "10-flannel.conflist"))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("metrics --textfile -: %+v", r)
	}
	fams := readMetrics(t, []byte(r.stdout))
	if got := gauge(t, fams, "hairpinctl_up", nil); got != 1 {
		t.Errorf("hairpinctl_up = %v, want 1", got)
	}
	if got := gauge(t, fams, "hairpinctl_last_success_timestamp_seconds", nil); got < float64(before.Unix()) || got > float64(time.Now().Unix()+1) {
		t.Errorf("last success %v, not this run (%v)", got, before.Unix())
	}
	if got := gauge(t, fams, "hairpinctl_bridge_ports", map[string]string{"bridge": "cni0", "hairpin": "off"}); got != 2 {
		t.Errorf("ports off = %v, want 2", got)
	}
}

// Without CAP_NET_ADMIN metrics says so and fails, and the file says
// hairpinctl_up 0 rather than a column of SKIPs.
func TestE2EMetricsUnprivileged(t *testing.T) {
	dir, err := os.MkdirTemp("", "hairpinctl-metrics-") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	r := runAs(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "metrics", "--textfile", dir)
	if r.code != 1 {
		t.Errorf("exit %d, want 1: %+v", r.code, r)
	}
	oneLineErr(t, r, "metrics needs CAP_NET_ADMIN")
	b, err := os.ReadFile(filepath.Join(dir, "hairpinctl.prom"))
	if err != nil {
		t.Fatal(err)
	}
	fams := readMetrics(t, b)
	if got := gauge(t, fams, "hairpinctl_up", nil); got != 0 || len(fams) != 1 {
		t.Errorf("hairpinctl_up = %v with %d families, want 0 alone:\n%s", got, len(fams), b)
	}
}

// What the systemd unit grants is enough: root with only CAP_NET_ADMIN
// and CAP_NET_RAW, in the node's namespace (no setns), reads kube-proxy's
// rules and conntrack.
func TestE2EMetricsUnitPrivileges(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed")
	}
	l := newLab(t, lab.Options{Pods: 1, Restore: "iptables-nft-restore", Hairpin: true})
	dir := t.TempDir()
	caps := strings.Join(unitValues(parseUnit(t, "systemd/hairpinctl-metrics.service"), "Service", "CapabilityBoundingSet"), " ")
	var set []string
	for _, c := range strings.Fields(caps) {
		set = append(set, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	cmd := exec.Command("ip", "netns", "exec", l.Node, "setpriv", "--bounding-set", "-all,"+strings.Join(set, ","), "--",
		bin, "metrics", "--textfile", dir, "--cni-conf-dir", cniDir(t, "10-flannel.conflist"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "hairpinctl.prom"))
	if err != nil {
		t.Fatal(err)
	}
	fams := readMetrics(t, b)
	for _, check := range []string{"bridge-hairpin", "br-netfilter", "ip-forward", "kube-proxy", "masquerade", "services", "conntrack"} {
		if got := gauge(t, fams, "hairpinctl_doctor_check_status", map[string]string{"check": check, "status": "pass"}); got != 1 {
			t.Errorf("%s does not pass with the unit's capabilities (%s):\n%s", check, caps, b)
		}
	}
}

func TestMetricsSystemdUnits(t *testing.T) {
	svc := parseUnit(t, "systemd/hairpinctl-metrics.service")
	timer := parseUnit(t, "systemd/hairpinctl-metrics.timer")
	argv := execArgs(t, svc)
	if len(argv) != 4 || argv[1] != "metrics" || argv[2] != "--textfile" || argv[3] != "/var/lib/node_exporter/textfile_collector" {
		t.Errorf("ExecStart %q", argv)
	}
	// The one directory written must be writable under ProtectSystem=strict.
	if !slices.Contains(unitValues(svc, "Service", "ReadWritePaths"), "-"+argv[3]) {
		t.Errorf("ReadWritePaths %q lack %s", unitValues(svc, "Service", "ReadWritePaths"), argv[3])
	}
	for _, kv := range [][3]string{
		{"Service", "Type", "oneshot"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "CapabilityBoundingSet", "CAP_NET_ADMIN CAP_NET_RAW"},
		{"Service", "RestrictNamespaces", "yes"},
	} {
		if got := unitValue(t, svc, kv[0], kv[1]); got != kv[2] {
			t.Errorf("service [%s] %s=%s, want %s", kv[0], kv[1], got, kv[2])
		}
	}
	if got := unitValues(svc, "Install", "WantedBy"); len(got) != 0 {
		t.Errorf("the service is started by its timer, not WantedBy %q", got)
	}
	for _, kv := range [][3]string{
		{"Timer", "Unit", "hairpinctl-metrics.service"},
		{"Timer", "OnUnitActiveSec", "1min"},
		{"Install", "WantedBy", "timers.target"},
	} {
		if got := unitValue(t, timer, kv[0], kv[1]); got != kv[2] {
			t.Errorf("timer [%s] %s=%s, want %s", kv[0], kv[1], got, kv[2])
		}
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: only the structural checks ran")
	}
	const sys = "/usr/lib/systemd/system"
	if _, err := os.Stat(sys); err != nil {
		t.Skipf("no %s to verify against", sys)
	}
	root := t.TempDir()
	copyTree(t, sys, filepath.Join(root, sys))
	copyFile(t, bin, filepath.Join(root, installedBin), 0o755)
	for _, u := range []string{"hairpinctl-metrics.service", "hairpinctl-metrics.timer"} {
		copyFile(t, filepath.Join("systemd", u), filepath.Join(root, "etc/systemd/system", u), 0o644)
	}
	out, err := exec.Command(sa, "verify", "--man=no", "--root="+root, "hairpinctl-metrics.service", "hairpinctl-metrics.timer").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
