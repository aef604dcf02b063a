package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
)

// probeTables lists the probe's bridge tables in the lab's node.
func probeTables(t *testing.T, l *lab.Lab) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", l.Node, "nft", "list", "tables", "bridge").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	var tables []string
	for _, ln := range strings.Split(string(out), "\n") {
		if strings.Contains(ln, "hairpinctl-probe") {
			tables = append(tables, ln)
		}
	}
	return strings.Join(tables, "\n")
}

type probeJSON struct {
	Pod *struct {
		Namespace, Name, ContainerID, Source string
	}
	Client struct {
		IP, Interface, Bridge, Netns string
		Hairpin                      bool
	}
	Service struct {
		Endpoints []struct {
			IP   string
			Port int
			Self bool
		}
	}
	Count    int
	Results  map[string]int
	OK       bool
	Findings []struct {
		ID, Finding, Fix string
		Evidence         []string
		Connections      int
	}
	Connections []struct {
		Result, Endpoint, Bridge string
		Conntrack, Self, SNAT    bool
	}
}

// The pod is its Service's only endpoint with hairpin off: probe exits 4
// and names the port; --fix turns hairpin on, and the probe after it
// succeeds; nothing is left in the node.
func TestE2EProbe(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Endpoints: []int{1}})
	self := l.Pod(1)
	ns := []string{"--netns", l.Node}

	r := run(t, append(ns, "probe", self.HostVeth, l.ServiceName, "--count", "10", "--timeout", "300ms")...)
	if r.code != 4 || !strings.Contains(r.stdout, "hairpin-off") || !strings.Contains(r.stdout, self.HostVeth) || !strings.Contains(r.stdout, "0/10 succeeded") {
		t.Fatalf("probe with hairpin off: exit %d, want 4 and hairpin-off naming %s:\n%s\n%s", r.code, self.HostVeth, r.stdout, r.stderr)
	}
	for _, ln := range strings.Split(r.stdout, "\n") {
		if len([]rune(ln)) > 80 {
			t.Errorf("line wider than 80 columns: %q", ln)
		}
	}

	r = run(t, append(ns, "probe", self.IP.String(), fmt.Sprintf("%s:%d", l.ServiceIP, l.ServicePort), "-n", "10", "--timeout", "300ms", "-o", "json")...)
	var rep probeJSON
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 4 {
		t.Fatalf("probe -o json: exit %d, %v:\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	if rep.Client.Interface != self.HostVeth || rep.Client.IP != self.IP.String() || rep.Client.Hairpin || rep.Count != 10 || rep.Results["timed-out"] != 10 || rep.OK {
		t.Errorf("probe -o json: %+v; want %s (%s), hairpin off, 10 timed out", rep, self.HostVeth, self.IP)
	}
	if eps := rep.Service.Endpoints; len(eps) != 1 || eps[0].IP != self.IP.String() || eps[0].Port != 8080 || !eps[0].Self {
		t.Errorf("probe -o json: service endpoints %+v; want one, {ip: %s, port: 8080}, self", eps, self.IP)
	}
	if len(rep.Findings) != 1 || rep.Findings[0].ID != "hairpin-off" || !strings.Contains(rep.Findings[0].Fix, "enable "+self.HostVeth) {
		t.Errorf("findings %+v: want one hairpin-off with enable %s as its fix", rep.Findings, self.HostVeth)
	}

	r = run(t, append(ns, "probe", self.HostVeth, l.ServiceName, "-n", "10", "--timeout", "300ms", "--fix")...)
	t.Logf("probe --fix:\n%s", r.stdout)
	if s := probeTables(t, l); s != "" {
		t.Errorf("probe tables left behind:\n%s", s)
	}
	if out, err := exec.Command("ip", "-n", l.Node, "link", "set", self.HostVeth, "type", "bridge_slave", "hairpin", "off").CombinedOutput(); err != nil {
		t.Fatalf("hairpin off again: %v: %s", err, out)
	}
	r = run(t, append(ns, "probe", self.HostVeth, l.ServiceName, "-n", "10", "--timeout", "300ms", "--fix", "-o", "json")...)
	var fix struct {
		Before, After *probeJSON
		Applied       string
	}
	if err := json.Unmarshal([]byte(r.stdout), &fix); err != nil || r.code != 0 {
		t.Fatalf("probe --fix: exit %d, %v:\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	if fix.Before.Results["timed-out"] != 10 || fix.After == nil || fix.After.Results["succeeded"] != 10 || !fix.After.OK {
		t.Errorf("probe --fix: before %v, after %+v; want 10 timed out, then 10 succeeded", fix.Before.Results, fix.After)
	}
	if !hairpinOf(t, l, self.HostVeth) {
		t.Errorf("probe --fix left %s with hairpin off", self.HostVeth)
	}
	r = run(t, append(ns, "probe", self.HostVeth, l.ServiceName, "-n", "10")...)
	if r.code != 0 || !strings.Contains(r.stdout, "10/10 succeeded") {
		t.Errorf("probe after the fix: exit %d, want 0:\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if s := probeTables(t, l); s != "" {
		t.Errorf("probe tables left behind:\n%s", s)
	}
}

// A pod named as pod/NS/NAME is found through the CNI cache, and entered
// at the namespace the cache recorded.
func TestE2EProbeCNIPod(t *testing.T) {
	l, cni, made := cniLab(t)
	web := made[0]
	ip := web.Attachments[0].IPs[0].String()
	if err := l.Restore("iptables-restore", lab.ServiceRules(l.ServiceName, l.ServiceIP.String(), l.ServicePort, []string{ip}, 8080)); err != nil {
		t.Fatal(err)
	}
	// The lab's network has no gateway: give the pod the route a
	// cluster's CNI gives it.
	if out, err := exec.Command("ip", "-n", web.Netns, "route", "add", "default", "via", "10.244.0.1").CombinedOutput(); err != nil {
		t.Fatalf("default route in %s: %v: %s", web.Netns, err, out)
	}
	r := run(t, "--netns", l.Node, "probe", "pod/"+web.Namespace+"/"+web.Name, l.ServiceName, "--cni-cache", cni.CacheDir, "-n", "5", "--timeout", "300ms", "-o", "json")
	var rep probeJSON
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 4 {
		t.Fatalf("probe: exit %d, %v:\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	if rep.Pod == nil || rep.Pod.Namespace != web.Namespace || rep.Pod.Name != web.Name || rep.Pod.Source != "cache" ||
		rep.Client.Interface != web.Attachments[0].HostVeth || rep.Client.Netns != web.NetnsPath {
		t.Errorf("probe pod %+v client %+v: want %s/%s (from the cache) behind %s entered at %s", rep.Pod, rep.Client, web.Namespace, web.Name, web.Attachments[0].HostVeth, web.NetnsPath)
	}
	// The bridge plugin leaves hairpin off: the only endpoint's own
	// connections are dropped.
	if rep.Results["timed-out"] != 5 || len(rep.Findings) != 1 || rep.Findings[0].ID != "hairpin-off" {
		t.Errorf("probe: results %v findings %+v; want 5 timed out, hairpin-off", rep.Results, rep.Findings)
	}
}

func TestE2EProbeBadInput(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Endpoints: []int{1}})
	ns := []string{"--netns", l.Node}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"probe", "veth1"}, 2, "probe: missing SERVICE: probe needs POD and SERVICE"},
		{[]string{"probe"}, 2, "probe: missing POD and SERVICE"},
		{[]string{"probe", "nosuch0", l.ServiceName}, 2, "nosuch0"},
		{[]string{"probe", l.Bridge, l.ServiceName}, 2, "probe: " + l.Bridge + " is a bridge, not a pod's port"},
		{[]string{"probe", "veth1", "default/nosuch:http"}, 2, "hairpinctl: probe: no Service port matches default/nosuch:http"},
		{[]string{"probe", "veth1", "not a service"}, 2, "not a service"},
		{[]string{"probe", "veth1", l.ServiceName, "--count", "0"}, 2, "--count 0"},
	} {
		r := run(t, append(ns, c.args...)...)
		if r.code != c.code || !strings.Contains(r.stderr, c.msg) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want %d and one line with %q", c.args, r.code, r.stderr, c.code, c.msg)
		}
	}
}

