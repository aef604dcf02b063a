package probe_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/doctor"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
	"github.com/hairpinctl/hairpinctl/netops/probe"
	"golang.org/x/sys/unix"
)

func open(t *testing.T, l *lab.Lab) *netops.Client {
	t.Helper()
	c, err := netops.Open(l.Node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// noProbeTable fails t when a probe table is left in the node.
func noProbeTable(t *testing.T, l *lab.Lab) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", l.Node, "nft", "list", "tables", "bridge").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	if strings.Contains(string(out), "hairpinctl-probe") {
		t.Errorf("probe table left behind:\n%s", out)
	}
}

func finding(r *probe.Report, id string) *probe.Finding {
	for i := range r.Findings {
		if r.Findings[i].ID == id {
			return &r.Findings[i]
		}
	}
	return nil
}

// The pod is the Service's only endpoint and its port has hairpin off:
// every connection is balanced to itself and the bridge drops it; the
// trace shows each drop; --fix turns hairpin on and then all succeed.
func TestProbeOnlyEndpointHairpinOff(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1}})
	c := open(t, l)
	self := l.Pod(1)
	o := probe.Options{Pod: self.HostVeth, Service: l.ServiceName, Count: 20, Timeout: 500 * time.Millisecond}
	res, err := probe.RunFix(context.Background(), c, o)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Before
	if r.Results[probe.ResultTimedOut] != 20 {
		t.Fatalf("hairpin off, only endpoint: results %v, want 20 timed out", r.Results)
	}
	f := finding(r, probe.FindingHairpinOff)
	if f == nil || f.Connections != 20 || !strings.Contains(f.Finding, self.HostVeth) {
		t.Fatalf("findings %+v: want hairpin-off naming %s for 20 connections", r.Findings, self.HostVeth)
	}
	if !r.Facts.Traced {
		t.Fatalf("bridge not traced: %s", r.Facts.TraceError)
	}
	for _, cn := range r.Connections {
		if cn.Bridge != probe.BridgeDropped || cn.Conntrack {
			t.Errorf("connection from port %d: bridge %q, conntrack %v; want dropped, no entry", cn.SrcPort, cn.Bridge, cn.Conntrack)
		}
	}
	if res.Applied == "" || res.After == nil {
		t.Fatalf("fix not applied: %+v", res)
	}
	a := res.After
	if a.Results[probe.ResultSucceeded] != 20 || !a.OK || len(a.Findings) != 0 {
		t.Fatalf("after the fix: results %v, findings %+v; want 20 succeeded", a.Results, a.Findings)
	}
	want := fmt.Sprintf("%s:%d", self.IP, 8080)
	for _, cn := range a.Connections {
		if cn.Endpoint != want || !cn.SNAT || cn.Bridge != probe.BridgeForwarded || cn.OutPort != self.HostVeth {
			t.Errorf("after the fix, port %d: endpoint %q snat %v bridge %q out %q; want %s, masqueraded, forwarded back out %s",
				cn.SrcPort, cn.Endpoint, cn.SNAT, cn.Bridge, cn.OutPort, want, self.HostVeth)
		}
	}
	noProbeTable(t, l)
}

