package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// cniLab is a lab node with two pods attached through libcni (the real
// bridge and host-local plugins; libcni writes its result cache) besides
// the lab's two hand-made pods, which no cache names.
func cniLab(t *testing.T) (*lab.Lab, *lab.CNI, []*lab.CNIPod) {
	t.Helper()
	labtest.RequireCNIPlugins(t)
	l := newLab(t, lab.Options{Pods: 2, Restore: "none"})
	cni, err := l.NewCNI(lab.CNIConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var made []*lab.CNIPod
	for _, n := range [][2]string{{"default", "web-7d9f6c-x2kq"}, {"shop", "db-0"}} {
		p, err := l.NewCNIPod(n[0], n[1])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cni.Attach(p, "eth0"); err != nil {
			t.Fatal(err)
		}
		made = append(made, p)
	}
	return l, cni, made
}

func TestE2EPortsPods(t *testing.T) {
	l, cni, made := cniLab(t)
	web, db := made[0], made[1]
	webPort, dbPort := web.Attachments[0].HostVeth, db.Attachments[0].HostVeth
	nsArgs := []string{"--netns", l.Node, "--cni-cache", cni.CacheDir}

	// JSON: the pod object carries what CNI ADD was given.
	r := run(t, append([]string{"ports", "-o", "json"}, nsArgs...)...)
	var ports []struct {
		Name string
		Pod  *struct {
			Namespace, Name, UID, ContainerID, Network, Interface, Source string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &ports); err != nil || r.code != 0 {
		t.Fatalf("ports -o json: %v %+v", err, r)
	}
	if strings.Count(r.stdout, `"pod":`) != 2 {
		t.Errorf("want a pod object for the two CNI pods only, none for the unknown ones:\n%s", r.stdout)
	}
	named := map[string]string{}
	for _, p := range ports {
		if p.Pod == nil {
			continue
		}
		named[p.Name] = p.Pod.Namespace + "/" + p.Pod.Name
		want := web
		if p.Name == dbPort {
			want = db
		}
		if p.Pod.UID != want.UID || p.Pod.ContainerID != want.ContainerID || p.Pod.Source != "cache" || p.Pod.Interface != "eth0" || p.Pod.Network != cni.Network {
			t.Errorf("%s: pod %+v, want %s/%s uid %s container %s", p.Name, *p.Pod, want.Namespace, want.Name, want.UID, want.ContainerID)
		}
	}
	if len(named) != 2 || named[webPort] != "default/web-7d9f6c-x2kq" || named[dbPort] != "shop/db-0" {
		t.Errorf("named ports %v, want %s and %s named", named, webPort, dbPort)
	}

	// Table: a POD column, rows within 80 columns.
	r = run(t, append([]string{"ports"}, nsArgs...)...)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != 0 || !strings.HasSuffix(strings.TrimSpace(lines[0]), "POD") {
		t.Fatalf("ports: %+v", r)
	}
	for _, ln := range lines {
		if len(ln) > 80 {
			t.Errorf("%d columns: %q", len(ln), ln)
		}
		f := strings.Fields(ln)
		switch f[1] {
		case webPort:
			if f[len(f)-1] != "default/web-7d9f6c-x2kq" {
				t.Errorf("web row %q", ln)
			}
		case "veth1", "veth2":
			if f[len(f)-1] != "-" {
				t.Errorf("hand-made pod row %q, want POD -", ln)
			}
		}
	}

	// --pod selects by shell pattern on namespace/name.
	r = run(t, append([]string{"ports", "-q", "--pod", "default/web-*"}, nsArgs...)...)
	if r.code != 0 || r.stdout != webPort+"\n" {
		t.Errorf("ports --pod default/web-*: %+v", r)
	}
	r = run(t, append([]string{"ports", "-q", "--pod", "*/*"}, nsArgs...)...)
	if got := strings.Fields(r.stdout); r.code != 0 || len(got) != 2 || !slices.Contains(got, webPort) || !slices.Contains(got, dbPort) {
		t.Errorf("ports --pod */*: %+v", r)
	}
	r = run(t, append([]string{"ports", "--pod", "[x"}, nsArgs...)...)
	if r.code != 2 {
		t.Errorf("bad pattern: exit %d", r.code)
	}
	oneLineErr(t, r, `--pod "[x" is not a shell pattern`)

	// pod/NS/NAME where an interface is accepted.
	r = run(t, append([]string{"ports", "-q", "pod/shop/db-0"}, nsArgs...)...)
	if r.code != 0 || r.stdout != dbPort+"\n" {
		t.Errorf("ports pod/shop/db-0: %+v", r)
	}
	r = run(t, append([]string{"enable", "pod/default/web-7d9f6c-x2kq"}, nsArgs...)...)
	if r.code != 0 || !hairpinOf(t, l, webPort) || hairpinOf(t, l, dbPort) {
		t.Errorf("enable pod/default/web-7d9f6c-x2kq: %+v (hairpin %v)", r, hairpinOf(t, l, webPort))
	}
	r = run(t, append([]string{"disable", "pod/default/web-7d9f6c-x2kq"}, nsArgs...)...)
	if r.code != 0 || hairpinOf(t, l, webPort) {
		t.Errorf("disable pod/default/web-7d9f6c-x2kq: %+v", r)
	}
	r = run(t, append([]string{"enable", "pod/default/nope"}, nsArgs...)...)
	if r.code != 2 {
		t.Errorf("enable pod/default/nope: exit %d, want 2 (not found)", r.code)
	}
	oneLineErr(t, r, "pod/default/nope: no bridge port")
	r = run(t, append([]string{"enable", "pod/default"}, nsArgs...)...)
	if r.code != 2 {
		t.Errorf("enable pod/default: exit %d, want 2", r.code)
	}
	oneLineErr(t, r, "write pod/NAMESPACE/NAME")

	// Completion offers the pods.
	r = run(t, "__complete", "enable", "--netns", l.Node, "--cni-cache", cni.CacheDir, "pod/")
	if got := strings.Fields(r.stdout); !slices.Equal(got, []string{"pod/default/web-7d9f6c-x2kq", "pod/shop/db-0"}) {
		t.Errorf("complete enable pod/ = %q", got)
	}
	r = run(t, "__complete", "ports", "--netns", l.Node, "--cni-cache", cni.CacheDir, "--pod", "sh")
	if got := strings.Fields(r.stdout); !slices.Equal(got, []string{"shop/db-0"}) {
		t.Errorf("complete ports --pod sh = %q", got)
	}
}

// A cache that cannot be read: the listing still works, names nothing,
// and says why on stderr.
func TestE2EPortsUnreadableCache(t *testing.T) {
	l, _, _ := cniLab(t)
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "results"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, "ports", "-o", "json", "--netns", l.Node, "--cni-cache", bad)
	if r.code != 0 || strings.Count(r.stdout, `"bridge":`) != 4 || strings.Contains(r.stdout, `"pod":`) {
		t.Errorf("ports with an unreadable cache: %+v", r)
	}
	oneLineErr(t, r, "pod names unknown")
}

// A runtime socket that never answers costs its timeout and a warning:
// the listing stands, exit 0, pods the cache names still named.
func TestE2EPortsSilentRuntime(t *testing.T) {
	l, cni, made := cniLab(t)
	sock := filepath.Join(t.TempDir(), "cri.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	// The hand-made pods are unknown to the cache, so the runtime is asked.
	r := run(t, "ports", "--netns", l.Node, "--cni-cache", cni.CacheDir, "--cri-endpoint", "unix://"+sock)
	if r.code != 0 || !strings.Contains(r.stdout, made[0].Attachments[0].HostVeth+" ") || !strings.Contains(r.stdout, "default/web-7d9f6c-x2kq") {
		t.Errorf("ports with a silent runtime: %+v", r)
	}
	oneLineErr(t, r, "pod names from the runtime unknown")
	if !strings.Contains(r.stderr, sock) {
		t.Errorf("warning does not name the socket: %q", r.stderr)
	}
}

// cniServiceLab is cniLab with default/web:http's endpoints being the CNI
// pod web, the hand-made pod 1 (which nothing names) and an address of
// another node, in kube-proxy's iptables mode.
func cniServiceLab(t *testing.T) (*lab.Lab, *lab.CNI, []*lab.CNIPod) {
	t.Helper()
	l, cni, made := cniLab(t)
	web := made[0]
	eps := []string{web.Attachments[0].IPs[0].String(), l.Pod(1).IP.String(), "10.244.1.7"}
	if err := l.Restore("iptables-nft-restore", lab.ServiceRules("default/web:http", "10.96.0.10", 80, eps, 8080)); err != nil {
		t.Fatal(err)
	}
	return l, cni, made
}

// doctor names the pod behind each port and endpoint it speaks of, in the
// text and in each check's pods, from the CNI cache the runtime keeps.
func TestE2EDoctorPods(t *testing.T) {
	l, cni, made := cniServiceLab(t)
	web := made[0]
	webPort, webIP := web.Attachments[0].HostVeth, web.Attachments[0].IPs[0].String()
	args := []string{"default/web:http", "--netns", l.Node, "--cni-cache", cni.CacheDir}

	r := run(t, append([]string{"doctor"}, args...)...)
	if r.code != 4 || r.stderr != "" {
		t.Fatalf("doctor: exit %d (want 4), stderr %q\n%s", r.code, r.stderr, r.stdout)
	}
	flat := strings.Join(strings.Fields(r.stdout), " ")
	for _, want := range []string{
		"endpoint " + webIP + ":8080 (pod default/web-7d9f6c-x2kq) sits behind " + webPort + " on cni0 with hairpin off",
		"endpoint 10.244.0.11:8080 (pod unknown) sits behind veth1 on cni0 with hairpin off",
		webPort + " (pod default/web-7d9f6c-x2kq)",
		"veth1 (pod unknown)",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("doctor's text lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(flat, "10.244.1.7:8080 (pod") {
		t.Errorf("another node's endpoint got a pod:\n%s", r.stdout)
	}

	r = run(t, append([]string{"doctor", "-o", "json"}, args...)...)
	var d struct {
		Checks []struct {
			ID   string
			Pods []struct {
				Bridge, Port, Endpoint string
				Pod                    *struct{ Namespace, Name, UID, ContainerID, Source string }
			}
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		t.Fatalf("doctor -o json: %v\n%s", err, r.stdout)
	}
	got := map[string]string{} // check id + port + endpoint: pod
	for _, c := range d.Checks {
		for _, p := range c.Pods {
			name := "null"
			if p.Pod != nil {
				name = p.Pod.Namespace + "/" + p.Pod.Name + " " + p.Pod.Source
				if want := made[map[bool]int{true: 0, false: 1}[p.Pod.Name == web.Name]]; p.Pod.UID != want.UID || p.Pod.ContainerID != want.ContainerID {
					t.Errorf("%s %s: pod %+v, want uid %s container %s", c.ID, p.Port, *p.Pod, want.UID, want.ContainerID)
				}
			}
			got[c.ID+" "+p.Port+" "+p.Endpoint] = name
		}
	}
	want := map[string]string{
		"bridge-hairpin " + webPort + " ":                             "default/web-7d9f6c-x2kq cache",
		"bridge-hairpin veth1 ":                                       "null",
		"bridge-hairpin veth2 ":                                       "null",
		"service:default/web:http " + webPort + " " + webIP + ":8080": "default/web-7d9f6c-x2kq cache",
		"service:default/web:http veth1 10.244.0.11:8080":             "null",
	}
	// shop/db-0's port has hairpin off too.
	want["bridge-hairpin "+made[1].Attachments[0].HostVeth+" "] = "shop/db-0 cache"
	if len(got) != len(want) {
		t.Errorf("doctor's pods:\n got %v\nwant %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("doctor's pods[%q] = %q, want %q", k, got[k], v)
		}
	}
}

// services shows the pod of each endpoint on this node; another node's
// endpoint has none, and one nothing names says so.
func TestE2EServicesPods(t *testing.T) {
	l, cni, made := cniServiceLab(t)
	web := made[0]
	webIP := web.Attachments[0].IPs[0].String()
	args := []string{"--netns", l.Node, "--cni-cache", cni.CacheDir}

	r := run(t, append([]string{"services", "-o", "json"}, args...)...)
	var svcs []struct {
		Endpoints []struct {
			IP    string
			Local *bool
			Pod   *struct{ Namespace, Name, UID, ContainerID, Network, Interface, Source string }
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &svcs); err != nil || r.code != 0 || r.stderr != "" {
		t.Fatalf("services -o json: %v %+v", err, r)
	}
	if len(svcs) != 1 || len(svcs[0].Endpoints) != 3 {
		t.Fatalf("services: %s", r.stdout)
	}
	for _, e := range svcs[0].Endpoints {
		switch e.IP {
		case webIP:
			if e.Pod == nil || e.Pod.Namespace != web.Namespace || e.Pod.Name != web.Name || e.Pod.UID != web.UID || e.Pod.ContainerID != web.ContainerID || e.Pod.Source != "cache" || e.Pod.Interface != "eth0" || e.Pod.Network != cni.Network {
				t.Errorf("endpoint %s: pod %+v, want %s/%s from the cache", e.IP, e.Pod, web.Namespace, web.Name)
			}
		case "10.244.0.11", "10.244.1.7":
			if e.Pod != nil || e.Local == nil || *e.Local != (e.IP == "10.244.0.11") {
				t.Errorf("endpoint %s: local %v pod %+v, want no pod", e.IP, e.Local, e.Pod)
			}
		default:
			t.Errorf("endpoint %s not made by the test", e.IP)
		}
	}

	r = run(t, append([]string{"services"}, args...)...)
	if r.code != 0 {
		t.Fatalf("services: %+v", r)
	}
	lines := strings.Split(r.stdout, "\n")
	// Each pod line follows its endpoint's line.
	pods := map[string]string{}
	for i, ln := range lines {
		if f := strings.Fields(ln); len(f) >= 2 && f[0] == "pod" && i > 0 {
			ep := strings.Fields(lines[i-1])
			pods[strings.TrimSuffix(ep[1], ":8080")] = strings.Join(f[1:], " ")
		}
		if len(ln) > 80 {
			t.Errorf("line of %d columns: %q", len(ln), ln)
		}
	}
	want := map[string]string{webIP: "default/web-7d9f6c-x2kq", "10.244.0.11": "unknown"}
	if len(pods) != 2 || pods[webIP] != want[webIP] || pods["10.244.0.11"] != want["10.244.0.11"] {
		t.Errorf("pod lines %v, want %v:\n%s", pods, want, r.stdout)
	}
}

// cniClient is CNI pod p as a lab client: a default route via the node's
// bridge address (the bridge plugin was not asked to be the gateway) and
// a handle on its namespace.
func cniClient(t *testing.T, l *lab.Lab, p *lab.CNIPod) *lab.Pod {
	t.Helper()
	if out, err := exec.Command("ip", "-n", p.Netns, "route", "add", "default", "via", "10.244.0.1", "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("route in %s: %v %s", p.Netns, err, out)
	}
	h, err := netns.GetFromPath(p.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &lab.Pod{Name: p.Netns, Ns: h, IP: p.Attachments[0].IPs[0], HostVeth: p.Attachments[0].HostVeth}
}

// conntrack names each flow's client pod in -o wide and -o json, both in
// the dump and in the events that follow, a pod attached after it started
// included; a client nothing names has none.
func TestE2EConntrackPods(t *testing.T) {
	l, cni, made := cniLab(t)
	// The Service's endpoint is the hand-made pod 1, which serves.
	if err := l.Restore("iptables-nft-restore", lab.ServiceRules("default/web:http", "10.96.0.10", 80, []string{l.Pod(1).IP.String()}, 8080)); err != nil {
		t.Fatal(err)
	}
	web := cniClient(t, l, made[0])
	labtest.HoldService(t, l, web)
	labtest.HoldService(t, l, l.Pod(2))
	args := []string{"conntrack", "10.96.0.10", "--netns", l.Node, "--cni-cache", cni.CacheDir}

	clients := func(out string) map[string]string {
		got := map[string]string{}
		for _, ln := range strings.Split(strings.TrimSpace(out), "\n") {
			f := parseCT(t, ln)
			name := "none"
			if p := f.ClientPod; p != nil {
				name = p.Namespace + "/" + p.Name + " " + p.Source + " " + p.UID
			}
			got[f.Orig.Src] = name
		}
		return got
	}
	r := run(t, append(args, "--no-follow", "-o", "json")...)
	if r.code != 0 {
		t.Fatalf("conntrack -o json: %+v", r)
	}
	want := map[string]string{web.IP.String(): "default/web-7d9f6c-x2kq cache " + made[0].UID, l.Pod(2).IP.String(): "none"}
	if got := clients(r.stdout); len(got) != 2 || got[web.IP.String()] != want[web.IP.String()] || got[l.Pod(2).IP.String()] != "none" {
		t.Errorf("clients %v, want %v", got, want)
	}

	r = run(t, append(args, "--no-follow", "-o", "wide")...)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasSuffix(lines[0], " POD") {
		t.Fatalf("conntrack -o wide: %+v", r)
	}
	for _, ln := range lines[1:] {
		f := strings.Fields(ln)
		wantPod := "-"
		if strings.HasPrefix(f[4], web.IP.String()+":") {
			wantPod = "default/web-7d9f6c-x2kq"
		}
		if f[len(f)-1] != wantPod {
			t.Errorf("row %q: pod %q, want %q", ln, f[len(f)-1], wantPod)
		}
	}

	// Following: a pod attached after the first lines is named too.
	p := startCT(t, append(args, "--no-dump", "-o", "json", "--timeout", "30s")...)
	// Until the stream is subscribed a connection may go unseen: one
	// more every 200ms until pod 2's shows.
	p.waitLine(t, "pod 2's flow", 10*time.Second, func() { labtest.HoldService(t, l, l.Pod(2)) }, func(ln string) bool { return parseCT(t, ln).Orig.Src == l.Pod(2).IP.String() })
	late, err := l.NewCNIPod("default", "late-0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cni.Attach(late, "eth0"); err != nil {
		t.Fatal(err)
	}
	lateClient := cniClient(t, l, late)
	labtest.HoldService(t, l, lateClient)
	ln := p.waitLine(t, "the late pod's flow", 10*time.Second, nil, func(ln string) bool { return parseCT(t, ln).Orig.Src == lateClient.IP.String() })
	if f := parseCT(t, ln); f.ClientPod == nil || f.ClientPod.Name != "late-0" || f.ClientPod.UID != late.UID || f.ClientPod.Source != "cache" {
		t.Errorf("late pod's flow: %q", ln)
	}
}

// watch names the pod behind each port it sets on: one there at start,
// and one the CNI plugin attaches while it runs, whose port joins the
// bridge before the runtime records the pod; a port nothing names says so.
func TestE2EWatchPods(t *testing.T) {
	l, cni, made := cniLab(t)
	web := made[0]
	ready := filepath.Join(t.TempDir(), "ready")
	want := map[string]string{ // port: pod, cause of its first line
		web.Attachments[0].HostVeth:     "default/web-7d9f6c-x2kq start",
		made[1].Attachments[0].HostVeth: "shop/db-0 start",
		"veth1":                         "unknown start",
		"veth2":                         "unknown start",
	}
	for _, format := range []string{"json", "table"} {
		t.Run(format, func(t *testing.T) {
			// Every port off again for each run.
			links, err := l.Handle().LinkList()
			if err != nil {
				t.Fatal(err)
			}
			for _, ln := range links {
				if ln.Attrs().MasterIndex > 0 {
					if err := l.Handle().LinkSetHairpin(ln, false); err != nil {
						t.Fatal(err)
					}
				}
			}
			p := startBin(t, nil, nil, bin, "watch", "--bridge", "cni0", "--netns", l.Node, "--cni-cache", cni.CacheDir, "--ready-file", ready, "-o", format)
			waitFile(t, p, ready)
			late, err := l.NewCNIPod("batch", "job-"+format)
			if err != nil {
				t.Fatal(err)
			}
			a, err := cni.Attach(late, "eth0")
			if err != nil {
				t.Fatal(err)
			}
			waitHairpin(t, l, a.HostVeth, true)
			// The joined port's line may wait for its name: stop, which
			// prints what is queued, only once it is out.
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(p.stdout.String(), a.HostVeth) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if code := p.stop(t, syscall.SIGTERM); code != 0 {
				t.Fatalf("exit %d; stderr %s", code, p.stderr.String())
			}
			want[a.HostVeth] = "batch/job-" + format + " joined"
			got := map[string]string{}
			// The bridge plugin may set the joined port's hairpin again
			// after it joined: the first line of each port is compared.
			first := func(port, v string) {
				if _, seen := got[port]; !seen {
					got[port] = v
				}
			}
			for _, ln := range strings.Split(strings.TrimSpace(p.stdout.String()), "\n") {
				if format == "json" {
					var ev struct {
						Kind, Port, Cause string
						Pod               *struct{ Namespace, Name, UID, Source string }
					}
					if err := json.Unmarshal([]byte(ln), &ev); err != nil {
						t.Fatalf("line %q: %v", ln, err)
					}
					if ev.Kind != "enabled" {
						continue
					}
					name := "unknown"
					if ev.Pod != nil {
						name = ev.Pod.Namespace + "/" + ev.Pod.Name
						if ev.Pod.Source != "cache" {
							t.Errorf("line %q: source %q", ln, ev.Pod.Source)
						}
					}
					first(ev.Port, name+" "+ev.Cause)
					continue
				}
				// 2026-...Z hairpin on PORT (cni0, pod NAME): CAUSE
				_, rest, ok := strings.Cut(ln, " hairpin on ")
				if !ok {
					continue
				}
				port, rest, _ := strings.Cut(rest, " (cni0, pod ")
				name, cause, _ := strings.Cut(rest, "): ")
				first(port, name+" "+map[string]string{"found off at start": "start", "joined the bridge": "joined", "was turned off": "turned-off"}[cause])
			}
			if len(got) != len(want) {
				t.Errorf("enabled lines %v, want %v\n%s", got, want, p.stdout.String())
			}
			for port, w := range want {
				if got[port] != w {
					t.Errorf("%s: %q, want %q\n%s", port, got[port], w, p.stdout.String())
				}
			}
			want[a.HostVeth] = "batch/job-" + format + " start" // in the next run
		})
	}
}

// A node whose runtime never wrote a CNI cache: no command complains. A
// cache that cannot be read: one warning per command, long-running ones
// included, and no name.
func TestE2EPodNamesCacheTrouble(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Endpoints: []int{1}})
	labtest.HoldService(t, l, l.Pod(2)) // a flow for conntrack to name
	missing := filepath.Join(t.TempDir(), "no-such-dir")
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "results"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The runtime is asked about the hand-made pods: a socket nobody
	// listens on, to keep the host's out of it; its warning is said once too.
	cri := []string{"--cri-endpoint", "unix://" + filepath.Join(t.TempDir(), "none.sock")}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"doctor", "default/web"}, 4},
		{[]string{"services"}, 0},
		{[]string{"conntrack", "10.96.0.10", "--no-follow", "-o", "json"}, 0},
	} {
		args := append(append([]string{}, tc.args...), "--netns", l.Node)
		r := run(t, append(args, "--cni-cache", missing)...)
		if r.code != tc.code || strings.Contains(r.stderr, "pod names") || strings.Contains(r.stderr, "warn") {
			t.Errorf("%v with no cache directory: %+v", tc.args, r)
		}
		r = run(t, append(append(args, "--cni-cache", bad), cri...)...)
		warned := 0
		for _, ln := range strings.Split(r.stderr, "\n") {
			if strings.Contains(ln, "pod names unknown") {
				warned++
			}
		}
		if r.code != tc.code || warned != 1 || strings.Contains(r.stdout, `"pod"`) || strings.Contains(r.stdout, `"clientPod"`) {
			t.Errorf("%v with an unreadable cache: %d warnings: %+v", tc.args, warned, r)
		}
	}

	// watch lists again for each port that joins: still one warning.
	ready := filepath.Join(t.TempDir(), "ready")
	p := startBin(t, nil, nil, append([]string{bin, "watch", "--bridge", "cni0", "--netns", l.Node, "--cni-cache", bad, "--ready-file", ready, "-o", "json"}, cri...)...)
	waitFile(t, p, ready)
	br, err := l.Handle().LinkByName("cni0")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		name := fmt.Sprintf("vnew%d", i)
		if err := l.Handle().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: br.Attrs().Index}, PeerName: name + "p", PeerNamespace: netlink.NsFd(int(l.Pod(1).Ns))}); err != nil {
			t.Fatal(err)
		}
		waitHairpin(t, l, name, true)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.stdout.String(), `"cause":"joined"`) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("watch exit %d", code)
	}
	if n := strings.Count(p.stderr.String(), "pod names unknown"); n != 1 || strings.Contains(p.stdout.String(), `"pod"`) {
		t.Errorf("watch with an unreadable cache: %d warnings\nstderr %s\nstdout %s", n, p.stderr.String(), p.stdout.String())
	}
	if n := strings.Count(p.stderr.String(), "from the runtime unknown"); n != 1 {
		t.Errorf("watch with a silent runtime: %d warnings: %s", n, p.stderr.String())
	}
}

