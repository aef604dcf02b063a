package kube_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/test/kube/kubelab"
)

// probeReport is what the probe tests read of probe -o json.
type probeReport struct {
	Pod *struct {
		Namespace, Name string
	}
	Client struct {
		IP, Interface string
		Hairpin       bool
	}
	Results  map[string]int
	OK       bool
	Findings []struct {
		ID, Finding string
		Evidence    []string
		Connections int
	}
	Connections []struct {
		Result, Endpoint, Bridge string
		Conntrack, Self, SNAT    bool
	}
}

func probeJSON(t *testing.T, l *kubelab.Lab, args ...string) (probeReport, result) {
	t.Helper()
	r := run(t, append([]string{"--netns", l.Node, "probe", "--cni-cache", l.CNI.CacheDir, "--timeout", "500ms", "-o", "json"}, args...)...)
	var rep probeReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("probe %v: exit %d, %v:\n%s\n%s", args, r.code, err, r.stdout, r.stderr)
	}
	return rep, r
}

func setHairpin(t *testing.T, l *kubelab.Lab, port, state string) {
	t.Helper()
	if out, err := exec.Command("ip", "-n", l.Node, "link", "set", "dev", port, "type", "bridge_slave", "hairpin", state).CombinedOutput(); err != nil {
		t.Fatalf("hairpin %s on %s: %v: %s", state, port, err, out)
	}
}

// onlyFinding checks that rep failed with one finding of kind id that
// explains every failed connection and mentions each of has.
func onlyFinding(t *testing.T, what string, rep probeReport, id string, has ...string) {
	t.Helper()
	failed := len(rep.Connections) - rep.Results["succeeded"]
	if len(rep.Findings) != 1 || rep.Findings[0].ID != id || rep.Findings[0].Connections != failed {
		t.Errorf("%s: findings %+v; want one %s explaining the %d failed", what, rep.Findings, id, failed)
		return
	}
	text := rep.Findings[0].Finding + "\n" + strings.Join(rep.Findings[0].Evidence, "\n")
	for _, s := range has {
		if !strings.Contains(text, s) {
			t.Errorf("%s: finding lacks %q:\n%s", what, s, text)
		}
	}
}

func probeTables(t *testing.T, l *kubelab.Lab) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", l.Node, "nft", "list", "tables", "bridge").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables bridge: %v: %s", err, out)
	}
	var found []string
	for _, ln := range strings.Split(string(out), "\n") {
		if strings.Contains(ln, "hairpinctl-probe") {
			found = append(found, ln)
		}
	}
	return strings.Join(found, "\n")
}

