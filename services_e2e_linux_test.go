package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
)

// runWithEnv runs hairpinctl with extra environment variables (PATH,
// XTABLES_LOCKFILE).
func runWithEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return runCmd(t, nil, env, args...)
}

// loadServices loads a fixture of netops/kubeproxy/testdata/services into the lab.
func loadServices(t *testing.T, l *lab.Lab, tool, fixture string) {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("netops", "kubeproxy", "testdata", "services", fixture))
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	if tool == "nft" {
		args = []string{"-f", "-"}
	}
	if _, err := l.Exec(string(text), tool, args...); err != nil {
		t.Fatalf("load %s: %v", fixture, err)
	}
}

type jsonEndpoint struct {
	IP          string  `json:"ip"`
	Port        int     `json:"port"`
	Probability float64 `json:"probability"`
	Chain       string  `json:"chain"`
	HairpinMasq bool    `json:"hairpinMasq"`
}

type jsonService struct {
	Namespace       string         `json:"namespace"`
	Name            string         `json:"name"`
	PortName        string         `json:"portName"`
	Protocol        string         `json:"protocol"`
	ClusterIP       string         `json:"clusterIP"`
	Port            int            `json:"port"`
	Chain           string         `json:"chain"`
	Endpoints       []jsonEndpoint `json:"endpoints"`
	NoEndpoints     bool           `json:"noEndpoints"`
	NodePorts       []int          `json:"nodePorts"`
	LoadBalancerIPs []string       `json:"loadBalancerIPs"`
	Backend         string         `json:"backend"`
	Raw             []string       `json:"raw"`
}

func decodeServices(t *testing.T, r result) []jsonService {
	t.Helper()
	var svcs []jsonService
	if err := json.Unmarshal([]byte(r.stdout), &svcs); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	return svcs
}

// The lab's Service, loaded with each iptables backend's restore tool,
// shows with its endpoint and the hairpin masquerade rule, in the table
// and in JSON.
func TestE2EServicesLab(t *testing.T) {
	for _, tt := range []struct{ restore, backend string }{
		{"iptables-nft-restore", "iptables-nft"},
		{"iptables-legacy-restore", "iptables-legacy"},
	} {
		t.Run(tt.backend, func(t *testing.T) {
			l := newLab(t, lab.Options{Pods: 2, Restore: tt.restore, Prefix: "hpsve"})
			ep := l.Pod(1).IP.String() + ":8080"
			r := run(t, "services", "--netns", l.Node)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("services: %+v", r)
			}
			lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
			want := []string{
				"SERVICE           ADDRESS            SHARE  HAIRPIN-MASQ  AFFINITY",
				"default/web:http  10.96.0.10:80/TCP                       -",
				"  endpoint        " + ep + "   1      yes           -",
				// The lab's hand-made pod is in no CNI cache.
				"    pod           unknown",
			}
			if strings.Join(lines, "\n") != strings.Join(want, "\n") {
				t.Errorf("table:\n%s\nwant:\n%s", r.stdout, strings.Join(want, "\n"))
			}

			r = run(t, "-o", "json", "services", "--netns", l.Node, "10.96.0.10")
			svcs := decodeServices(t, r)
			if r.code != 0 || len(svcs) != 1 {
				t.Fatalf("json: %+v", r)
			}
			s := svcs[0]
			if s.Namespace != "default" || s.Name != "web" || s.PortName != "http" || s.Protocol != "TCP" || s.ClusterIP != "10.96.0.10" || s.Port != 80 || s.Backend != tt.backend || !strings.HasPrefix(s.Chain, "KUBE-SVC-") {
				t.Errorf("service %+v", s)
			}
			if len(s.Endpoints) != 1 || s.Endpoints[0].IP != l.Pod(1).IP.String() || s.Endpoints[0].Port != 8080 || !s.Endpoints[0].HairpinMasq || s.Endpoints[0].Probability != 1 || !strings.HasPrefix(s.Endpoints[0].Chain, "KUBE-SEP-") {
				t.Errorf("endpoints %+v", s.Endpoints)
			}
			for _, key := range []string{`"namespace"`, `"name"`, `"portName"`, `"protocol"`, `"clusterIP"`, `"port"`, `"chain"`, `"endpoints"`, `"probability"`, `"hairpinMasq"`} {
				if !strings.Contains(r.stdout, key) {
					t.Errorf("JSON lacks %s", key)
				}
			}

			// Selectors as the table prints them: IP:PORT, NS/NAME:PORT by number.
			for _, sel := range []string{"10.96.0.10:80", "default/web:80", "10.96.0.10:http"} {
				r = run(t, "-o", "json", "services", "--netns", l.Node, sel)
				if svcs := decodeServices(t, r); r.code != 0 || len(svcs) != 1 || svcs[0].Name != "web" {
					t.Errorf("services %s: %+v", sel, r)
				}
			}
			if r = run(t, "services", "--netns", l.Node, "10.96.0.10:81"); r.code != 2 || !strings.Contains(r.stderr, "no service matches 10.96.0.10:81") {
				t.Errorf("services 10.96.0.10:81: %+v", r)
			}

			// --raw: the KUBE-SERVICES jump, the KUBE-SVC chain, the KUBE-SEP chain.
			r = run(t, "services", "default/web", "--raw", "--netns", l.Node, "--backend", tt.backend)
			for _, want := range []string{"-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp", "-j " + s.Chain, "-A " + s.Endpoints[0].Chain + " -s " + l.Pod(1).IP.String() + "/32", "--to-destination " + ep} {
				if r.code != 0 || !strings.Contains(r.stdout, want) {
					t.Errorf("--raw lacks %q:\n%s", want, r.stdout)
				}
			}
		})
	}
}