// One of three endpoints with hairpin off: the connections balanced to the
// pod itself, and only those, are dropped by the bridge.
func TestProbeOneOfThreeHairpinOff(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 3, Endpoints: []int{1, 2, 3}})
	c := open(t, l)
	self := l.Pod(1)
	const n = 30
	r, err := probe.Run(context.Background(), c, probe.Options{Pod: self.IP.String(), Service: l.ServiceIP.String() + ":80", Count: n, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	failed := r.Results[probe.ResultTimedOut]
	if failed < 1 || failed > n-1 || r.Results[probe.ResultSucceeded] != n-failed {
		t.Fatalf("results %v: want between 1 and %d timed out, the rest succeeded", r.Results, n-1)
	}
	f := finding(r, probe.FindingHairpinOff)
	if f == nil || f.Connections != failed || !strings.Contains(f.Finding, self.HostVeth) || !strings.Contains(f.Finding, "1 of 3 endpoints") {
		t.Fatalf("findings %+v: want hairpin-off naming %s, 1 of 3 endpoints, for %d connections", r.Findings, self.HostVeth, failed)
	}
	others := map[string]bool{}
	for _, p := range []*lab.Pod{l.Pod(2), l.Pod(3)} {
		others[fmt.Sprintf("%s:8080", p.IP)] = true
	}
	for _, cn := range r.Connections {
		switch cn.Result {
		case probe.ResultSucceeded:
			if !others[cn.Endpoint] || cn.Bridge != probe.BridgeForwarded {
				t.Errorf("port %d succeeded to %q (bridge %q); want pod 2 or 3, forwarded", cn.SrcPort, cn.Endpoint, cn.Bridge)
			}
		case probe.ResultTimedOut:
			if cn.Bridge != probe.BridgeDropped {
				t.Errorf("port %d timed out, bridge %q; want dropped", cn.SrcPort, cn.Bridge)
			}
		}
	}
	t.Logf("%d of %d timed out", failed, n)
	noProbeTable(t, l)
}

// Hairpin on, but the masquerade rule deleted: the connections balanced
// to the pod itself reach it with its own address as source; conntrack
// shows them without source NAT.
func TestProbeNoMasquerade(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1}, Hairpin: true})
	labtest.DeleteMasquerade(t, l)
	c := open(t, l)
	self := l.Pod(1)
	r, err := probe.Run(context.Background(), c, probe.Options{Pod: self.HostVeth, Service: l.ServiceName, Count: 10, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Results[probe.ResultSucceeded] != 0 {
		t.Fatalf("results %v: want none to succeed", r.Results)
	}
	f := finding(r, probe.FindingNoSNAT)
	if f == nil || f.Connections != 10 {
		t.Fatalf("findings %+v: want no-snat for all 10", r.Findings)
	}
	if !strings.Contains(strings.Join(f.Evidence, "\n"), "no rule masquerades marked packets") {
		t.Errorf("no-snat evidence does not name the missing MASQUERADE rule: %q", f.Evidence)
	}
	for _, cn := range r.Connections {
		if !cn.Conntrack || !cn.Self || cn.SNAT {
			t.Errorf("port %d: conntrack %v self %v snat %v; want an entry to itself without SNAT", cn.SrcPort, cn.Conntrack, cn.Self, cn.SNAT)
		}
	}
	noProbeTable(t, l)
}

// The endpoint does not listen on the target port: refused, and the
// finding names the endpoint conntrack saw.
func TestProbeRefused(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Restore: "none", Hairpin: true})
	ep := l.Pod(1)
	const quiet = 9999 // nothing listens there
	if err := l.Restore("iptables-restore", lab.ServiceRules(l.ServiceName, l.ServiceIP.String(), l.ServicePort, []string{ep.IP.String()}, quiet)); err != nil {
		t.Fatal(err)
	}
	c := open(t, l)
	for _, from := range []*lab.Pod{l.Pod(2), ep} {
		r, err := probe.Run(context.Background(), c, probe.Options{Pod: from.HostVeth, Service: l.ServiceName, Count: 5, Timeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%s:%d", ep.IP, quiet)
		f := finding(r, probe.FindingRefused)
		if r.Results[probe.ResultRefused] != 5 || f == nil || f.Connections != 5 || !strings.Contains(f.Finding, want) {
			t.Errorf("from %s: results %v findings %+v; want 5 refused by %s", from.HostVeth, r.Results, r.Findings, want)
		}
	}
	noProbeTable(t, l)
}

// A probe stopped half-way (its context cancelled, as a signal does)
// removes its bridge table and closes its sockets.
func TestProbeCancelledLeavesNothing(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1}})
	c := open(t, l)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := probe.Run(ctx, c, probe.Options{Pod: l.Pod(1).HostVeth, Service: l.ServiceName, Count: 5, Timeout: time.Minute})
		errc <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		out, _ := exec.Command("ip", "netns", "exec", l.Node, "nft", "list", "tables", "bridge").CombinedOutput()
		if strings.Contains(string(out), "hairpinctl-probe") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the probe's bridge table never appeared")
		}
	}
	cancel()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("a cancelled probe returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the probe did not stop within 10 s of its cancel")
	}
	noProbeTable(t, l)
	out, err := exec.Command("ip", "netns", "exec", l.Pod(1).Name, "ss", "-Htan").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	if strings.Contains(string(out), "SYN-SENT") {
		t.Errorf("sockets left in the pod:\n%s", out)
	}
}