// A client address of a bridge port that nothing names is looked up again
// for a few seconds (a new pod's cache entry comes after its port), then
// not until a link changes: a follow on a node whose pods nothing names
// does not list the ports again every second while their flows come. The
// listings are seen as opens of the cache's results directory.
func TestE2EConntrackUnnamedNotRelisted(t *testing.T) {
	l, cni, _ := cniLab(t)
	if err := l.Restore("iptables-nft-restore", lab.ServiceRules("default/web:http", "10.96.0.10", 80, []string{l.Pod(1).IP.String()}, 8080)); err != nil {
		t.Fatal(err)
	}
	results := filepath.Join(cni.CacheDir, "results")
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, results, unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	// opens counts the directory's opens since the last call.
	opens := func() int {
		n := 0
		buf := make([]byte, 4096)
		for {
			m, err := unix.Read(fd, buf)
			if m <= 0 || err != nil {
				return n
			}
			for off := 0; off+unix.SizeofInotifyEvent <= m; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				if ev.Mask&unix.IN_ISDIR != 0 && ev.Len == 0 {
					n++
				}
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}

	p := startCT(t, "conntrack", "10.96.0.10", "--netns", l.Node, "--cni-cache", cni.CacheDir, "--no-dump", "-o", "json", "--timeout", "60s")
	unnamed := l.Pod(2)
	p.waitLine(t, "the unnamed pod's flow", 10*time.Second, func() { labtest.HoldService(t, l, unnamed) }, func(ln string) bool {
		f := parseCT(t, ln)
		return f.Orig.Src == unnamed.IP.String() && f.ClientPod == nil
	})
	// Flows from it, every 200 ms, past the time it is asked about again.
	for deadline := time.Now().Add(livePodsGraceE2E + 2*time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		labtest.HoldService(t, l, unnamed)
	}
	early := opens()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		labtest.HoldService(t, l, unnamed)
	}
	if late := opens(); early == 0 || late != 0 {
		t.Errorf("results directory opened %d times in the first %v of flows, %d times in the 3 s after; want some, then none", early, livePodsGraceE2E+2*time.Second, late)
	}
}

// livePodsGraceE2E is commands.livePodsGrace, the time an unnamed client
// address is asked about again.
const livePodsGraceE2E = 5 * time.Second