// Every variant of kube-proxy's rules, through the binary: the old
// release's (KUBE-XLB, masquerade in KUBE-SERVICES), the filter table's
// REJECT, IPv6, and nftables mode.
func TestE2EServicesFixtures(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Restore: "none", Prefix: "hpsve"})
	loadServices(t, l, "iptables-legacy-restore", "iptables-old.rules")
	loadServices(t, l, "ip6tables-legacy-restore", "ip6tables-modern.rules")

	r := run(t, "services", "--netns", l.Node, "-o", "json", "ns2/svc2:p80", "ns6/svc6")
	svcs := decodeServices(t, r)
	if r.code != 0 || len(svcs) != 2 {
		t.Fatalf("%+v", r)
	}
	if s := svcs[0]; s.Chain != "KUBE-SVC-GNZBNJ2PO5MGZ6GT" || len(s.NodePorts) != 1 || s.NodePorts[0] != 3001 || len(s.LoadBalancerIPs) != 1 || s.LoadBalancerIPs[0] != "1.2.3.4" || s.Backend != "iptables-legacy" {
		t.Errorf("old LB service: %+v", s)
	}
	if s := svcs[1]; !s.NoEndpoints || len(s.Endpoints) != 0 || s.ClusterIP != "172.30.0.46" || !strings.Contains(r.stdout, `"endpoints": []`) {
		t.Errorf("no-endpoints service: %+v", s)
	}

	r = run(t, "services", "--netns", l.Node, "-6", "fd00:10:96::42")
	if r.code != 0 || !strings.Contains(r.stdout, "[fd00:10:96::42]:80/TCP") || !strings.Contains(r.stdout, "[fd00:10:180::3]:8080") {
		t.Errorf("-6: %+v", r)
	}
	for _, ln := range strings.Split(r.stdout, "\n") {
		if len(ln) > 80 {
			t.Errorf("wider than 80 columns: %q", ln)
		}
	}

	n := newLab(t, lab.Options{Pods: 1, Restore: "none", Prefix: "hpsve"})
	loadServices(t, n, "nft", "nftables-modern.nft")
	r = run(t, "services", "--netns", n.Node, "-o", "json", "ns5/svc5")
	svcs = decodeServices(t, r)
	if r.code != 0 || len(svcs) != 1 || svcs[0].Backend != "nftables" || len(svcs[0].Endpoints) != 1 || !svcs[0].Endpoints[0].HairpinMasq || !strings.Contains(r.stdout, `"sessionAffinitySeconds": 10800`) {
		t.Errorf("nftables: %+v", r)
	}
	r = run(t, "services", "--netns", n.Node, "ns1/svc1", "--raw")
	if r.code != 0 || !strings.Contains(r.stdout, "add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade") {
		t.Errorf("nftables --raw: %+v", r)
	}
}

// Split brain: rules in both iptables backends, a warning on stderr, data
// on stdout.
func TestE2EServicesSplitBrain(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Restore: "iptables-nft-restore", Prefix: "hpsve"})
	loadServices(t, l, "iptables-legacy-restore", "iptables-modern.rules")
	r := run(t, "services", "--netns", l.Node, "-4", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stderr, "split brain: kube-proxy rules in both iptables-nft (2 rules in KUBE-SERVICES) and iptables-legacy (13 rules); showing iptables-legacy, which has more;") {
		t.Fatalf("%+v", r)
	}
	if svcs := decodeServices(t, r); len(svcs) != 9 || svcs[0].Backend != "iptables-legacy" {
		t.Errorf("showed %d services from %s", len(svcs), svcs[0].Backend)
	}
	r = run(t, "services", "--netns", l.Node, "--backend", "iptables-nft", "10.96.0.10")
	if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "default/web:http") {
		t.Errorf("--backend iptables-nft: %+v", r)
	}
}