// A drop that nothing hairpinctl reads explains (a firewall rule in the
// node's FORWARD chain, as a NetworkPolicy agent would write) is said to
// be unexplained, never put on the hairpin or the masquerade.
func TestProbeUnexplainedDrop(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1}, Hairpin: true})
	from := l.Pod(2)
	if out, err := l.Exec("", "iptables", "-I", "FORWARD", "-s", from.IP.String(), "-j", "DROP"); err != nil {
		t.Fatalf("iptables -I FORWARD: %v: %s", err, out)
	}
	c := open(t, l)
	r, err := probe.Run(context.Background(), c, probe.Options{Pod: from.HostVeth, Service: l.ServiceName, Count: 5, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Results[probe.ResultTimedOut] != 5 || len(r.Findings) != 1 || r.Findings[0].ID != probe.FindingUnexplained || r.Findings[0].Connections != 5 {
		t.Fatalf("results %v, findings %+v; want 5 timed out, one unexplained finding", r.Results, r.Findings)
	}
	// iptables' FORWARD runs in the bridge's forward hook: the frames
	// reached it, and the evidence says only that.
	for _, cn := range r.Connections {
		if cn.Bridge != probe.BridgeForwarded {
			t.Errorf("port %d: bridge %q; want forwarded (reached the forward hook)", cn.SrcPort, cn.Bridge)
		}
	}
	if ev := strings.Join(r.Findings[0].Evidence, "\n"); !strings.Contains(ev, "reached the bridge's forward hook") {
		t.Errorf("evidence %q does not say the frames reached the forward hook", ev)
	}
	noProbeTable(t, l)
}

// A table left by a probe that was killed (SIGKILL: no chance to remove
// it) is removed by the next probe: its process is gone. A table of a
// probe in another PID namespace is left alone: its PID means nothing in
// this one.
func TestProbeRemovesStaleTable(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1}, Hairpin: true})
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		t.Fatal(err)
	}
	ns = strings.TrimSuffix(strings.TrimPrefix(ns, "pid:["), "]")
	// Above any pid_max (at most 2^22): no such process can exist.
	stale := "hairpinctl-probe-" + ns + "-9999999"
	other := "hairpinctl-probe-1-9999999"
	for _, name := range []string{stale, other} {
		if out, err := l.Exec("", "nft", "add", "table", "bridge", name); err != nil {
			t.Fatalf("nft add table: %v: %s", err, out)
		}
	}
	c := open(t, l)
	if _, err := probe.Run(context.Background(), c, probe.Options{Pod: l.Pod(2).HostVeth, Service: l.ServiceName, Count: 2}); err != nil {
		t.Fatal(err)
	}
	out, err := l.Exec("", "nft", "list", "tables", "bridge")
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	if strings.Contains(out, stale) || !strings.Contains(out, other) {
		t.Fatalf("bridge tables after the probe:\n%s\nwant %s removed and %s kept", out, stale, other)
	}
	if out, err := l.Exec("", "nft", "delete", "table", "bridge", other); err != nil {
		t.Fatalf("nft delete table: %v: %s", err, out)
	}
	noProbeTable(t, l)
}

