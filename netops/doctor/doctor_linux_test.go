package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/clienttest"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
)

// runDoctor runs Doctor on the lab's node and indexes the checks by ID.
func runDoctor(t *testing.T, c *netops.Client, o Options) map[string]Check {
	t.Helper()
	if o.CNIConfDir == "" {
		o.CNIConfDir = t.TempDir() // an empty directory: no CNI finding
	}
	rep, err := Run(c, o)
	if err != nil {
		t.Fatalf("Doctor: %v", err)
	}
	m := map[string]Check{}
	for _, ch := range rep.Checks {
		if _, dup := m[ch.ID]; dup {
			t.Fatalf("check %s twice", ch.ID)
		}
		m[ch.ID] = ch
	}
	return m
}

// wantCheck fails unless check id has status and its finding and fix
// contain the given texts.
func wantCheck(t *testing.T, checks map[string]Check, id string, status CheckStatus, finding, fix string) Check {
	t.Helper()
	ch, ok := checks[id]
	if !ok {
		ids := make([]string, 0, len(checks))
		for k := range checks {
			ids = append(ids, k)
		}
		t.Fatalf("no check %s among %v", id, ids)
	}
	if ch.Status != status || !strings.Contains(ch.Finding, finding) || !strings.Contains(ch.Fix, fix) {
		t.Errorf("%s = %s %q (fix %q)\nwant %s, finding containing %q, fix containing %q\ndetails %q",
			id, ch.Status, ch.Finding, ch.Fix, status, finding, fix, ch.Details)
	}
	if status == StatusPass && ch.Fix != "" {
		t.Errorf("%s passes but suggests a fix: %q", id, ch.Fix)
	}
	return ch
}

// runFix runs the command part of a fix (before " (" remarks) in a shell
// on the host, the way an admin would paste it.
func runFix(t *testing.T, fix string) {
	t.Helper()
	cmd, _, _ := strings.Cut(fix, " (")
	if out, err := exec.Command("sh", "-c", cmd).CombinedOutput(); err != nil {
		t.Fatalf("fix %q: %v\n%s", cmd, err, out)
	}
}

func setHairpin(t *testing.T, l *lab.Lab, port string, on bool) {
	t.Helper()
	lk, err := l.Handle().LinkByName(port)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Handle().LinkSetHairpin(lk, on); err != nil {
		t.Fatal(err)
	}
}

// Check 1 and check 6 both ways: hairpin off on the endpoints' ports is a
// FAIL naming them, and the Service check finds the endpoint's port; with
// hairpin on both pass, and the endpoint really reaches itself.
func TestDoctorLabHairpinAndService(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 3, Endpoints: []int{1, 2}, Restore: "iptables-nft-restore"})
	c := clienttest.Open(t, l)
	o := Options{Services: []string{l.ServiceIP.String()}}

	checks := runDoctor(t, c, o)
	wantCheck(t, checks, CheckBridgeHairpin, StatusFail, "3 of 3 pod ports of cni0 have hairpin off: veth1, veth2, veth3", "hairpinctl enable --bridge cni0 --netns "+l.Node)
	svc := wantCheck(t, checks, "service:default/web:http", StatusFail,
		"default/web:http 10.96.0.10:80 → endpoint 10.244.0.11:8080 sits behind veth1 on cni0 with hairpin off: it cannot reach itself through this Service (1 in 2 of its connections will hang)",
		"hairpinctl enable veth1 veth2 --netns "+l.Node)
	if !strings.Contains(strings.Join(svc.Details, "\n"), "10.244.0.12:8080 sits behind veth2 on cni0 with hairpin off") {
		t.Errorf("the second endpoint's finding is not in the details: %q", svc.Details)
	}
	wantCheck(t, checks, CheckKubeProxy, StatusPass, "iptables-nft", "")
	wantCheck(t, checks, CheckMasquerade, StatusPass, "KUBE-MARK-MASQ marks with 0x4000", "")

	// Repair what the fix names (the end-to-end test runs the fix itself).
	enable, _, _ := strings.Cut(strings.TrimPrefix(svc.Fix, "hairpinctl enable "), " --netns")
	for _, p := range strings.Fields(enable) {
		setHairpin(t, l, p, true)
	}
	checks = runDoctor(t, c, o)
	wantCheck(t, checks, "service:default/web:http", StatusPass, "all 2 endpoints have their hairpin masquerade rule", "")
	// veth3 is no endpoint, but still a pod port with hairpin off.
	wantCheck(t, checks, CheckBridgeHairpin, StatusFail, "1 of 3 pod ports of cni0 have hairpin off: veth3", "")
	setHairpin(t, l, "veth3", true)
	checks = runDoctor(t, c, o)
	wantCheck(t, checks, CheckBridgeHairpin, StatusPass, "every pod port of cni0 reflects hairpin traffic (3 pod ports)", "")
	if got, err := l.ConnectService(l.Pod(1), 3*time.Second); err != nil {
		t.Errorf("doctor passes but pod 1 cannot reach its Service: %q, %v", got, err)
	}

	// Selected by name, and the aggregate over every Service.
	checks = runDoctor(t, c, Options{Services: []string{"default/web"}})
	wantCheck(t, checks, "service:default/web:http", StatusPass, "", "")
	checks = runDoctor(t, c, Options{})
	wantCheck(t, checks, CheckServices, StatusPass, "1 service port, 2 endpoints", "")
	setHairpin(t, l, "veth2", false)
	checks = runDoctor(t, c, Options{})
	wantCheck(t, checks, CheckServices, StatusFail, "endpoint 10.244.0.12:8080 sits behind veth2 on cni0 with hairpin off", "hairpinctl enable veth2")

	// A Service that kube-proxy does not know.
	checks = runDoctor(t, c, Options{Services: []string{"10.96.0.99"}})
	wantCheck(t, checks, "service:10.96.0.99", StatusWarn, "no Service 10.96.0.99", "")
}