// The xtables lock held by another process: a bounded wait, then a clear
// error; never a hang.
func TestE2EServicesXtablesLock(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Restore: "iptables-nft-restore", Prefix: "hpsve"})
	loadServices(t, l, "iptables-legacy-restore", "iptables-modern.rules")
	lock := labtest.HoldXtablesLock(t)
	// --wait takes a duration like every other option, and whole
	// seconds as iptables -w does.
	for _, wait := range []string{"1", "1s", "2s"} {
		start := time.Now()
		r := runWithEnv(t, []string{"XTABLES_LOCKFILE=" + lock}, "services", "--netns", l.Node, "--wait", wait)
		if d := time.Since(start); r.code != 1 || d > 10*time.Second {
			t.Errorf("--wait %s: exit %d after %v: %+v", wait, r.code, d, r)
		}
		secs := strings.TrimSuffix(wait, "s")
		oneLineErr(t, r, "another process holds the xtables lock ("+lock+"); gave up after "+secs+"s: retry, or raise --wait")
	}
}

func TestE2EServicesBadInput(t *testing.T) {
	empty := newLab(t, lab.Options{Pods: 1, Restore: "none", Prefix: "hpsve"})
	full := newLab(t, lab.Options{Pods: 1, Restore: "iptables-nft-restore", Prefix: "hpsve"})
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	tests := []struct {
		name string
		env  []string
		cred *syscall.Credential
		args []string
		code int
		msg  string
	}{
		{"malformed IP", nil, nil, []string{"services", "10.96.0.300", "--netns", full.Node}, 2, `"10.96.0.300" is neither an IP address, IP:PORT, NS/NAME nor NS/NAME:PORT`},
		{"malformed name", nil, nil, []string{"services", "Default/web", "--netns", full.Node}, 2, `service name "Default/web": the namespace must be a DNS label`},
		{"empty port", nil, nil, []string{"services", "default/web:", "--netns", full.Node}, 2, "the port after ':' is empty"},
		{"bad backend", nil, nil, []string{"services", "--backend", "ipvs", "--netns", full.Node}, 2, `--backend "ipvs": use auto, iptables, iptables-nft, iptables-legacy or nftables`},
		{"bad wait", nil, nil, []string{"services", "--wait", "0", "--netns", full.Node}, 2, "--wait 0: give at least 1 second"},
		{"wait not a duration", nil, nil, []string{"services", "--wait", "5x", "--netns", full.Node}, 2, `services: invalid value "5x" for --wait: use a duration such as 5s`},
		{"bad output", nil, nil, []string{"services", "-o", "yaml", "--netns", full.Node}, 2, `unknown output format "yaml"`},
		{"no such service", nil, nil, []string{"services", "10.96.9.9", "--netns", full.Node}, 2, "no service matches 10.96.9.9 in iptables-nft"},
		{"no rules anywhere", nil, nil, []string{"services", "--netns", empty.Node}, 1, "no kube-proxy rules found in netns " + empty.Node + " (IPv4 and IPv6, checked: iptables-nft, iptables-legacy, nftables)"},
		{"no rules in nftables", nil, nil, []string{"services", "--backend", "nftables", "--netns", full.Node}, 1, "checked: nftables"},
		{"unprivileged", nil, nobody, []string{"services"}, 1, "services: reading kube-proxy's rules needs CAP_NET_ADMIN: run as root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r result
			if tt.cred != nil {
				r = runAs(t, tt.cred, tt.args...)
			} else {
				r = runWithEnv(t, tt.env, tt.args...)
			}
			if r.code != tt.code {
				t.Errorf("exit %d, want %d (%+v)", r.code, tt.code, r)
			}
			oneLineErr(t, r, tt.msg)
		})
	}

	// iptables-nft's rules are read from nf_tables over netlink: no
	// iptables binary is needed, for a full read or a lookup.
	for _, args := range [][]string{
		{"services", "--netns", full.Node},
		{"services", "--netns", full.Node, "--backend", "iptables-nft"},
		{"services", "--netns", full.Node, "--backend", "iptables-nft", "10.96.0.10", "--raw"},
	} {
		t.Run("no iptables binary "+strings.Join(args[3:], " "), func(t *testing.T) {
			r := runWithEnv(t, []string{"PATH=/nonexistent"}, args...)
			if r.code != 0 || !strings.Contains(r.stdout, "default/web:http") {
				t.Fatalf("exit %d, want 0 and default/web:http listed (%+v)", r.code, r)
			}
		})
	}

	t.Run("some filters match", func(t *testing.T) {
		r := run(t, "services", "10.96.0.10", "ns/nope", "--netns", full.Node)
		if r.code != 3 || !strings.Contains(r.stdout, "default/web:http") || !strings.Contains(r.stderr, "no service matches ns/nope") || !strings.Contains(r.stderr, "1 of 2 filters matched nothing") {
			t.Errorf("%+v", r)
		}
	})
	t.Run("help", func(t *testing.T) {
		r := run(t, "services", "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "EXAMPLES:") || !strings.Contains(r.stdout, "--backend") || strings.Contains(r.stdout, "EXIT STATUS") {
			t.Errorf("%+v", r)
		}
	})
}