// With a timeout above a second the kernel resends a SYN the bridge
// dropped, and kube-proxy balances the resend anew, often to another
// endpoint: the connection succeeds slowly. Such a connection is a
// failure put on the hairpin, and the trace says its first SYN was
// dropped, not that "forwarded" won.
func TestProbeRetransmittedSynIsAFailure(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 3, Endpoints: []int{1, 2, 3}})
	c := open(t, l)
	self := l.Pod(1)
	const n = 30
	r, err := probe.Run(context.Background(), c, probe.Options{Pod: self.HostVeth, Service: l.ServiceName, Count: n, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Facts.Traced {
		t.Fatalf("bridge not traced: %s", r.Facts.TraceError)
	}
	toSelf, retrans := 0, 0
	for _, cn := range r.Connections {
		if cn.Result == probe.ResultRetransmitted {
			retrans++
			if cn.SynRetransmits < 1 {
				t.Errorf("port %d: retransmitted with %d SYN retransmissions", cn.SrcPort, cn.SynRetransmits)
			}
		}
		if !cn.BalancedToSelf {
			continue
		}
		// Hairpin is off: a SYN balanced to the pod itself is always
		// dropped, so no such connection may count as a success.
		toSelf++
		if cn.Result == probe.ResultSucceeded || cn.Bridge != probe.BridgeDropped {
			t.Errorf("port %d was balanced to the pod itself with hairpin off, yet result %q bridge %q; want a failure, dropped", cn.SrcPort, cn.Result, cn.Bridge)
		}
	}
	if toSelf == 0 {
		t.Fatalf("no connection of %d was balanced to the pod itself (1 of 3 endpoints): results %v", n, r.Results)
	}
	if r.OK {
		t.Fatalf("%d of %d balanced to the pod itself with hairpin off, yet OK: results %v", toSelf, n, r.Results)
	}
	f := finding(r, probe.FindingHairpinOff)
	if f == nil || f.Connections != toSelf {
		t.Fatalf("findings %+v: want hairpin-off for the %d connections balanced to the pod itself", r.Findings, toSelf)
	}
	t.Logf("results %v: %d balanced to itself, %d connected after a SYN retransmission", r.Results, toSelf, retrans)
	noProbeTable(t, l)
}

// A firewall rule in the IP prerouting hooks (which br_netfilter runs
// inside the bridge) drops the SYNs balanced to the pod itself, with
// hairpin off too: the frames never come out of prerouting, so the
// hairpin is not blamed and --fix has nothing to fix.
func TestProbePreroutingDropNotHairpin(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1}})
	self := l.Pod(1)
	for _, cmd := range [][]string{
		{"nft", "add", "table", "ip", "p"},
		{"nft", "add", "chain", "ip", "p", "pre", "{ type filter hook prerouting priority -50; }"},
		{"nft", "add", "rule", "ip", "p", "pre", "ip", "daddr", self.IP.String(), "tcp", "dport", "8080", "drop"},
	} {
		if out, err := l.Exec("", cmd[0], cmd[1:]...); err != nil {
			t.Fatalf("%s: %v: %s", cmd, err, out)
		}
	}
	t.Cleanup(func() { _, _ = l.Exec("", "nft", "delete", "table", "ip", "p") })
	c := open(t, l)
	res, err := probe.RunFix(context.Background(), c, probe.Options{Pod: self.HostVeth, Service: l.ServiceName, Count: 10, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := res.Before
	if r.Results[probe.ResultTimedOut] != 10 {
		t.Fatalf("results %v: want 10 timed out", r.Results)
	}
	if len(r.Findings) != 1 || r.Findings[0].ID != probe.FindingUnexplained || r.Findings[0].Connections != 10 {
		t.Fatalf("findings %+v: want one unexplained finding for 10", r.Findings)
	}
	for _, cn := range r.Connections {
		if cn.Bridge != probe.BridgeDroppedEarly || cn.BalancedToSelf {
			t.Errorf("port %d: bridge %q balancedToSelf %v; want dropped-prerouting, never balanced", cn.SrcPort, cn.Bridge, cn.BalancedToSelf)
		}
	}
	if res.Applied != "" {
		t.Errorf("--fix applied %q for a drop that is not the hairpin", res.Applied)
	}
	noProbeTable(t, l)
}

// Probes one after the other reuse source ports: a new SYN with the
// 4-tuple of a leftover conntrack entry would inherit its endpoint. Here
// the pod's ephemeral range is 100 ports and 50 of them hold entries to
// the Service balanced to an address where nothing answers: a probe that
// used one would time out. Three probes in a row use none of them, take
// no earlier entry for their own, and all succeed.
func TestProbeBackToBack(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 3, Endpoints: []int{1, 2, 3}, Hairpin: true})
	self := l.Pod(1)
	const lo, hi = 40000, 40099
	if out, err := lab.Exec(self.Ns, "", "sysctl", "-qw", fmt.Sprintf("net.ipv4.ip_local_port_range=%d %d", lo, hi)); err != nil {
		t.Fatalf("sysctl: %v: %s", err, out)
	}
	leftover := map[uint16]bool{}
	// bind() picks odd ports first (even ones are left for connect()).
	for p := lo + 1; p <= hi; p += 2 {
		leftover[uint16(p)] = true
		out, err := l.Exec("", "conntrack", "-I", "-p", "tcp", "-s", self.IP.String(), "-d", l.ServiceIP.String(),
			"--sport", fmt.Sprint(p), "--dport", fmt.Sprint(l.ServicePort), "-r", "10.244.0.250", "-q", self.IP.String(),
			"--reply-port-src", "8080", "--reply-port-dst", fmt.Sprint(p), "--state", "FIN_WAIT", "-t", "120", "-u", "SEEN_REPLY,ASSURED")
		if err != nil {
			t.Fatalf("conntrack -I: %v: %s", err, out)
		}
	}
	c := open(t, l)
	for i := range 3 {
		r, err := probe.Run(context.Background(), c, probe.Options{Pod: self.HostVeth, Service: l.ServiceName, Count: 10, Timeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatalf("probe %d: %v", i+1, err)
		}
		if !r.OK || len(r.Findings) != 0 {
			t.Errorf("probe %d: results %v, findings %+v; want every connection to succeed", i+1, r.Results, r.Findings)
		}
		for _, cn := range r.Connections {
			if cn.SrcPort < lo || cn.SrcPort > hi || leftover[cn.SrcPort] || !cn.Conntrack || strings.HasPrefix(cn.Endpoint, "10.244.0.250") {
				t.Errorf("probe %d: port %d conntrack %v endpoint %q; want a free port of the pod's range with an entry of its own", i+1, cn.SrcPort, cn.Conntrack, cn.Endpoint)
			}
		}
	}
	noProbeTable(t, l)
}

