package doctor

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
)

// updateDoctor rewrites testdata/doctor/*.golden (go test ./netops/doctor -run
// DoctorGolden -update-doctor).
var updateDoctor = flag.Bool("update-doctor", false, "rewrite testdata/doctor/*.golden")

const doctorTestdata = "testdata/doctor"

// webService is the example: default/web:http with three
// endpoints, the first behind veth1.
func webService(masq ...bool) kubeproxy.Service {
	s := kubeproxy.Service{Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP", ClusterIP: "10.96.0.10", Port: 80}
	for i, ip := range []string{"10.244.0.11", "10.244.0.12", "10.244.1.7"} {
		ep := kubeproxy.Endpoint{IP: ip, Port: 8080, HairpinMasq: true}
		if i < len(masq) {
			ep.HairpinMasq = masq[i]
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

func port(bridge, name string, hairpin bool, ips ...string) bridgeports.Port {
	if ips == nil {
		ips = []string{}
	}
	return bridgeports.Port{Bridge: bridge, Name: name, Hairpin: hairpin, PodIPs: ips, Kind: "veth", PodPort: true, OperState: "up", State: "forwarding"}
}

// healthyFacts is a node where everything passes.
func healthyFacts() *doctorFacts {
	return &doctorFacts{
		bridges: []bridgeFacts{{Name: "cni0", MAC: "02:42:0a:11:00:01", Ports: []bridgeports.Port{
			port("cni0", "veth1", true, "10.244.0.11"),
			port("cni0", "veth2", true, "10.244.0.12"),
			port("cni0", "veth3", true, "10.244.0.13"),
		}}},
		brNfCallIPTables: sysctlFact{Value: "1"},
		ipForward:        sysctlFact{Value: "1"},
		services: &kubeproxy.Result{
			Backend:           kubeproxy.BackendIPTablesNFT,
			BackendsWithRules: []kubeproxy.Backend{kubeproxy.BackendIPTablesNFT},
			Checked:           []kubeproxy.Backend{kubeproxy.BackendIPTablesNFT, kubeproxy.BackendIPTablesLegacy, kubeproxy.BackendNFTables},
			Masquerade:        kubeproxy.MasqueradePlumbing{MarkMasq: true, PostroutingMasquerade: true, PostroutingHooked: true, Mark: "0x4000"},
			Services:          []kubeproxy.Service{webService()},
		},
		cniDir:    "/etc/cni/net.d",
		cniFiles:  []cniFile{{Path: "/etc/cni/net.d/10-flannel.conflist", Name: "cbr0", Plugins: []cniPlugin{{Type: "flannel", Bridges: true, Bridge: "cni0", Via: "delegate", HairpinMode: true}}}},
		conntrack: conntrackCounters{Entries: 120, MaxEntries: 262144},
	}
}

// brokenFacts breaks every check at once.
func brokenFacts() *doctorFacts {
	f := healthyFacts()
	f.netns = "node1"
	f.bridges[0].Ports[0].Hairpin = false
	f.bridges[0].Ports[2].Hairpin = false
	f.brNfCallIPTables = sysctlFact{Missing: true}
	f.ipForward = sysctlFact{Value: "0"}
	f.services.BackendsWithRules = []kubeproxy.Backend{kubeproxy.BackendIPTablesNFT, kubeproxy.BackendIPTablesLegacy}
	f.services.Masquerade.PostroutingMasquerade = false
	f.services.Services = []kubeproxy.Service{webService(true, false, true)}
	f.cniFiles[0].Plugins[0].HairpinMode = false
	f.conntrack.InsertFailed, f.conntrack.Drop = 7, 2
	return f
}

func checkByID(t *testing.T, r *Report, id string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("no check %s", id)
	return Check{}
}

// The headline, word for word.
func TestDoctorServiceHeadline(t *testing.T) {
	f := healthyFacts()
	f.bridges[0].Ports[0].Hairpin = false
	f.selectors = []string{"10.96.0.10"}
	c := checkByID(t, diagnose(f), "service:default/web:http")
	const want = "default/web:http 10.96.0.10:80 → endpoint 10.244.0.11:8080 sits behind veth1 on cni0 with hairpin off: it cannot reach itself through this Service (1 in 3 of its connections will hang)"
	if c.Status != StatusFail || c.Finding != want || c.Fix != "hairpinctl enable veth1" {
		t.Errorf("got %s\n  %q\n  fix %q\nwant FAIL\n  %q\n  fix %q", c.Status, c.Finding, c.Fix, want, "hairpinctl enable veth1")
	}
	// The endpoint on another node and the one with hairpin on are accounted for.
	details := strings.Join(c.Details, "\n")
	for _, want := range []string{
		"10.244.1.7:8080: masquerade rule yes; not behind a bridge port of this node",
		"10.244.0.12:8080: masquerade rule yes; behind veth2 on cni0, hairpin on",
	} {
		if !strings.Contains(details, want) {
			t.Errorf("details lack %q:\n%s", want, details)
		}
	}

	// One endpoint: every connection of the pod to itself hangs.
	f.services.Services[0].Endpoints = f.services.Services[0].Endpoints[:1]
	c = checkByID(t, diagnose(f), "service:default/web:http")
	if !strings.HasSuffix(c.Finding, "(every one of its connections will hang)") {
		t.Errorf("one endpoint: %q", c.Finding)
	}
	// Through --netns, the fix acts on that namespace.
	f.netns = "/proc/42/ns/net"
	if c := checkByID(t, diagnose(f), "service:default/web:http"); c.Fix != "hairpinctl enable veth1 --netns /proc/42/ns/net" {
		t.Errorf("fix %q", c.Fix)
	}
}

func TestDoctorServiceSelectors(t *testing.T) {
	dns := kubeproxy.Service{Namespace: "kube-system", Name: "kube-dns", PortName: "dns-tcp", ClusterIP: "10.96.0.53", Port: 53,
		ExternalIPs: []string{"192.0.2.53"}, Endpoints: []kubeproxy.Endpoint{{IP: "10.244.0.13", Port: 53, HairpinMasq: true}}}
	metrics := dns
	metrics.PortName, metrics.Port = "metrics", 9153
	f := healthyFacts()
	f.services.Services = append(f.services.Services, dns, metrics)
	tests := []struct {
		sel  string
		want []string
	}{
		{"10.96.0.10", []string{"service:default/web:http"}},
		{"10.96.0.53", []string{"service:kube-system/kube-dns:dns-tcp", "service:kube-system/kube-dns:metrics"}},
		{"192.0.2.53", []string{"service:kube-system/kube-dns:dns-tcp", "service:kube-system/kube-dns:metrics"}},
		{"kube-system/kube-dns", []string{"service:kube-system/kube-dns:dns-tcp", "service:kube-system/kube-dns:metrics"}},
		{"kube-system/kube-dns:metrics", []string{"service:kube-system/kube-dns:metrics"}},
		{"default/nope", []string{"service:default/nope"}},
	}
	for _, tt := range tests {
		f.selectors = []string{tt.sel}
		var got []string
		for _, c := range checkServices(f) {
			got = append(got, c.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s selects %v, want %v", tt.sel, got, tt.want)
		}
	}
	f.selectors = []string{"default/nope"}
	if c := checkServices(f)[0]; c.Status != StatusWarn || !strings.Contains(c.Finding, "no Service default/nope in kube-proxy's iptables-nft rules") {
		t.Errorf("unknown service: %s %q", c.Status, c.Finding)
	}
}

func TestValidateServiceSelector(t *testing.T) {
	for _, ok := range []string{"10.96.0.10", "fd00::10", "default/web", "default/web:http", "ns/name:8080", "10.96.0.10:80", "[::1]:80"} {
		if err := kubeproxy.ValidateServiceSelector(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "web", "/web", "default/", "default/web:", "a/b/c", "10.96.0", "default/web:http:x/y"} {
		if err := kubeproxy.ValidateServiceSelector(bad); !errors.Is(err, netops.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
}

// Each verdict of check 6 on one endpoint behind this node's bridge.
func TestDoctorServiceEndpointVerdicts(t *testing.T) {
	tests := []struct {
		name    string
		hairpin bool
		promisc bool
		dedup   string
		masq    bool
		noBr    bool
		status  CheckStatus
		finding string
		fix     string
	}{
		{name: "hairpin on", hairpin: true, masq: true, status: StatusPass, finding: "all 1 endpoint have their hairpin masquerade rule"},
		{name: "hairpin off", masq: true, status: StatusFail, finding: "sits behind veth1 on cni0 with hairpin off", fix: "hairpinctl enable veth1"},
		{name: "no masquerade rule", hairpin: true, status: StatusFail,
			finding: "endpoint 10.244.0.11:8080 has no hairpin masquerade rule (-s 10.244.0.11 -j KUBE-MARK-MASQ): it cannot reach itself through this Service",
			fix:     "restart kube-proxy"},
		{name: "both", status: StatusFail, finding: "has no hairpin masquerade rule", fix: "hairpinctl enable veth1; restart kube-proxy"},
		{name: "promiscuous with dedup", promisc: true, dedup: "drop", masq: true, status: StatusPass},
		{name: "promiscuous without dedup", promisc: true, masq: true, status: StatusWarn,
			finding: "the bridge is promiscuous without duplicate suppression", fix: "hairpinctl enable veth1"},
		{name: "routed CNI", noBr: true, masq: true, status: StatusPass},
		{name: "routed CNI without masquerade rule", noBr: true, status: StatusFail, finding: "has no hairpin masquerade rule", fix: "restart kube-proxy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := healthyFacts()
			f.bridges = []bridgeFacts{{Name: "cni0", Promisc: tt.promisc, Dedup: dedupFacts{Rule: tt.dedup, Where: "nft"},
				Ports: []bridgeports.Port{port("cni0", "veth1", tt.hairpin, "10.244.0.11")}}}
			if tt.noBr {
				f.bridges = nil
			}
			f.services.Services = []kubeproxy.Service{{Namespace: "default", Name: "web", PortName: "http", ClusterIP: "10.96.0.10", Port: 80,
				Endpoints: []kubeproxy.Endpoint{{IP: "10.244.0.11", Port: 8080, HairpinMasq: tt.masq}}}}
			f.selectors = []string{"default/web"}
			c := checkServices(f)[0]
			if c.Status != tt.status || !strings.Contains(c.Finding, tt.finding) || !strings.HasPrefix(c.Fix, tt.fix) || (tt.fix == "") != (c.Fix == "") {
				t.Errorf("got %s %q fix %q\nwant %s %q fix %q", c.Status, c.Finding, c.Fix, tt.status, tt.finding, tt.fix)
			}
			if tt.noBr && !strings.Contains(strings.Join(c.Details, "\n"), "no bridge in this namespace: bridge hairpin does not apply") {
				t.Errorf("routed CNI: details do not say hairpin does not apply: %q", c.Details)
			}
		})
	}
	// A Service without endpoints.
	f := healthyFacts()
	f.services.Services[0].Endpoints = nil
	f.services.Services[0].NoEndpoints = true
	// Not a hairpin problem: said once, in the details, and no WARN.
	if c := checkServices(f)[0]; c.Status != StatusPass || strings.Contains(c.Finding, "has no endpoints") ||
		strings.Count(strings.Join(c.Details, "\n"), "has no endpoints") != 1 {
		t.Errorf("no endpoints: %s %q %q", c.Status, c.Finding, c.Details)
	}
	f.selectors = []string{"default/web"}
	if c := checkServices(f)[0]; c.Status != StatusPass || strings.Count(strings.Join(c.Details, "\n"), "has no endpoints") != 1 {
		t.Errorf("no endpoints, selected: %s %q %q", c.Status, c.Finding, c.Details)
	}
	// Pod IPs that could not be learnt are said, since the join misses them.
	f = healthyFacts()
	f.bridges[0].Ports[2].PodIPs = []string{}
	if c := checkServices(f)[0]; !strings.Contains(strings.Join(c.Details, "\n"), "1 port whose pod IPs could not be learnt") {
		t.Errorf("unknown pod IPs not said: %q", c.Details)
	}
}

func TestDoctorBridgeHairpin(t *testing.T) {
	many := bridgeFacts{Name: "cni0"}
	for i := 1; i <= 9; i++ {
		many.Ports = append(many.Ports, port("cni0", fmt.Sprintf("veth%d", i), i == 5))
	}
	tests := []struct {
		name    string
		bridges []bridgeFacts
		err     error
		status  CheckStatus
		finding string
		fix     string
	}{
		{name: "no bridge", status: StatusSkip, finding: "no Linux bridge in netns host: bridge hairpin does not apply (a routed CNI"},
		{name: "empty bridge", bridges: []bridgeFacts{{Name: "cni0", Ports: []bridgeports.Port{}}}, status: StatusPass, finding: "every pod port of cni0 reflects hairpin traffic (0 pod ports)"},
		{name: "many off", bridges: []bridgeFacts{many}, status: StatusFail,
			finding: "8 of 9 pod ports of cni0 have hairpin off: veth1, veth2, veth3, veth4 and 4 more", fix: "hairpinctl enable --bridge cni0"},
		{name: "two bridges", bridges: []bridgeFacts{
			{Name: "cni0", Ports: []bridgeports.Port{port("cni0", "veth1", false)}},
			{Name: "cbr0", Promisc: true, Ports: []bridgeports.Port{port("cbr0", "veth9", false)}, Dedup: dedupFacts{Looked: true, Unchecked: []string{"ebtables-legacy is not installed"}}},
		}, status: StatusFail,
			finding: "1 of 1 pod ports of cni0 have hairpin off: veth1; cbr0 is promiscuous", fix: "hairpinctl enable --bridge cni0 --bridge cbr0"},
		{name: "promiscuous, no dedup", bridges: []bridgeFacts{{Name: "cbr0", Promisc: true, Ports: []bridgeports.Port{port("cbr0", "veth9", false)}}},
			status: StatusWarn, finding: "cbr0 is promiscuous (promiscuous-bridge mode) but no duplicate-suppression rule was found", fix: "hairpinctl enable --bridge cbr0"},
		{name: "promiscuous with dedup", bridges: []bridgeFacts{{Name: "cbr0", Promisc: true, Ports: []bridgeports.Port{port("cbr0", "veth9", false)}, Dedup: dedupFacts{Looked: true, Rule: "-j DROP", Where: "ebtables"}}},
			status: StatusPass, finding: "every pod port of cbr0 reflects hairpin traffic"},
		{name: "not permitted", err: netops.Errorf(netops.ErrPermission, "no"), status: StatusSkip, finding: "not permitted", fix: "run as root"},
		{name: "error", err: errors.New("netlink: boom"), status: StatusWarn, finding: "could not check bridge ports: netlink: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := checkBridgeHairpin(&doctorFacts{bridges: tt.bridges, bridgesErr: tt.err})
			if c.Status != tt.status || !strings.Contains(c.Finding, tt.finding) || !strings.HasPrefix(c.Fix, tt.fix) || (tt.fix == "") != (c.Fix == "") {
				t.Errorf("got %s %q fix %q\nwant %s %q fix %q", c.Status, c.Finding, c.Fix, tt.status, tt.finding, tt.fix)
			}
		})
	}
}

func TestDoctorSysctls(t *testing.T) {
	f := healthyFacts()
	f.netns = "node1"
	f.brNfCallIPTables = sysctlFact{Missing: true}
	c := checkBrNetfilter(f)
	if c.Status != StatusFail || !strings.Contains(c.Finding, "the br_netfilter module is not loaded") ||
		!strings.HasPrefix(c.Fix, "modprobe br_netfilter && ip netns exec node1 sysctl -w net.bridge.bridge-nf-call-iptables=1") {
		t.Errorf("missing: %s %q %q", c.Status, c.Finding, c.Fix)
	}
	f.netns = "/proc/7/ns/net"
	f.ipForward = sysctlFact{Value: "0"}
	if c := checkIPForward(f); c.Status != StatusFail || !strings.HasPrefix(c.Fix, "nsenter --net=/proc/7/ns/net sysctl -w net.ipv4.ip_forward=1") {
		t.Errorf("ip_forward 0: %s %q", c.Status, c.Fix)
	}
	f.netns = "odd name"
	if c := checkIPForward(f); !strings.HasPrefix(c.Fix, "ip netns exec 'odd name' sysctl") {
		t.Errorf("quoting: %q", c.Fix)
	}
	f.ipForward = sysctlFact{Err: netops.Errorf(netops.ErrPermission, "read: denied")}
	if c := checkIPForward(f); c.Status != StatusSkip {
		t.Errorf("not permitted: %s", c.Status)
	}
}

func TestDoctorKubeProxyAndMasquerade(t *testing.T) {
	f := healthyFacts()
	f.services.Backend = kubeproxy.BackendNFTables
	f.services.BackendsWithRules = []kubeproxy.Backend{kubeproxy.BackendNFTables}
	f.services.Masquerade = kubeproxy.MasqueradePlumbing{MarkMasq: false, PostroutingMasquerade: true, PostroutingHooked: false}
	if c := checkKubeProxy(f); c.Status != StatusPass || c.Finding != "kube-proxy's rules are in nftables (1 service port)" {
		t.Errorf("nftables: %s %q", c.Status, c.Finding)
	}
	c := checkMasquerade(f)
	if c.Status != StatusFail || c.Fix != f.kubeProxyRestart() ||
		c.Finding != "mark-for-masquerade does not set the masquerade mark; nat-postrouting does not jump to masquerading, so its masquerade rule never runs: a pod's connection to itself through a Service keeps its own source address, so it gets no reply" {
		t.Errorf("nftables masquerade: %s %q", c.Status, c.Finding)
	}

	f.servicesErr = errors.New("iptables-nft-save: exit status 4")
	for _, c := range []Check{checkKubeProxy(f), checkMasquerade(f), checkServices(f)[0]} {
		if c.ID == CheckKubeProxy && (c.Status != StatusWarn || !strings.Contains(c.Finding, "exit status 4")) ||
			c.ID != CheckKubeProxy && (c.Status != StatusSkip || c.Finding != "kube-proxy's rules could not be read") {
			t.Errorf("read error: %s %s %q", c.ID, c.Status, c.Finding)
		}
	}
	f.servicesErr = netops.Errorf(netops.ErrPermission, "reading kube-proxy's rules needs CAP_NET_ADMIN: run as root")
	if c := checkKubeProxy(f); c.Status != StatusSkip || c.Fix != "run as root" {
		t.Errorf("not root: %s %q", c.Status, c.Fix)
	}
}

// No rules in the backends that could be read is not "kube-proxy is not
// running" when another backend could not be read at all (the image has
// no iptables-legacy-save): the finding says which, never the wrong fix.
func TestDoctorKubeProxyUnreadableBackend(t *testing.T) {
	f := healthyFacts()
	f.services = &kubeproxy.Result{
		Checked:           []kubeproxy.Backend{kubeproxy.BackendIPTablesNFT, kubeproxy.BackendNFTables},
		BackendsWithRules: []kubeproxy.Backend{},
		Warnings:          []string{"iptables-legacy-save not found in PATH: install the iptables package"},
	}
	c := checkKubeProxy(f)
	want := "no kube-proxy rules in iptables-nft, nftables, but iptables-legacy could not be read (see details): kube-proxy's rules may be there; the Service checks are skipped"
	if c.Status != StatusWarn || c.Finding != want || strings.Contains(c.Fix, "kubectl") || !slices.Contains(c.Details, f.services.Warnings[0]) {
		t.Errorf("unreadable backend: %s %q fix %q details %q", c.Status, c.Finding, c.Fix, c.Details)
	}
	f.services.Checked = []kubeproxy.Backend{kubeproxy.BackendIPTablesNFT, kubeproxy.BackendIPTablesLegacy, kubeproxy.BackendNFTables}
	if c := checkKubeProxy(f); c.Status != StatusWarn || !strings.Contains(c.Finding, "kube-proxy is not running here") {
		t.Errorf("every backend read: %s %q", c.Status, c.Finding)
	}
}

// The kube-proxy restart fix names the node when it is known, and says
// where the name came from; the summary names the namespace by its label.
func TestDoctorKubeProxyRestartNamesNode(t *testing.T) {
	const restart = "restart kube-proxy on this node so it rewrites its rules: kubectl -n kube-system delete pod -l k8s-app=kube-proxy --field-selector spec.nodeName="
	f := healthyFacts()
	f.services.Masquerade.PostroutingHooked = false
	tests := []struct{ node, want string }{
		{"", restart + "NODE (NODE: the name of the Node whose namespace this is)"},
		{"worker-1", restart + "worker-1 (this host's name; kubelet's --hostname-override may differ)"},
		{"odd name", restart + "'odd name' (this host's name; kubelet's --hostname-override may differ)"},
	}
	for _, tt := range tests {
		f.node = tt.node
		if c := checkMasquerade(f); c.Status != StatusFail || c.Fix != tt.want {
			t.Errorf("node %q: %s %q, want %q", tt.node, c.Status, c.Fix, tt.want)
		}
	}
	f.label = "node1"
	if r := diagnose(f); r.Summary.Netns != "node1" {
		t.Errorf("summary netns %q, want the label node1", r.Summary.Netns)
	}
}

func TestDoctorConntrack(t *testing.T) {
	tests := []struct {
		k       conntrackCounters
		err     error
		status  CheckStatus
		finding string
		fix     string
	}{
		{k: conntrackCounters{Entries: 1, MaxEntries: 100}, status: StatusPass, finding: "no conntrack insert failures or drops (1 entry of 100)"},
		{k: conntrackCounters{InsertFailed: 3, Invalid: 50, MaxEntries: 100}, status: StatusWarn, finding: "conntrack lost connections: insert_failed 3 (watch", fix: "insert_failed counts NAT clashes"},
		// A clash counts in drop too: that alone is no full table.
		{k: conntrackCounters{InsertFailed: 2, Drop: 2, MaxEntries: 100}, status: StatusWarn, finding: "insert_failed 2, drop 2 (watch", fix: "(kube-proxy 1.16+)"},
		{k: conntrackCounters{Drop: 4, EarlyDrop: 9, Entries: 100, MaxEntries: 100}, status: StatusWarn,
			finding: "drop 4, early_drop 9, table 100% full", fix: "the table fills up: raise it, e.g. sysctl -w net.netfilter.nf_conntrack_max=262144"},
		{k: conntrackCounters{Entries: 950000, MaxEntries: 1000000}, status: StatusWarn, finding: "table 95% full", fix: "nf_conntrack_max=2000000"},
		{err: netops.Errorf(netops.ErrNotFound, "conntrack is not loaded in netns host (nf_conntrack_netlink): nothing to check"), status: StatusSkip, finding: "conntrack is not loaded"},
		{err: netops.Errorf(netops.ErrPermission, "needs CAP_NET_ADMIN"), status: StatusSkip, finding: "not permitted", fix: "run as root"},
	}
	for i, tt := range tests {
		c := checkConntrack(&doctorFacts{conntrack: tt.k, conntrackErr: tt.err})
		if c.Status != tt.status || !strings.Contains(c.Finding, tt.finding) || !strings.Contains(c.Fix, tt.fix) || (tt.fix == "") != (c.Fix == "") {
			t.Errorf("%d: got %s %q fix %q\nwant %s %q fix %q", i, c.Status, c.Finding, c.Fix, tt.status, tt.finding, tt.fix)
		}
	}
}

func TestNormalizeMAC(t *testing.T) {
	for in, want := range map[string]string{
		"2:42:a:11:0:1":                       "02:42:0a:11:00:01",
		"02:42:0A:11:00:01":                   "02:42:0a:11:00:01",
		"2:42:a:11:0:1/ff:ff:ff:ff:ff:ff":     "02:42:0a:11:00:01",
		"02:42:0a:11:00":                      "",
		"02:42:0a:11:00:001":                  "",
		"veth+":                               "",
		"02:42:0a:11:00:0g":                   "",
		"":                                    "",
		"2:42:a:11::1":                        "",
		"02:42:0a:11:00:01:02:42:0a:11:00:01": "",
	} {
		if got := normalizeMAC(in); got != want {
			t.Errorf("normalizeMAC(%q) = %q, want %q", in, got, want)
		}
	}
}

// Duplicate suppression found in captured ebtables-legacy listings (the
// nf_tables rules are read from the kernel: TestFindDedupNFT).
func TestFindDedupEbtables(t *testing.T) {
	const mac = "02:42:0a:11:00:01"
	tests := []struct {
		file, mac string
		rule      string
		where     string
	}{
		{"ebtables-legacy-kubenet.txt", mac, "-p IPv4 -s 2:42:a:11:0:1 -o veth+ --ip-src 10.244.0.0/24 -j DROP", "ebtables-legacy filter chain KUBE-DEDUP"},
		{"ebtables-legacy-empty.txt", mac, "", ""},
		{"ebtables-legacy-empty.txt", "02:42:0a:11:00:99", "-p IPv4 -s 2:42:a:11:0:99 -o veth+ -j DROP", "ebtables-legacy filter chain OUTPUT"},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(filepath.Join(doctorTestdata, tt.file))
		if err != nil {
			t.Fatal(err)
		}
		rule, where := findDedupEbtables(string(b), tt.mac)
		if !strings.HasSuffix(rule, tt.rule) || (tt.rule == "") != (rule == "") || where != tt.where {
			t.Errorf("%s with %s: %q in %q, want %q in %q", tt.file, tt.mac, rule, where, tt.rule, tt.where)
		}
	}
}

// The whole report for a healthy and a broken node, against golden JSON.
func TestDoctorGolden(t *testing.T) {
	for name, f := range map[string]*doctorFacts{"healthy": healthyFacts(), "broken": brokenFacts()} {
		t.Run(name, func(t *testing.T) {
			r := diagnose(f)
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetIndent("", "  ")
			enc.SetEscapeHTML(false)
			if err := enc.Encode(r); err != nil {
				t.Fatal(err)
			}
			b := buf.Bytes()
			golden := filepath.Join(doctorTestdata, name+".golden")
			if *updateDoctor {
				if err := os.WriteFile(golden, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (create it with -update-doctor)", err)
			}
			if !bytes.Equal(b, want) {
				t.Errorf("report differs from %s (rerun with -update-doctor and review the diff):\n%s", golden, b)
			}
			// The schema: every check has every key; details is [] not null.
			var raw struct {
				Checks  []map[string]any `json:"checks"`
				Summary map[string]any   `json:"summary"`
			}
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			for _, c := range raw.Checks {
				for _, k := range []string{"id", "status", "finding", "fix", "details"} {
					if _, ok := c[k]; !ok {
						t.Errorf("check %v lacks %q", c["id"], k)
					}
				}
				if _, ok := c["details"].([]any); !ok {
					t.Errorf("check %v: details %v is not a list", c["id"], c["details"])
				}
			}
			for _, k := range []string{"status", "pass", "warn", "fail", "skip", "netns"} {
				if _, ok := raw.Summary[k]; !ok {
					t.Errorf("summary lacks %q", k)
				}
			}
		})
	}
	h, b := diagnose(healthyFacts()).Summary, diagnose(brokenFacts()).Summary
	if h.Status != StatusPass || h.Fail+h.Warn+h.Skip != 0 || h.Pass != 8 || h.Netns != "host" {
		t.Errorf("healthy summary %+v", h)
	}
	if b.Status != StatusFail || b.Fail != 5 || b.Warn != 3 || b.Pass != 0 || b.Netns != "node1" {
		t.Errorf("broken summary %+v", b)
	}
	// The check IDs are in the documented order.
	var ids []string
	for _, c := range diagnose(healthyFacts()).Checks {
		ids = append(ids, c.ID)
	}
	if got := strings.Join(ids, " "); got != "bridge-hairpin br-netfilter ip-forward kube-proxy masquerade services cni-config conntrack" {
		t.Errorf("checks in order %s", got)
	}
}

// kube-proxy's nftables mode since 1.36 masquerades hairpin connections
// through the hairpin-connections set, which lists this node's endpoints
// only: another node's endpoint without an entry is no fault, a local one
// is, and the finding names the set, not an iptables rule.
func TestDoctorHairpinSet(t *testing.T) {
	f := healthyFacts()
	f.services.Backend = kubeproxy.BackendNFTables
	f.services.BackendsWithRules = []kubeproxy.Backend{kubeproxy.BackendNFTables}
	f.services.Masquerade = kubeproxy.MasqueradePlumbing{MarkMasq: true, PostroutingMasquerade: true, PostroutingHooked: true, HairpinSet: true, Mark: "0x4000"}
	f.services.Services = []kubeproxy.Service{{Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP", ClusterIP: "10.96.0.10", Port: 80,
		Endpoints: []kubeproxy.Endpoint{
			{IP: "10.244.0.11", Port: 8080, HairpinMasq: true},
			{IP: "10.244.1.7", Port: 8080}, // another node's
		}}}
	if c := checkMasquerade(f); c.Status != StatusPass || !strings.Contains(strings.Join(c.Details, "\n"), "hairpin-connections") {
		t.Errorf("masquerade with the hairpin set: %s %q %q", c.Status, c.Finding, c.Details)
	}
	if c := checkServices(f)[0]; c.Status != StatusPass {
		t.Errorf("a remote endpoint outside the hairpin set: %s %q", c.Status, c.Finding)
	}
	f.services.Services[0].Endpoints[0].HairpinMasq = false
	c := checkServices(f)[0]
	if c.Status != StatusFail || !strings.Contains(c.Finding, "10.244.0.11 . 10.244.0.11 . tcp . 8080 in the hairpin-connections set") {
		t.Errorf("a local endpoint outside the hairpin set: %s %q", c.Status, c.Finding)
	}
	// iptables mode writes the rule for every endpoint: a remote one
	// without it is still a fault.
	f = healthyFacts()
	f.services.Services[0].Endpoints = append(f.services.Services[0].Endpoints, kubeproxy.Endpoint{IP: "10.244.1.7", Port: 8080})
	if c := checkServices(f)[0]; c.Status != StatusFail {
		t.Errorf("iptables mode, remote endpoint without its rule: %s %q", c.Status, c.Finding)
	}
}

// bridge-hairpin judges pods' ports that can carry traffic: an uplink with
// hairpin off is right, and a down or STP-disabled pod port is not a fault.
func TestDoctorBridgeHairpinPodPortsOnly(t *testing.T) {
	f := healthyFacts()
	nic := bridgeports.Port{Bridge: "cni0", Name: "enp1s0", PodIPs: []string{}, OperState: "up", State: "forwarding"}
	vx := bridgeports.Port{Bridge: "cni0", Name: "vxlan0", Kind: "vxlan", PodIPs: []string{}, OperState: "up", State: "forwarding"}
	down := port("cni0", "veth9", false)
	down.OperState = "down"
	disabled := port("cni0", "veth8", false)
	disabled.State = "disabled"
	f.bridges[0].Ports = append(f.bridges[0].Ports, nic, vx, down, disabled)
	c := checkBridgeHairpin(f)
	if c.Status != StatusPass {
		t.Fatalf("uplinks and idle ports with hairpin off: %s %q", c.Status, c.Finding)
	}
	details := strings.Join(c.Details, "\n")
	for _, want := range []string{"enp1s0 (a physical NIC (an uplink))", "vxlan0 (a vxlan uplink)", "veth9 (down)", "veth8 (STP disabled)"} {
		if !strings.Contains(details, want) {
			t.Errorf("details lack %q: %q", want, c.Details)
		}
	}
	f.bridges[0].Ports[0].Hairpin = false
	if c := checkBridgeHairpin(f); c.Status != StatusFail || !strings.Contains(c.Finding, "veth1") || strings.Contains(c.Finding, "enp1s0") {
		t.Errorf("a pod port off: %s %q", c.Status, c.Finding)
	}
}

// doctor --service selects through kubeproxy.ServiceArg, as services does:
// one check per selected service port, a WARN for a selector that selects
// none.
func TestCheckServicesSelects(t *testing.T) {
	web := webService()
	web6 := webService()
	web6.ClusterIP, web6.Family = "fd00::10", 6
	db := webService()
	db.Name, db.PortName, db.ClusterIP, db.Port = "db", "pg", "10.96.0.20", 5432
	tests := []struct {
		sel  string
		want []kubeproxy.Service
	}{
		{"10.96.0.10:http", []kubeproxy.Service{web}},
		{"default/web", []kubeproxy.Service{web, web6}},
		{"[fd00::10]:80", []kubeproxy.Service{web6}},
		{"default/db:5432", []kubeproxy.Service{db}},
		{"default/db:http", nil},
	}
	for _, tt := range tests {
		f := healthyFacts()
		f.services.Services = []kubeproxy.Service{web, web6, db}
		f.selectors = []string{tt.sel}
		if err := kubeproxy.ValidateServiceSelector(tt.sel); err != nil {
			t.Fatalf("doctor %s: %v", tt.sel, err)
		}
		var ids, wantIDs []string
		for _, c := range checkServices(f) {
			ids = append(ids, c.ID)
		}
		for _, s := range tt.want {
			wantIDs = append(wantIDs, CheckService+":"+serviceName(s))
		}
		if len(tt.want) == 0 {
			wantIDs = []string{CheckService + ":" + tt.sel}
		}
		if !slices.Equal(ids, wantIDs) {
			t.Errorf("doctor %s checks %v, want %v", tt.sel, ids, wantIDs)
		}
	}
}