// A probe stopped by SIGINT, SIGTERM or SIGHUP while its connections hang
// removes its bridge table before it exits.
func TestE2EProbeSignalLeavesNothing(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Endpoints: []int{1}})
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		cmd := exec.Command(bin, "--netns", l.Node, "probe", "veth1", l.ServiceName, "--timeout", "1m")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); probeTables(t, l) == ""; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				t.Fatalf("%v: the probe's table never appeared", sig)
			}
		}
		stopProbe(t, cmd, sig)
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr.String(), "interrupted by") {
			t.Errorf("%v: exit %d, stderr %q; want 1, interrupted", sig, code, stderr.String())
		}
		if s := probeTables(t, l); s != "" {
			t.Fatalf("%v: probe table left behind:\n%s", sig, s)
		}
	}
}

// doctor --probe probes each endpoint on the node from its own pod and
// merges the findings into its report, after saying what it will do.
func TestE2EDoctorProbe(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 3, Endpoints: []int{1, 2}})
	type report struct {
		Checks []struct {
			ID, Status, Finding, Fix string
			Details                  []string
			Pods                     []struct{ Port, Endpoint string }
		}
		Summary struct{ Fail int }
	}
	doctor := func() (report, result) {
		r := run(t, "--netns", l.Node, "doctor", "--probe", "-o", "json")
		var rep report
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("doctor --probe: %v:\n%s\n%s", err, r.stdout, r.stderr)
		}
		return rep, r
	}
	// probes maps the port each probe check was made from to its
	// status and finding; every one has the stable ID probe:NS/NAME:PORT.
	probes := func(rep report) map[string]string {
		m := map[string]string{}
		for _, c := range rep.Checks {
			if !strings.HasPrefix(c.ID, "probe:") {
				continue
			}
			if c.ID != "probe:"+l.ServiceName || len(c.Pods) != 1 {
				t.Errorf("probe check %q with pods %+v: want ID probe:%s and the pod probed from in pods", c.ID, c.Pods, l.ServiceName)
				continue
			}
			m[c.Pods[0].Port] = c.Status + " " + c.Finding
		}
		return m
	}
	rep, r := doctor()
	if r.code != 4 || !strings.Contains(r.stderr, "doctor: --probe: 2 probes of 10 connections each") || !strings.Contains(r.stderr, "at most 30s") {
		t.Errorf("doctor --probe, hairpin off: exit %d, stderr %q; want 4 and the plan up front", r.code, r.stderr)
	}
	got := probes(rep)
	for _, p := range []*lab.Pod{l.Pod(1), l.Pod(2)} {
		id := p.HostVeth
		if !strings.HasPrefix(got[id], "FAIL ") || !strings.Contains(got[id], "from "+p.HostVeth) || !strings.Contains(got[id], "port "+p.HostVeth+" has hairpin off") {
			t.Errorf("probe from %s: %q; want FAIL naming the pod's port and its hairpin (all: %v)", id, got[id], got)
		}
	}
	if len(got) != 2 {
		t.Errorf("probe checks %v: want one per endpoint (pods 1 and 2)", got)
	}
	for _, p := range l.Pods {
		if out, err := exec.Command("ip", "-n", l.Node, "link", "set", "dev", p.HostVeth, "type", "bridge_slave", "hairpin", "on").CombinedOutput(); err != nil {
			t.Fatalf("hairpin on %s: %v: %s", p.HostVeth, err, out)
		}
	}
	rep, _ = doctor()
	for id, v := range probes(rep) {
		if !strings.HasPrefix(v, "PASS ") {
			t.Errorf("%s with hairpin on: %s; want PASS", id, v)
		}
	}
}