// probeLive runs probe against the real kube-proxy's rules, on pods the
// CNI plugin made, after live (every port's hairpin on, watch stopped):
// the hairpin and masquerade states are set by the test and the expected
// results follow from them and the catalogue's endpoints.
func probeLive(t *testing.T, l *kubelab.Lab, mode string) {
	pod1, pod2, pod3 := l.Pods[0], l.Pods[1], l.Pods[2]
	pod := func(p *kubelab.Pod) string { return "pod/" + p.Namespace + "/" + p.Name }
	for _, p := range []*kubelab.Pod{pod1, pod3} {
		setHairpin(t, l, p.HostVeth, "off")
	}

	// solo's only endpoint is pod-3: every connection balanced to itself.
	rep, r := probeJSON(t, l, pod(pod3), "default/solo")
	if r.code != 4 || rep.Results["timed-out"] != 20 || rep.Client.Interface != pod3.HostVeth {
		t.Errorf("pod-3 → solo, hairpin off: exit %d, results %v, port %s; want 4, 20 timed out, %s", r.code, rep.Results, rep.Client.Interface, pod3.HostVeth)
	}
	onlyFinding(t, "pod-3 → solo", rep, "hairpin-off", pod3.HostVeth, "the only endpoint", "bridge trace: 20 ")

	// trio has pods 1, 2 and 3: about a third balanced to pod-1 itself.
	rep, r = probeJSON(t, l, pod(pod1), "default/trio:http")
	failed := rep.Results["timed-out"]
	if r.code != 4 || failed < 1 || failed > 19 || rep.Results["succeeded"] != 20-failed {
		t.Errorf("pod-1 → trio, hairpin off: exit %d, results %v; want 4, 1 to 19 timed out, the rest succeeded", r.code, rep.Results)
	}
	onlyFinding(t, "pod-1 → trio", rep, "hairpin-off", pod1.HostVeth, "1 of 3 endpoints")
	for _, c := range rep.Connections {
		if c.Result == "succeeded" && c.Endpoint != fmt.Sprintf("%s:%d", pod2.IP, kubelab.ServePort) && c.Endpoint != fmt.Sprintf("%s:%d", pod3.IP, kubelab.ServePort) {
			t.Errorf("pod-1 → trio: a connection succeeded to %q, want pod-2 or pod-3", c.Endpoint)
		}
	}
	t.Logf("%s: pod-1 → trio with hairpin off: %d of 20 timed out", mode, failed)

	// doctor --probe on trio: pods 1 and 3 (hairpin off) fail, pod-2
	// (hairpin on) passes.
	r = run(t, "--netns", l.Node, "doctor", "--probe", "-o", "json", "default/trio:http")
	var drep struct {
		Checks []struct {
			ID, Status, Finding string
			Pods                []struct{ Port string }
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &drep); err != nil || r.code != 4 || !strings.Contains(r.stderr, "3 probes") {
		t.Fatalf("doctor --probe trio: exit %d, %v, stderr %q; want 4 and 3 probes said up front:\n%s", r.code, err, r.stderr, r.stdout)
	}
	want := map[string]string{pod1.HostVeth: "FAIL", pod2.HostVeth: "PASS", pod3.HostVeth: "FAIL"}
	seen := 0
	for _, c := range drep.Checks {
		if !strings.HasPrefix(c.ID, "probe:") {
			continue
		}
		// A stable ID; the pod probed from is in pods.
		if c.ID != "probe:default/trio:http" || len(c.Pods) != 1 {
			t.Errorf("doctor --probe: check %q with pods %+v; want ID probe:default/trio:http and one pod", c.ID, c.Pods)
			continue
		}
		for port, st := range want {
			if c.Pods[0].Port != port {
				continue
			}
			seen++
			if c.Status != st {
				t.Errorf("doctor --probe: %s is %s (%s), want %s", c.ID, c.Status, c.Finding, st)
			}
		}
	}
	if seen != 3 {
		t.Errorf("doctor --probe trio: %d probe checks name pods 1, 2 and 3's ports, want 3:\n%s", seen, r.stdout)
	}

	// UDP: dns:dns (pods 5 and 6, hairpin on) answers every datagram.
	rep, r = probeJSON(t, l, pod(l.Pods[4]), "default/dns:dns")
	if r.code != 0 || rep.Results["succeeded"] != 20 {
		t.Errorf("pod-5 → dns (UDP), hairpin on: exit %d, results %v; want 20 answered", r.code, rep.Results)
	}

	// empty has no endpoints: kube-proxy rejects every connection (with
	// ICMP errors, which the kernel rate-limits: some go unanswered).
	rep, r = probeJSON(t, l, pod(pod2), "default/empty:http")
	if r.code != 4 || rep.Results["succeeded"] != 0 || rep.Results["refused"] < 1 {
		t.Errorf("pod-2 → empty: exit %d, results %v; want 4, none succeeded, some refused", r.code, rep.Results)
	}
	onlyFinding(t, "pod-2 → empty", rep, "no-endpoints", "has no endpoints")

	// IPv6: pod-2 (hairpin on) through dual's IPv6 ClusterIP, which
	// balances to pods 1 and 2; the trace sees every frame forwarded.
	tr, err := kubelab.ComputeTruth(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	v6 := ""
	for _, s := range tr.Services {
		if s.Namespace == "default" && s.Name == "dual" && s.Family == "ipv6" {
			v6 = net.JoinHostPort(s.ClusterIP, fmt.Sprint(s.Port))
		}
	}
	if v6 == "" {
		t.Fatal("no IPv6 Service port of default/dual")
	}
	rep, r = probeJSON(t, l, pod(pod2), v6)
	if r.code != 0 || rep.Results["succeeded"] != 20 || rep.Client.IP != pod2.IP6.String() {
		t.Errorf("pod-2 → dual over IPv6 (%s): exit %d, results %v, from %s; want 20 succeeded from %s:\n%s", v6, r.code, rep.Results, rep.Client.IP, pod2.IP6, r.stderr)
	}
	for _, c := range rep.Connections {
		if !c.Conntrack || c.Bridge != "forwarded" {
			t.Errorf("pod-2 → dual over IPv6: conntrack %v, bridge %q; want an entry, forwarded", c.Conntrack, c.Bridge)
			break
		}
	}

	// --fix turns pod-3's hairpin on; then every connection succeeds.
	r = run(t, "--netns", l.Node, "probe", "--cni-cache", l.CNI.CacheDir, "--timeout", "500ms", "-o", "json", "--fix", pod(pod3), "default/solo")
	var fix struct {
		Before, After *probeReport
		Applied       string
	}
	if err := json.Unmarshal([]byte(r.stdout), &fix); err != nil || r.code != 0 {
		t.Fatalf("probe --fix: exit %d, %v:\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	if fix.Before.Results["timed-out"] != 20 || fix.After == nil || fix.After.Results["succeeded"] != 20 {
		t.Errorf("probe --fix: before %v, after %+v; want 20 timed out, then 20 succeeded", fix.Before.Results, fix.After)
	}
	if !hairpinOn(t, l, pod3.HostVeth) {
		t.Errorf("probe --fix left %s with hairpin off", pod3.HostVeth)
	}

	// pod-3 stops listening: refused, by pod-3 itself as conntrack saw.
	pod3.StopServing()
	rep, r = probeJSON(t, l, pod(pod3), "default/solo")
	if r.code != 4 || rep.Results["refused"] != 20 {
		t.Errorf("pod-3 not listening: exit %d, results %v; want 4, 20 refused", r.code, rep.Results)
	}
	onlyFinding(t, "pod-3 not listening", rep, "refused", fmt.Sprintf("%s:%d", pod3.IP, kubelab.ServePort))

	// Masquerade removed by hand, kube-proxy stopped so that no sync puts
	// it back: pod-1's connections to itself through web (pods 1 and 2)
	// arrive unmasqueraded.
	setHairpin(t, l, pod1.HostVeth, "on")
	l.StopProxy()
	removeMasquerade(t, l, mode)
	rep, r = probeJSON(t, l, pod(pod1), "default/web:http")
	failed = len(rep.Connections) - rep.Results["succeeded"]
	if r.code != 4 || failed < 1 || failed > 19 {
		t.Errorf("masquerade removed: exit %d, results %v; want 4, 1 to 19 failed", r.code, rep.Results)
	}
	onlyFinding(t, "masquerade removed", rep, "no-snat", "NO-SNAT")
	for _, c := range rep.Connections {
		if c.Result != "succeeded" && (!c.Conntrack || !c.Self || c.SNAT) {
			t.Errorf("masquerade removed: a failed connection: conntrack %v self %v snat %v; want an entry to pod-1 itself without SNAT", c.Conntrack, c.Self, c.SNAT)
		}
	}

	// SIGINT while the self-connections hang: nothing left behind.
	cmd := exec.Command(hairpinctl, "--netns", l.Node, "probe", "--cni-cache", l.CNI.CacheDir, "--timeout", "1m", pod(pod1), "default/web:http")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); probeTables(t, l) == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatal("the probe's bridge table never appeared")
		}
	}
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the probe did not stop within 10 s of SIGINT")
	}
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(stderr.String(), "interrupted by SIGINT") {
		t.Errorf("probe on SIGINT: exit %d, stderr %q; want 1, interrupted by SIGINT", code, stderr.String())
	}
	if s := probeTables(t, l); s != "" {
		t.Errorf("probe table left after SIGINT:\n%s", s)
	}
	out, err := exec.Command("ip", "netns", "exec", pod1.Netns, "ss", "-Htan", "state", "syn-sent").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("sockets left in pod-1 after SIGINT (%v):\n%s", err, out)
	}
}