// Check 2 and 3 both ways, repaired by running the fix doctor printed.
func TestDoctorLabSysctls(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none", Hairpin: true})
	c := clienttest.Open(t, l)
	checks := runDoctor(t, c, Options{})
	wantCheck(t, checks, CheckBrNetfilter, StatusPass, "net.bridge.bridge-nf-call-iptables = 1", "")
	wantCheck(t, checks, CheckIPForward, StatusPass, "net.ipv4.ip_forward = 1", "")

	for _, kv := range []string{"net.bridge.bridge-nf-call-iptables=0", "net.ipv4.ip_forward=0"} {
		if out, err := l.Exec("", "sysctl", "-w", kv); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	checks = runDoctor(t, c, Options{})
	br := wantCheck(t, checks, CheckBrNetfilter, StatusFail, "net.bridge.bridge-nf-call-iptables = 0", "ip netns exec "+l.Node+" sysctl -w net.bridge.bridge-nf-call-iptables=1")
	fw := wantCheck(t, checks, CheckIPForward, StatusFail, "net.ipv4.ip_forward = 0", "ip netns exec "+l.Node+" sysctl -w net.ipv4.ip_forward=1")
	// The host's own values are not what doctor read.
	runFix(t, br.Fix)
	runFix(t, fw.Fix)
	checks = runDoctor(t, c, Options{})
	wantCheck(t, checks, CheckBrNetfilter, StatusPass, "= 1", "")
	wantCheck(t, checks, CheckIPForward, StatusPass, "= 1", "")
}

// Check 4 both ways: rules in both iptables backends is a split brain;
// flushing the legacy copy repairs it; no rules at all is a WARN and the
// Service checks skip.
func TestDoctorLabBackends(t *testing.T) {
	if _, err := exec.LookPath("iptables-legacy-restore"); err != nil {
		t.Skip("iptables-legacy-restore not installed")
	}
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "iptables-nft-restore", Hairpin: true})
	c := clienttest.Open(t, l)
	wantCheck(t, runDoctor(t, c, Options{}), CheckKubeProxy, StatusPass, "kube-proxy's rules are in iptables-nft (1 service port)", "")

	if err := l.Restore("iptables-legacy-restore", l.Rules); err != nil {
		t.Fatal(err)
	}
	checks := runDoctor(t, c, Options{})
	wantCheck(t, checks, CheckKubeProxy, StatusWarn, "kube-proxy rules in iptables-nft and iptables-legacy (split brain)", "delete the KUBE-* chains of the other")
	// The split brain does not stop the other checks.
	wantCheck(t, checks, CheckServices, StatusPass, "", "")

	for _, args := range [][]string{{"-t", "nat", "-F"}, {"-t", "nat", "-X"}} {
		if out, err := l.Exec("", "iptables-legacy", args...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	wantCheck(t, runDoctor(t, c, Options{}), CheckKubeProxy, StatusPass, "iptables-nft", "")

	// Legacy only.
	if out, err := l.Exec("", "iptables-nft", "-t", "nat", "-F"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := l.Exec("", "iptables-nft", "-t", "nat", "-X"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := l.Restore("iptables-legacy-restore", l.Rules); err != nil {
		t.Fatal(err)
	}
	wantCheck(t, runDoctor(t, c, Options{}), CheckKubeProxy, StatusPass, "kube-proxy's rules are in iptables-legacy", "")
}

func TestDoctorLabNoKubeProxy(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none", Hairpin: true})
	c := clienttest.Open(t, l)
	checks := runDoctor(t, c, Options{Services: []string{"10.96.0.10"}})
	wantCheck(t, checks, CheckKubeProxy, StatusWarn, "no kube-proxy rules in iptables-nft, iptables-legacy, nftables", "kubectl -n kube-system get pods")
	wantCheck(t, checks, CheckMasquerade, StatusSkip, "no kube-proxy rules", "")
	wantCheck(t, checks, "service:10.96.0.10", StatusSkip, "no kube-proxy rules", "")
}

// withoutLines drops the lines of rules that contain any of drop.
func withoutLines(t *testing.T, rules string, drop ...string) string {
	t.Helper()
	var out []string
	removed := 0
	for _, ln := range strings.Split(rules, "\n") {
		keep := true
		for _, d := range drop {
			if strings.Contains(ln, d) {
				keep = false
			}
		}
		if keep {
			out = append(out, ln)
		} else {
			removed++
		}
	}
	if removed == 0 {
		t.Fatalf("no rule contains %q", drop)
	}
	return strings.Join(out, "\n")
}

// Check 5 and the masquerade half of check 6 both ways: without the
// KUBE-POSTROUTING MASQUERADE rule, or an endpoint's -s podIP -j
// KUBE-MARK-MASQ rule, doctor fails; the full rules pass again.
func TestDoctorLabMasquerade(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1, 2}, Restore: "iptables-nft-restore", Hairpin: true})
	c := clienttest.Open(t, l)
	o := Options{Services: []string{"default/web:http"}}
	wantCheck(t, runDoctor(t, c, o), CheckMasquerade, StatusPass, "", "")

	broken := withoutLines(t, l.Rules, "-j MASQUERADE")
	if err := l.Restore("iptables-nft-restore", broken); err != nil {
		t.Fatal(err)
	}
	checks := runDoctor(t, c, o)
	wantCheck(t, checks, CheckMasquerade, StatusFail, "KUBE-POSTROUTING does not masquerade marked packets", "restart kube-proxy")

	broken = withoutLines(t, l.Rules, "-A POSTROUTING")
	if err := l.Restore("iptables-nft-restore", broken); err != nil {
		t.Fatal(err)
	}
	checks = runDoctor(t, c, o)
	wantCheck(t, checks, CheckMasquerade, StatusFail, "POSTROUTING does not jump to KUBE-POSTROUTING", "restart kube-proxy")

	broken = withoutLines(t, l.Rules, "-s 10.244.0.12/32")
	if err := l.Restore("iptables-nft-restore", broken); err != nil {
		t.Fatal(err)
	}
	checks = runDoctor(t, c, o)
	wantCheck(t, checks, CheckMasquerade, StatusPass, "", "")
	wantCheck(t, checks, "service:default/web:http", StatusFail,
		"default/web:http 10.96.0.10:80 → endpoint 10.244.0.12:8080 has no hairpin masquerade rule (-s 10.244.0.12 -j KUBE-MARK-MASQ)", "restart kube-proxy")

	if err := l.Restore("iptables-nft-restore", l.Rules); err != nil {
		t.Fatal(err)
	}
	checks = runDoctor(t, c, o)
	wantCheck(t, checks, CheckMasquerade, StatusPass, "", "")
	wantCheck(t, checks, "service:default/web:http", StatusPass, "", "")
}