// --fix stopped by SIGINT during the probe after its fix still says what
// it applied and how to undo it: the change stays on the node. (The
// masquerade rule is deleted, so the probe after the fix hangs on its
// timeout rather than ending at once.)
func TestE2EProbeFixInterruptedSaysWhatItApplied(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Endpoints: []int{1}})
	self := l.Pod(1)
	labtest.DeleteMasquerade(t, l)
	// The probe after the fix lasts its 3 s timeout: the signal comes as
	// soon as the port's hairpin shows on.
	cmd := exec.Command(bin, "--netns", l.Node, "probe", self.HostVeth, l.ServiceName, "-n", "3", "--timeout", "3s", "--fix")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); !hairpinOf(t, l, self.HostVeth); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("--fix never turned hairpin on for %s:\n%s\n%s", self.HostVeth, stdout.String(), stderr.String())
		}
	}
	stopProbe(t, cmd, syscall.SIGINT)
	msg := stderr.String()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(msg, "interrupted by SIGINT") ||
		!strings.Contains(msg, "applied hairpin on "+self.HostVeth) || !strings.Contains(msg, "disable "+self.HostVeth) {
		t.Errorf("exit %d, stderr %q; want 1, interrupted, naming the hairpin turned on for %s and how to undo it", code, msg, self.HostVeth)
	}
	if !hairpinOf(t, l, self.HostVeth) {
		t.Errorf("hairpin of %s is off again; want the applied fix to stay", self.HostVeth)
	}
	if s := probeTables(t, l); s != "" {
		t.Errorf("probe tables left behind:\n%s", s)
	}
}

