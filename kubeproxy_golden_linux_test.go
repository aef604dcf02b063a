package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/lab"
)

// The goldens are what the real kube-proxy of each release wrote in the
// kube lab (test/kube, `make kube-goldens`), with the truth the lab
// computed from the API objects it created. Each is loaded into a scratch
// namespace with the tools kube-proxy itself uses, and hairpinctl's reading
// is compared to the truth.
const goldenDir = "test/kube/testdata"

// goldenTruth is test/kube's truth.json (kubelab.Truth).
type goldenTruth struct {
	Release, Mode, NodeName string
	Services                []goldenService
}

// goldenService is one Service port of truth.json (kubelab.TruthService).
type goldenService struct {
	Namespace, Name, PortName, Protocol, Family, ClusterIP string
	Port, NodePort                                         int
	ExternalIPs, LoadBalancerIPs                           []string
	ClusterEndpoints, HairpinEndpoints                     []string
}

// scratchNetns makes an empty named namespace, removed at cleanup.
func scratchNetns(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "hpgold-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// loadGolden loads a golden's rules into netns ns the way kube-proxy wrote
// them, creating the nfacct objects its iptables rules count into first.
func loadGolden(t *testing.T, ns, dir, mode string) {
	t.Helper()
	load := func(file string, cmd ...string) {
		text, err := os.ReadFile(filepath.Join(dir, file))
		if os.IsNotExist(err) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if mode != "nftables" {
			for _, name := range nfacctNames(string(text)) {
				if out, err := exec.Command("ip", "netns", "exec", ns, "nfacct", "add", name).CombinedOutput(); err != nil &&
					!strings.Contains(string(out), "exists") && !strings.Contains(string(out), "busy") {
					t.Fatalf("nfacct add %s: %v: %s", name, err, out)
				}
			}
		}
		c := exec.Command("ip", append([]string{"netns", "exec", ns}, cmd...)...)
		c.Stdin = strings.NewReader(string(text))
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("load %s with %v: %v: %s", file, cmd, err, out)
		}
	}
	switch mode {
	case "iptables-nft":
		load("iptables-save.txt", "iptables-nft-restore")
		load("ip6tables-save.txt", "ip6tables-nft-restore")
	case "iptables-legacy":
		load("iptables-save.txt", "iptables-legacy-restore")
		load("ip6tables-save.txt", "ip6tables-legacy-restore")
	case "nftables":
		load("nft-ip.txt", "nft", "-f", "-")
		load("nft-ip6.txt", "nft", "-f", "-")
	default:
		t.Fatalf("unknown mode %q", mode)
	}
}

// nfacctNames lists the accounting objects "-m nfacct --nfacct-name N"
// rules refer to.
func nfacctNames(rules string) []string {
	var names []string
	for _, line := range strings.Split(rules, "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "--nfacct-name" && !slices.Contains(names, f[i+1]) {
				names = append(names, f[i+1])
			}
		}
	}
	return names
}

func TestKubeProxyGoldens(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading the goldens needs root")
	}
	dirs, _ := filepath.Glob(filepath.Join(goldenDir, "v*", "*", "truth.json"))
	if len(dirs) == 0 {
		t.Fatalf("no goldens under %s (make kube-goldens)", goldenDir)
	}
	for _, truthFile := range dirs {
		dir := filepath.Dir(truthFile)
		release, mode := filepath.Base(filepath.Dir(dir)), filepath.Base(dir)
		t.Run(release+"/"+mode, func(t *testing.T) {
			var truth goldenTruth
			b, err := os.ReadFile(truthFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &truth); err != nil {
				t.Fatal(err)
			}
			ns := scratchNetns(t)
			loadGolden(t, ns, dir, mode)
			// Every golden must read right: the list of known failures
			// this test once kept is empty and gone.
			check := func(name string, problems []string) {
				t.Helper()
				if len(problems) > 0 {
					t.Errorf("%s: %d problems:\n  %s", name, len(problems), strings.Join(problems, "\n  "))
				}
			}
			check("services", goldenServices(t, ns, mode, truth))
			check("doctor", goldenDoctor(t, ns))
			check("conntrack", goldenConntrack(t, dir, mode, truth))
			check("lookups", goldenLookups(t, ns, mode, truth))
		})
	}
}