// Check 1 with a promiscuous bridge: without duplicate suppression a
// WARN, with kubenet's ebtables dedup rules (in nft's bridge table, where
// ebtables-nft keeps them) a PASS; not promiscuous again, a FAIL.
func TestDoctorLabPromiscuousBridge(t *testing.T) {
	if _, err := exec.LookPath("ebtables"); err != nil {
		t.Skip("ebtables not installed")
	}
	l := labtest.New(t, lab.Options{Pods: 2, Restore: "none"})
	c := clienttest.Open(t, l)
	br, err := l.Handle().LinkByName(l.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Handle().SetPromiscOn(br); err != nil {
		t.Fatal(err)
	}
	checks := runDoctor(t, c, Options{})
	wantCheck(t, checks, CheckBridgeHairpin, StatusWarn, "cni0 is promiscuous (promiscuous-bridge mode) but no duplicate-suppression rule was found", "hairpinctl enable --bridge cni0")

	mac := br.Attrs().HardwareAddr.String()
	for _, args := range [][]string{
		{"-t", "filter", "-N", "KUBE-DEDUP"},
		{"-t", "filter", "-A", "OUTPUT", "-j", "KUBE-DEDUP", "-p", "IPv4", "-s", mac, "-o", "veth+"},
		{"-t", "filter", "-A", "KUBE-DEDUP", "-p", "IPv4", "-s", mac, "-o", "veth+", "--ip-src", "10.244.0.1", "-j", "ACCEPT"},
		{"-t", "filter", "-A", "KUBE-DEDUP", "-p", "IPv4", "-s", mac, "-o", "veth+", "--ip-src", "10.244.0.0/24", "-j", "DROP"},
	} {
		if out, err := l.Exec("", "ebtables", args...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	ch := wantCheck(t, runDoctor(t, c, Options{}), CheckBridgeHairpin, StatusPass, "every pod port of cni0 reflects hairpin traffic", "")
	if d := strings.Join(ch.Details, "\n"); !strings.Contains(d, "duplicate suppression (nft table bridge filter chain KUBE-DEDUP") || !strings.Contains(d, "not checked") {
		t.Errorf("details do not say which rule counted and what was not checked: %q", ch.Details)
	}

	if err := l.Handle().SetPromiscOff(br); err != nil {
		t.Fatal(err)
	}
	wantCheck(t, runDoctor(t, c, Options{}), CheckBridgeHairpin, StatusFail, "2 of 2 pod ports of cni0 have hairpin off", "hairpinctl enable --bridge cni0")
}

// Without a bridge (a routed CNI) the bridge checks SKIP with the reason.
func TestDoctorNoBridge(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none"})
	c := clienttest.Open(t, l)
	br, err := l.Handle().LinkByName(l.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Handle().LinkDel(br); err != nil {
		t.Fatal(err)
	}
	checks := runDoctor(t, c, Options{})
	wantCheck(t, checks, CheckBridgeHairpin, StatusSkip, "no Linux bridge in netns "+l.Node+": bridge hairpin does not apply", "")
	wantCheck(t, checks, CheckBrNetfilter, StatusSkip, "br_netfilter does not apply", "")
	// A --bridge that does not exist is bad input, not a finding.
	if _, err := Run(c, Options{Bridges: []string{"cni0"}}); !errors.Is(err, netops.ErrNotFound) {
		t.Errorf("--bridge cni0 without cni0: %v, want ErrNotFound", err)
	}
}

// Check 7 through Doctor: a temporary --cni-conf-dir, broken then fixed.
func TestDoctorLabCNIConfig(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none", Hairpin: true})
	c := clienttest.Open(t, l)
	dir := t.TempDir()
	conf := filepath.Join(dir, "10-bridge.conflist")
	write := func(name string) {
		b, err := os.ReadFile(filepath.Join("testdata/cni", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(conf, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("bridge-nohairpin.conflist")
	wantCheck(t, runDoctor(t, c, Options{CNIConfDir: dir}), CheckCNIConfig, StatusWarn,
		`plugin bridge lacks "hairpinMode": true: new pods on cni0 come up with hairpin off`, `set "hairpinMode": true in `+conf)
	write("bridge-hairpin-promisc.conflist")
	wantCheck(t, runDoctor(t, c, Options{CNIConfDir: dir}), CheckCNIConfig, StatusFail,
		"sets hairpinMode and promiscMode together", `remove "promiscMode" from `+conf)
	write("10-flannel.conflist")
	wantCheck(t, runDoctor(t, c, Options{CNIConfDir: dir}), CheckCNIConfig, StatusPass,
		`plugin flannel (its delegate) sets "hairpinMode": true`, "")
	wantCheck(t, runDoctor(t, c, Options{CNIConfDir: filepath.Join(dir, "nope")}), CheckCNIConfig, StatusSkip, "no CNI configuration directory", "")
}

// Check 8 both ways: a fresh namespace has lost nothing; a connection
// whose NATed reply tuple is already taken fails to insert (a clash, which
// insert_failed and drop count) and doctor warns.
func TestDoctorLabConntrack(t *testing.T) {
	if _, err := exec.LookPath("conntrack"); err != nil {
		t.Skip("conntrack tool not installed")
	}
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1}, Restore: "iptables-nft-restore", Hairpin: true})
	c := clienttest.Open(t, l)
	wantCheck(t, runDoctor(t, c, Options{}), CheckConntrack, StatusPass, "no conntrack insert failures or drops", "")

	// Pod 2 connects to the Service, DNATed to pod 1's 8080 and SNATed to
	// a fixed 10.244.0.1:50000, so its reply tuple must be 10.244.0.11:8080
	// -> 10.244.0.1:50000. An entry already holding that tuple makes the
	// confirm fail. (Without the fixed SNAT the kernel would pick another
	// source port and avoid the clash.)
	client, server := l.Pod(2), l.Pod(1)
	for _, args := range [][]string{
		{"iptables-nft", "-t", "nat", "-I", "POSTROUTING", "1", "-p", "tcp", "-s", client.IP.String(), "-d", server.IP.String(),
			"--dport", "8080", "-j", "SNAT", "--to-source", "10.244.0.1:50000"},
		{"conntrack", "-I", "-p", "tcp", "-s", server.IP.String(), "-d", "10.244.0.1", "--sport", "8080", "--dport", "50000",
			"--state", "ESTABLISHED", "--timeout", "600", "-u", "SEEN_REPLY,ASSURED"},
	} {
		if out, err := l.Exec("", args[0], args[1:]...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dialed := make(chan error, 1)
	go func() {
		dialed <- lab.In(client.Ns, func() error {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp4", net.JoinHostPort(l.ServiceIP.String(), fmt.Sprint(l.ServicePort)))
			if err == nil {
				conn.Close()
			}
			return err
		})
	}()
	// The SYN is dropped as it is sent; poll the counters until it is.
	deadline := time.Now().Add(10 * time.Second)
	for {
		k, err := readConntrackCounters(c)
		if err != nil {
			t.Fatal(err)
		}
		if k.InsertFailed > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no insert failure counted: %+v", k)
		}
		select {
		case err := <-dialed:
			t.Fatalf("the clashing connection finished (%v) and conntrack counted nothing", err)
		case <-time.After(20 * time.Millisecond): // poll interval
		}
	}
	cancel()
	if err := <-dialed; err == nil {
		t.Error("the clashing connection succeeded")
	}
	wantCheck(t, runDoctor(t, c, Options{}), CheckConntrack, StatusWarn, "conntrack lost connections: insert_failed", "random-fully")
}

// Checks 4, 5 and 6 on kube-proxy's nftables mode: the backend is named,
// the masquerade chains are nftables', the endpoint's `ip saddr` rule is
// the hairpin masquerade rule, and with it and hairpin on the endpoint
// really reaches itself through the Service.
func TestDoctorLabNFTablesMode(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
	}
	rules, err := os.ReadFile(filepath.Join(doctorTestdata, "kube-proxy-nftables.nft"))
	if err != nil {
		t.Fatal(err)
	}
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1, 2}, Restore: "none", Hairpin: true})
	c := clienttest.Open(t, l)
	load := func(text string) {
		t.Helper()
		if out, err := l.Exec("", "nft", "delete", "table", "ip", "kube-proxy"); err != nil && !strings.Contains(out, "No such file") {
			t.Fatalf("%v: %s", err, out)
		}
		if out, err := l.Exec(text, "nft", "-f", "-"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	load(string(rules))
	o := Options{Services: []string{"10.96.0.10"}}
	checks := runDoctor(t, c, o)
	wantCheck(t, checks, CheckKubeProxy, StatusPass, "kube-proxy's rules are in nftables (1 service port)", "")
	wantCheck(t, checks, CheckMasquerade, StatusPass, "mark-for-masquerade marks with 0x4000 and masquerading masquerades what is marked (nftables)", "")
	wantCheck(t, checks, "service:default/web:http", StatusPass, "all 2 endpoints have their hairpin masquerade rule", "")
	// numgen picks either endpoint: connect until pod 1 lands on itself
	// (the chance of 30 misses is 2^-30); a hairpin failure is a timeout.
	self := false
	for i := 0; i < 30 && !self; i++ {
		got, err := l.ConnectService(l.Pod(1), 3*time.Second)
		if err != nil {
			t.Fatalf("nftables mode, doctor passes, but pod 1's connection %d failed: %v", i, err)
		}
		self = got == l.Pod(1).Name
	}
	if !self {
		t.Error("pod 1 never reached itself through the Service")
	}

	load(withoutLines(t, string(rules), "ip saddr 10.244.0.11 jump mark-for-masquerade"))
	wantCheck(t, runDoctor(t, c, o), "service:default/web:http", StatusFail, "endpoint 10.244.0.11:8080 has no hairpin masquerade rule", "restart kube-proxy")
	load(withoutLines(t, string(rules), "nat-postrouting jump masquerading"))
	wantCheck(t, runDoctor(t, c, o), CheckMasquerade, StatusFail, "nat-postrouting does not jump to masquerading", "restart kube-proxy")

	// Stale iptables rules next to nftables mode.
	load(string(rules))
	if err := l.Restore("iptables-nft-restore", lab.ServiceRules(l.ServiceName, l.ServiceIP.String(), l.ServicePort, []string{"10.244.0.11"}, 8080)); err != nil {
		t.Fatal(err)
	}
	wantCheck(t, runDoctor(t, c, o), CheckKubeProxy, StatusWarn, "kube-proxy rules in iptables-nft and nftables", "")
}

// Duplicate suppression read from the kernel: bridge-family rules loaded
// with nft into the lab's node, then looked for over netlink. Each rule
// wanted is the line of the loaded file that matches, without the
// counter's values and with the "meta protocol ip" that nft loads before
// an ip match in a bridge table (and does not print when it lists it).
func TestFindDedupNFT(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 1, Restore: "none"})
	c := clienttest.Open(t, l)
	const mac = "02:42:0a:11:00:01"
	tests := []struct {
		file, mac string
		rule      string
		where     string
	}{
		{"nft-kubenet-dedup.txt", mac, `oifname "veth*" ether saddr 02:42:0a:11:00:01 ether type ip ip saddr 10.244.0.0/24 counter drop`, "nft table bridge filter chain KUBE-DEDUP"},
		// A KUBE-DEDUP chain counts whatever the bridge's MAC.
		{"nft-kubenet-dedup.txt", "02:00:00:00:00:99", `oifname "veth*" ether saddr 02:42:0a:11:00:01 ether type ip ip saddr 10.244.0.0/24 counter drop`, "nft table bridge filter chain KUBE-DEDUP"},
		{"nft-custom-dedup.txt", mac, `oifname "veth*" ether saddr 02:42:0a:11:00:01 meta protocol ip ip saddr 10.244.0.0/24 drop`, "nft table bridge custom chain out"},
		// The other table drops another MAC and accepts this one.
		{"nft-no-dedup.txt", mac, "", ""},
		{"nft-custom-dedup.txt", "02:00:00:00:00:99", "", ""},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(filepath.Join(doctorTestdata, tt.file))
		if err != nil {
			t.Fatal(err)
		}
		if out, err := l.Exec(string(b), "nft", "-f", "-"); err != nil {
			t.Fatalf("nft -f %s: %v: %s", tt.file, err, out)
		}
		rule, where, err := findDedupNFT(c, tt.mac)
		if err != nil || rule != tt.rule || where != tt.where {
			t.Errorf("%s with %s: %q in %q (%v), want %q in %q", tt.file, tt.mac, rule, where, err, tt.rule, tt.where)
		}
		if out, err := l.Exec("", "nft", "flush", "ruleset", "bridge"); err != nil {
			t.Fatalf("nft flush ruleset bridge: %v: %s", err, out)
		}
	}
}