// A pod whose network namespace no file names any more (its sandbox gone,
// the namespace kept alive by a handle) cannot be entered: a runtime
// error that says what to check, not a bad-input one.
func TestProbeNetnsGone(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1}, Hairpin: true})
	from := l.Pod(2)
	// The lab's open handle keeps the namespace, and its veth, alive.
	path := "/run/netns/" + from.Name
	if out, err := exec.Command("umount", path).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	// Mounted again for the lab's cleanup, which deletes it by name.
	t.Cleanup(func() {
		if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", int(from.Ns)), path, "", unix.MS_BIND, ""); err != nil {
			t.Errorf("mount %s again: %v", path, err)
		}
	})
	c := open(t, l)
	_, err := probe.Run(context.Background(), c, probe.Options{Pod: from.HostVeth, Service: l.ServiceName, Count: 2})
	if err == nil || errors.Is(err, netops.ErrNotFound) || errors.Is(err, netops.ErrInvalid) || !strings.Contains(err.Error(), "is the pod's sandbox running?") {
		t.Fatalf("probe from a pod whose namespace has no file: %v; want a runtime error asking whether the sandbox runs", err)
	}
}

// doctor --probe: an endpoint address two pods' ports claim is probed from
// neither, and said so; a stop (ctx cancelled) skips the probes as
// interrupted, not as a spent budget; a budget shorter than one probe
// skips them all as spent. The checks' ID is the stable
// probe:NS/NAME:PORT, the pod in their pods.
func TestDoctorProbe(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 3, Endpoints: []int{1, 2}, Hairpin: true})
	// Pod 3 claims pod 1's address too.
	if out, err := lab.Exec(l.Pod(3).Ns, "", "ip", "addr", "add", l.Pod(1).IP.String()+"/32", "dev", "eth0"); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	c := open(t, l)
	pairs, err := probe.PlanDoctor(c, probe.DoctorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checks := probe.Doctor(context.Background(), c, pairs, probe.DoctorOptions{Timeout: 300 * time.Millisecond})
	var pass, ambiguous int
	for _, ch := range checks {
		if ch.ID != "probe:"+l.ServiceName {
			t.Errorf("check ID %q, want probe:%s", ch.ID, l.ServiceName)
		}
		switch {
		case ch.Status == doctor.StatusPass && len(ch.Pods) == 1 && ch.Pods[0].Port == l.Pod(2).HostVeth:
			pass++
		case ch.Status == doctor.StatusWarn && strings.Contains(ch.Finding, l.Pod(1).IP.String()) &&
			strings.Contains(ch.Finding, l.Pod(1).HostVeth) && strings.Contains(ch.Finding, l.Pod(3).HostVeth) && strings.Contains(ch.Finding, "probed from neither"):
			ambiguous++
		default:
			t.Errorf("check %s %s %q pods %+v: want PASS from %s, or WARN: %s claimed by %s and %s", ch.ID, ch.Status, ch.Finding, ch.Pods, l.Pod(2).HostVeth, l.Pod(1).IP, l.Pod(1).HostVeth, l.Pod(3).HostVeth)
		}
	}
	if pass != 1 || ambiguous != 1 {
		t.Fatalf("%d PASS from pod 2 and %d ambiguous, want 1 and 1: %+v", pass, ambiguous, checks)
	}

	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	for _, ch := range probe.Doctor(stopped, c, pairs, probe.DoctorOptions{}) {
		if ch.Status != doctor.StatusSkip || !strings.Contains(ch.Finding, "interrupted") || strings.Contains(ch.Finding, "budget") {
			t.Errorf("stopped: %s %q; want SKIP, interrupted", ch.Status, ch.Finding)
		}
	}
	for _, ch := range probe.Doctor(context.Background(), c, pairs, probe.DoctorOptions{Timeout: time.Second, Budget: time.Second}) {
		if ch.Status != doctor.StatusSkip || !strings.Contains(ch.Finding, "budget of 1s was spent") {
			t.Errorf("budget of 1s for probes of 1s: %s %q; want SKIP, the budget spent", ch.Status, ch.Finding)
		}
	}
	noProbeTable(t, l)
}