// goldenServices compares `services -o json` with the truth: every Service
// port of the API, with exactly the endpoints ClusterIP traffic reaches,
// and the hairpin masquerade for every one on this node.
func goldenServices(t *testing.T, ns, mode string, truth goldenTruth) []string {
	backend := map[string]string{"iptables-nft": "iptables-nft", "iptables-legacy": "iptables-legacy", "nftables": "nftables"}[mode]
	r := run(t, "--netns", ns, "services", "--backend", backend, "-o", "json")
	if r.code != 0 {
		return []string{"services exit " + strconv.Itoa(r.code) + ": " + strings.TrimSpace(r.stderr)}
	}
	var got []struct {
		Namespace, Name, PortName, Protocol, ClusterIP string
		Port                                           int
		NodePorts                                      []int
		ExternalIPs, LoadBalancerIPs                   []string
		Endpoints                                      []struct {
			IP          string
			Port        int
			HairpinMasq bool
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		return []string{"services -o json: " + err.Error()}
	}
	var problems []string
	if strings.Contains(r.stderr, "not understood") {
		problems = append(problems, "stderr: "+strings.TrimSpace(r.stderr))
	}
	for _, want := range truth.Services {
		id := want.Namespace + "/" + want.Name + ":" + want.PortName + " " + want.Protocol + " " + net.JoinHostPort(want.ClusterIP, strconv.Itoa(want.Port))
		found := false
		for _, s := range got {
			if !sameAddr(s.ClusterIP, want.ClusterIP) || s.Port != want.Port || !strings.EqualFold(s.Protocol, want.Protocol) {
				continue
			}
			found = true
			if s.Namespace != want.Namespace || s.Name != want.Name || s.PortName != want.PortName {
				problems = append(problems, id+": named "+s.Namespace+"/"+s.Name+":"+s.PortName)
			}
			if len(want.ClusterEndpoints) > 0 {
				// Where there are endpoints, kube-proxy programs the
				// Service's other addresses too.
				var np []int
				if want.NodePort != 0 {
					np = []int{want.NodePort}
				}
				if !slices.Equal(s.NodePorts, np) {
					problems = append(problems, fmt.Sprintf("%s: node ports %v, want %v", id, s.NodePorts, np))
				}
				gotExt, gotLB := s.ExternalIPs, s.LoadBalancerIPs
				wantExt, wantLB := want.ExternalIPs, want.LoadBalancerIPs
				if mode == "nftables" {
					// nftables mode sends external and load-balancer IPs
					// alike; only source ranges (firewall-ips) set a
					// load balancer apart, so compare them together
					// (docs/json.md says so).
					gotExt, gotLB = append(append([]string{}, gotExt...), gotLB...), nil
					wantExt, wantLB = append(append([]string{}, wantExt...), wantLB...), nil
				}
				if !slices.Equal(canonIPs(gotExt), canonIPs(wantExt)) {
					problems = append(problems, fmt.Sprintf("%s: external IPs %v, want %v", id, gotExt, wantExt))
				}
				if !slices.Equal(canonIPs(gotLB), canonIPs(wantLB)) {
					problems = append(problems, fmt.Sprintf("%s: load-balancer IPs %v, want %v", id, gotLB, wantLB))
				}
			}
			var eps, masq []string
			for _, e := range s.Endpoints {
				hp := net.JoinHostPort(canonIP(e.IP), strconv.Itoa(e.Port))
				eps = append(eps, hp)
				if e.HairpinMasq {
					masq = append(masq, hp)
				}
			}
			sort.Strings(eps)
			if !slices.Equal(eps, canon(want.ClusterEndpoints)) {
				problems = append(problems, id+": endpoints "+strings.Join(eps, ",")+", want "+strings.Join(want.ClusterEndpoints, ","))
			}
			for _, hp := range canon(want.HairpinEndpoints) {
				if !slices.Contains(masq, hp) {
					problems = append(problems, id+": endpoint "+hp+" (on this node) without its hairpin masquerade")
				}
			}
		}
		if !found && len(want.ClusterEndpoints) > 0 {
			problems = append(problems, id+": missing")
		}
	}
	return problems
}

// goldenLookups looks up every Service port of the API by name and by
// address: a lookup reads only the chains (and maps) it needs on
// iptables-nft and in nftables mode, and must give exactly what the whole
// table's read gives for that Service, its rules (--raw) included.
func goldenLookups(t *testing.T, ns, mode string, truth goldenTruth) []string {
	full := run(t, "--netns", ns, "services", "--backend", mode, "--raw", "-o", "json")
	if full.code != 0 {
		return []string{"services exit " + strconv.Itoa(full.code) + ": " + strings.TrimSpace(full.stderr)}
	}
	var all []map[string]any
	if err := json.Unmarshal([]byte(full.stdout), &all); err != nil {
		return []string{"services -o json: " + err.Error()}
	}
	var problems []string
	for _, want := range truth.Services {
		if len(want.ClusterEndpoints) == 0 {
			continue
		}
		port := want.PortName
		if port == "" {
			port = strconv.Itoa(want.Port)
		}
		for _, sel := range []string{want.Namespace + "/" + want.Name + ":" + port, net.JoinHostPort(want.ClusterIP, strconv.Itoa(want.Port))} {
			r := run(t, "--netns", ns, "services", "--backend", mode, "--raw", "-o", "json", sel)
			var got []map[string]any
			if r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil || len(got) == 0 {
				problems = append(problems, fmt.Sprintf("lookup %s: exit %d, %q", sel, r.code, strings.TrimSpace(r.stderr)))
				continue
			}
			for _, g := range got {
				if !slices.ContainsFunc(all, func(a map[string]any) bool { return reflect.DeepEqual(a, g) }) {
					b, _ := json.Marshal(g)
					problems = append(problems, fmt.Sprintf("lookup %s: %s is not what the whole read gives", sel, b))
				}
			}
			if !slices.ContainsFunc(got, func(g map[string]any) bool {
				return sameAddr(fmt.Sprint(g["clusterIP"]), want.ClusterIP) && g["port"] == float64(want.Port)
			}) {
				problems = append(problems, fmt.Sprintf("lookup %s: %s %d not among the %d found", sel, want.ClusterIP, want.Port, len(got)))
			}
		}
	}
	return problems
}

// goldenDoctor runs doctor on the loaded rules: kube-proxy's masquerade
// plumbing is healthy in every golden, so that check passes and neither it
// nor the Service checks FAIL.
func goldenDoctor(t *testing.T, ns string) []string {
	r := run(t, "--netns", ns, "doctor", "-o", "json")
	var rep struct {
		Checks []struct{ ID, Status, Finding string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		return []string{"doctor -o json: " + err.Error() + ": " + r.stderr}
	}
	var problems []string
	for _, c := range rep.Checks {
		switch {
		case c.ID == "masquerade" && c.Status != "PASS":
			problems = append(problems, "masquerade "+c.Status+": "+c.Finding)
		case (c.ID == "services" || strings.HasPrefix(c.ID, "service:") || c.ID == "kube-proxy") && c.Status == "FAIL":
			problems = append(problems, c.ID+" FAIL: "+c.Finding)
		}
	}
	return problems
}

func canonIP(s string) string {
	if ip := net.ParseIP(s); ip != nil {
		return ip.String()
	}
	return s
}

func sameAddr(a, b string) bool { return canonIP(a) == canonIP(b) }

func canonIPs(ips []string) []string {
	out := []string{}
	for _, ip := range ips {
		out = append(out, canonIP(ip))
	}
	sort.Strings(out)
	return out
}

func canon(hps []string) []string {
	out := make([]string, 0, len(hps))
	for _, hp := range hps {
		h, p, err := net.SplitHostPort(hp)
		if err != nil {
			out = append(out, hp)
			continue
		}
		out = append(out, net.JoinHostPort(canonIP(h), p))
	}
	sort.Strings(out)
	return out
}

// goldenConntrack sends real traffic through a golden's rules: a lab node
// whose two pods have the addresses the kube lab's CNI plugin gave pod-1
// and pod-2 (10.244.0.2 and .3, both endpoints of default/web), with
// hairpin on, the golden loaded into it. pod-1 connects to web's ClusterIP;
// conntrack must flag as hairpin exactly the flows pod-1 itself answered,
// each masqueraded by the release's rules (no NO-SNAT).
func goldenConntrack(t *testing.T, dir, mode string, truth goldenTruth) []string {
	var web *goldenService
	for i, s := range truth.Services {
		if s.Namespace == "default" && s.Name == "web" && s.Family == "ipv4" {
			web = &truth.Services[i]
		}
	}
	if web == nil || !slices.Equal(web.ClusterEndpoints, []string{"10.244.0.2:8080", "10.244.0.3:8080"}) {
		return []string{"the golden's default/web is not pod-1 and pod-2 (10.244.0.2 and .3): the catalogue changed"}
	}
	l := newLab(t, lab.Options{Pods: 2, PodIPBase: 1, Restore: "none", Hairpin: true, Prefix: "hpgct"})
	loadGolden(t, l.Node, dir, mode)
	self := l.Pod(1)
	answered := 0
	for i := 0; i < 12; i++ {
		got, err := l.Connect(self, net.ParseIP(web.ClusterIP), web.Port, 2*time.Second)
		if err != nil {
			return []string{fmt.Sprintf("pod-1 → %s:%d with hairpin on: %v", web.ClusterIP, web.Port, err)}
		}
		if got == self.Name {
			answered++
		}
	}
	r := run(t, "--netns", l.Node, "conntrack", web.ClusterIP, "--no-follow", "-o", "json")
	if r.code != 0 {
		return []string{fmt.Sprintf("conntrack exit %d: %s", r.code, r.stderr)}
	}
	var problems []string
	hairpin := 0
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var f struct {
			Orig, Reply   struct{ Src, Dst string }
			Hairpin, SNAT bool
		}
		if json.Unmarshal([]byte(line), &f) != nil || f.Orig.Src != self.IP.String() {
			continue
		}
		if f.Hairpin != (f.Reply.Src == self.IP.String()) {
			problems = append(problems, "hairpin flag wrong: "+line)
		}
		if f.Hairpin {
			hairpin++
			if !f.SNAT {
				problems = append(problems, "a hairpin flow without its masquerade: "+line)
			}
		}
	}
	if hairpin != answered {
		problems = append(problems, fmt.Sprintf("%d hairpin flows, %d connections answered by pod-1 itself", hairpin, answered))
	}
	t.Logf("conntrack: %d of 12 connections answered by pod-1 itself, %d hairpin flows", answered, hairpin)
	return problems
}