// A UDP Service whose endpoint reads the probe's datagrams and never
// answers cannot be judged: the text says WARN and why, and the exit
// status is 0, as doctor makes it a warning, not a failure seen.
func TestE2EProbeUDPUnanswered(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Restore: "none", Hairpin: true})
	ep := l.Pod(1)
	rules := strings.ReplaceAll(lab.ServiceRules(l.ServiceName, l.ServiceIP.String(), l.ServicePort, []string{ep.IP.String()}, 8080), "tcp", "udp")
	if err := l.Restore("iptables-restore", rules); err != nil {
		t.Fatal(err)
	}
	var quiet net.PacketConn
	if err := lab.In(ep.Ns, func() error {
		var err error
		quiet, err = net.ListenPacket("udp4", ":8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	r := run(t, "--netns", l.Node, "probe", l.Pod(2).HostVeth, l.ServiceName, "-n", "3", "--timeout", "300ms")
	if r.code != 0 || !strings.Contains(r.stdout, "WARN") || !strings.Contains(r.stdout, "cannot be judged") || strings.Contains(r.stdout, "FAIL") {
		t.Errorf("UDP without answers: exit %d, want 0, WARN and cannot be judged:\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

// A pod with a second interface (net1) on the bridge reaches the Service
// by its default route through eth0, whatever address the probe binds:
// probing from net1's port is refused with a line that says so, rather
// than blaming that port's hairpin for drops it never saw.
func TestE2EProbeSecondInterface(t *testing.T) {
	l, cni, made := cniLab(t)
	web := made[0]
	net1, err := cni.Attach(web, "net1")
	if err != nil {
		t.Fatal(err)
	}
	ip := web.Attachments[0].IPs[0].String()
	if err := l.Restore("iptables-restore", lab.ServiceRules(l.ServiceName, l.ServiceIP.String(), l.ServicePort, []string{ip}, 8080)); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "-n", web.Netns, "route", "add", "default", "via", "10.244.0.1", "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("default route in %s: %v: %s", web.Netns, err, out)
	}
	r := run(t, "--netns", l.Node, "probe", net1.HostVeth, l.ServiceName, "--cni-cache", cni.CacheDir, "-n", "3", "--timeout", "300ms")
	if r.code != 2 || !strings.Contains(r.stderr, "leaves by its interface eth0, not by net1") || r.stdout != "" {
		t.Errorf("probe from net1's port %s: exit %d, stderr %q; want 2, the route leaves by eth0, not net1:\n%s", net1.HostVeth, r.code, r.stderr, r.stdout)
	}
	// From eth0's port the probe runs (and blames eth0's port's hairpin,
	// off as the bridge plugin leaves it).
	r = run(t, "--netns", l.Node, "probe", web.Attachments[0].HostVeth, l.ServiceName, "--cni-cache", cni.CacheDir, "-n", "3", "--timeout", "300ms")
	if r.code != 4 || !strings.Contains(r.stdout, "hairpin-off") {
		t.Errorf("probe from eth0's port %s: exit %d; want 4, hairpin-off:\n%s\n%s", web.Attachments[0].HostVeth, r.code, r.stdout, r.stderr)
	}
}

// stopProbe sends sig to a running probe and waits for it to exit, failing
// the test (and killing it) when it does not within 10 s.
func stopProbe(t *testing.T, cmd *exec.Cmd, sig syscall.Signal) {
	t.Helper()
	_ = cmd.Process.Signal(sig)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("%v: the probe did not stop within 10 s", sig)
	}
}