var nftHandle = regexp.MustCompile(`# handle (\d+)$`)

// removeMasquerade deletes kube-proxy's masquerade rules as they are
// loaded: iptables mode's MASQUERADE in KUBE-POSTROUTING, nftables mode's
// masquerade rules of the masquerading chain.
func removeMasquerade(t *testing.T, l *kubelab.Lab, mode string) {
	t.Helper()
	deleted := 0
	if mode == kubelab.NFTables {
		out, err := exec.Command("ip", "netns", "exec", l.Node, "nft", "-a", "list", "chain", "ip", "kube-proxy", "masquerading").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list chain masquerading: %v: %s", err, out)
		}
		for _, ln := range strings.Split(string(out), "\n") {
			m := nftHandle.FindStringSubmatch(strings.TrimSpace(ln))
			if m == nil || !strings.Contains(ln, " masquerade") {
				continue
			}
			if out, err := exec.Command("ip", "netns", "exec", l.Node, "nft", "delete", "rule", "ip", "kube-proxy", "masquerading", "handle", m[1]).CombinedOutput(); err != nil {
				t.Fatalf("delete %s: %v: %s", ln, err, out)
			}
			deleted++
		}
	} else {
		out, err := exec.Command("ip", "netns", "exec", l.Node, l.Tool("iptables-save"), "-t", "nat").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables-save: %v: %s", err, out)
		}
		for _, ln := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(ln, "-A KUBE-POSTROUTING ") || !strings.Contains(ln, "-j MASQUERADE") {
				continue
			}
			del := l.Tool("iptables") + " -t nat -D" + strings.TrimPrefix(ln, "-A")
			if out, err := exec.Command("ip", "netns", "exec", l.Node, "sh", "-c", del).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", del, err, out)
			}
			deleted++
		}
	}
	if deleted == 0 {
		t.Fatalf("%s: no masquerade rule found to delete", mode)
	}
}
