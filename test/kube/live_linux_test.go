package kube_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/test/kube/kubelab"
)

// hairpinctl is the product binary, built once from the repository root.
var hairpinctl string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "the kube lab needs root (network namespaces, a bridge, kube-proxy)")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "kubelab-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hairpinctl = filepath.Join(dir, "hairpinctl")
	build := exec.Command("go", "build", "-o", hairpinctl, ".")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build hairpinctl: %v\n%s", err, out)
		os.Exit(1)
	}
	kubelab.CloseAllOnSignal(func() { os.RemoveAll(dir) })
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startLab(t *testing.T, mode string) *kubelab.Lab {
	t.Helper()
	return startLabWith(t, kubelab.Options{Mode: mode})
}

func startLabWith(t *testing.T, o kubelab.Options) *kubelab.Lab {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	o.Log = t.Logf
	l, err := kubelab.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.Failed()
			t.Logf("lab logs kept in %s", l.Dir)
		}
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	return runCmd(t, exec.Command(hairpinctl, args...))
}

// runCmd runs cmd to its end and returns its exit code and output; a
// command that could not be run at all fails t.
func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return result{code, out.String(), errb.String()}
}

// connect opens a TCP connection from inside the pod's namespace and
// returns the name the answering pod prints.
func connect(p *kubelab.Pod, ip string, port int, timeout time.Duration) (string, error) {
	var got string
	err := kubelab.In(p.Netns, func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, fmt.Sprint(port)), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		b := make([]byte, 64)
		n, err := c.Read(b)
		got = strings.TrimSpace(string(b[:n]))
		return err
	})
	return got, err
}

func service(t *testing.T, l *kubelab.Lab, name string) kubelab.TruthService {
	t.Helper()
	tr, err := kubelab.ComputeTruth(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range tr.Services {
		if s.Namespace == "default" && s.Name == name && s.Family == "ipv4" {
			return s
		}
	}
	t.Fatalf("no Service default/%s", name)
	return kubelab.TruthService{}
}

type doctorReport struct {
	Checks []struct {
		ID, Status, Finding, Fix string
		Details                  []string
	}
}

func doctor(t *testing.T, l *kubelab.Lab) (doctorReport, result) {
	t.Helper()
	r := run(t, "--netns", l.Node, "doctor", "--cni-conf-dir", l.CNI.ConfDir, "-o", "json")
	var rep doctorReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor -o json: %v\n%s\n%s", err, r.stdout, r.stderr)
	}
	return rep, r
}

// hairpinOn reads a port's hairpin mode from the kernel, with iproute2.
func hairpinOn(t *testing.T, l *kubelab.Lab, port string) bool {
	t.Helper()
	out, err := exec.Command("ip", "-n", l.Node, "-d", "-j", "link", "show", "dev", port).Output()
	if err != nil {
		t.Fatalf("ip link show %s: %v", port, err)
	}
	var links []struct {
		Linkinfo struct {
			InfoSlaveData struct {
				Hairpin bool `json:"hairpin"`
			} `json:"info_slave_data"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show %s: %v: %s", port, err, out)
	}
	return links[0].Linkinfo.InfoSlaveData.Hairpin
}

// The seed scenario, doctor and watch on the newest kube-proxy, in both of
// its modes, on pods made by the CNI plugin.
func TestLive(t *testing.T) {
	for _, mode := range []string{kubelab.IPTablesNFT, kubelab.NFTables} {
		t.Run(mode, func(t *testing.T) {
			l := live(t, mode)
			t.Run("probe", func(t *testing.T) { probeLive(t, l, mode) })
		})
	}
}

func live(t *testing.T, mode string) *kubelab.Lab {
	l := startLab(t, mode)
	web := service(t, l, "web")
	self := l.Pods[0] // pod-1, one of web's two endpoints
	selfEP := net.JoinHostPort(self.IP.String(), fmt.Sprint(kubelab.ServePort))
	if !contains(web.ClusterEndpoints, selfEP) {
		t.Fatalf("pod-1 (%s) is not an endpoint of web: %v", selfEP, web.ClusterEndpoints)
	}
	if hairpinOn(t, l, self.HostVeth) {
		t.Fatalf("%s: the bridge plugin made the port with hairpin on", self.HostVeth)
	}

	// Hairpin off: the connections balanced to pod-1 itself hang, the
	// others reach pod-2.
	failed, toSelf := 0, 0
	for i := 0; i < 20; i++ {
		got, err := connect(self, web.ClusterIP, web.Port, 700*time.Millisecond)
		switch {
		case err != nil:
			failed++
		case got == self.Name:
			toSelf++
		}
	}
	if failed == 0 || toSelf != 0 {
		t.Fatalf("hairpin off: %d of 20 failed, %d reached pod-1 itself; want some failed and none to itself", failed, toSelf)
	}
	t.Logf("hairpin off: %d of 20 connections to %s:%d hung", failed, web.ClusterIP, web.Port)

	// doctor names pod-1's port.
	rep, r := doctor(t, l)
	if r.code != 4 || !failNames(rep, self.HostVeth) {
		t.Errorf("doctor with hairpin off: exit %d, want 4 and a FAIL naming %s:\n%s", r.code, self.HostVeth, r.stdout)
	}

	if r := run(t, "--netns", l.Node, "enable", "--bridge", kubelab.BridgeName); r.code != 0 {
		t.Fatalf("enable --bridge cni0: %+v", r)
	}
	toSelf = 0
	for i := 0; i < 20; i++ {
		got, err := connect(self, web.ClusterIP, web.Port, 2*time.Second)
		if err != nil {
			t.Fatalf("hairpin on: connection %d: %v", i+1, err)
		}
		if got == self.Name {
			toSelf++
		}
	}
	if toSelf == 0 {
		t.Errorf("hairpin on: none of 20 connections reached pod-1 itself")
	}
	checkConntrack(t, l, web, self, l.Pods[1], toSelf)
	checkLocality(t, l)

	// Healthy node: no FAIL.
	if rep, r := doctor(t, l); r.code != 0 || failNames(rep, "") {
		t.Errorf("doctor on a healthy node: exit %d, want 0 and no FAIL:\n%s", r.code, r.stdout)
	}

	// watch: a pod the CNI plugin adds while it runs has hairpin on within
	// a second.
	ready := filepath.Join(t.TempDir(), "ready")
	w := exec.Command(hairpinctl, "--netns", l.Node, "watch", "--bridge", kubelab.BridgeName, "--ready-file", ready)
	var wout bytes.Buffer
	w.Stdout, w.Stderr = &wout, &wout
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = w.Process.Signal(os.Interrupt)
		_ = w.Wait()
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch never became ready: %s", wout.String())
		}
	}
	p, err := l.CNI.Add(context.Background(), "pod-late")
	if err != nil {
		t.Fatal(err)
	}
	added := time.Now()
	for !hairpinOn(t, l, p.HostVeth) {
		if time.Since(added) > 10*time.Second {
			t.Fatalf("watch: %s (pod-late) still has hairpin off 10 s after the CNI ADD returned:\n%s", p.HostVeth, wout.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("watch: %s on %v after the CNI ADD returned", p.HostVeth, time.Since(added).Round(time.Millisecond))
	return l
}

// failNames reports a FAIL check whose finding or details mention s (any
// FAIL when s is empty).
func failNames(rep doctorReport, s string) bool {
	for _, c := range rep.Checks {
		if c.Status != "FAIL" {
			continue
		}
		if s == "" || strings.Contains(c.Finding, s) || strings.Contains(strings.Join(c.Details, "\n"), s) {
			return true
		}
	}
	return false
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// A lab stood up by hand (make kube-lab) is torn down whole when its SSH
// session drops (SIGHUP): no namespace, no component, no directory left.
func TestLabTornDownOnSIGHUP(t *testing.T) {
	kl := filepath.Join(t.TempDir(), "kubelab")
	if out, err := exec.Command("go", "build", "-o", kl, "./cmd/kubelab").CombinedOutput(); err != nil {
		t.Fatalf("build kubelab: %v\n%s", err, out)
	}
	cmd := exec.Command(kl, "up", "--mode", kubelab.NFTables)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	up := make(chan string, 1)
	go func() {
		var all strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := stdout.Read(buf)
			all.Write(buf[:n])
			if strings.Contains(all.String(), "tears it down") {
				up <- all.String()
				return
			}
			if err != nil {
				up <- ""
				return
			}
		}
	}()
	var banner string
	select {
	case banner = <-up:
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Signal(syscall.SIGTERM) // it tears itself down
		_ = cmd.Wait()
		t.Fatalf("the lab never came up:\n%s", stderr.String())
	}
	if banner == "" {
		_ = cmd.Wait()
		t.Fatalf("kubelab up ended early:\n%s", stderr.String())
	}
	var node, dir string
	for _, f := range strings.Fields(banner) {
		if strings.HasPrefix(f, "klnode-") && node == "" {
			node = f
		}
		if strings.HasPrefix(f, os.TempDir()+"/kubelab-") {
			dir = f
		}
	}
	id := strings.TrimPrefix(node, "klnode-")
	if id == "" || dir == "" {
		t.Fatalf("no node namespace or directory in the banner:\n%s", banner)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 129 {
		t.Errorf("exit after SIGHUP: %v, want 129\n%s", err, stderr.String())
	}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.Contains(e.Name(), id) {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
	if out, _ := exec.Command("pgrep", "-af", dir).Output(); len(out) > 0 {
		t.Errorf("components left running:\n%s", out)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("lab directory %s left behind", dir)
	}
}

// checkConntrack reads the flows to the Service with hairpinctl conntrack
// and compares its flags with what the connections were: pod-1's flows
// answered by pod-1 are hairpin and masqueraded (kube-proxy's hairpin
// masquerade), its flows answered by pod-2 are not hairpin.
func checkConntrack(t *testing.T, l *kubelab.Lab, web kubelab.TruthService, self, other *kubelab.Pod, toSelf int) {
	t.Helper()
	r := run(t, "--netns", l.Node, "conntrack", web.ClusterIP, "--port", fmt.Sprint(web.Port), "--no-follow", "-o", "json")
	if r.code != 0 {
		t.Fatalf("conntrack: %+v", r)
	}
	type tuple struct{ Src, Dst string }
	hairpin := 0
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var f struct {
			Orig, Reply   tuple
			Hairpin, SNAT bool
		}
		if err := json.Unmarshal([]byte(line), &f); err != nil || f.Orig.Src != self.IP.String() {
			continue
		}
		switch f.Reply.Src {
		case self.IP.String():
			hairpin++
			if !f.Hairpin || !f.SNAT || f.Reply.Dst == self.IP.String() {
				t.Errorf("pod-1 → itself: hairpin %v, snat %v (reply to %s); want both, to the node", f.Hairpin, f.SNAT, f.Reply.Dst)
			}
		case other.IP.String():
			if f.Hairpin {
				t.Errorf("pod-1 → pod-2 flagged hairpin: %s", line)
			}
		}
	}
	if hairpin != toSelf {
		t.Errorf("conntrack shows %d hairpin flows of pod-1, %d of its connections reached itself:\n%s", hairpin, toSelf, r.stdout)
	}
}

// checkLocality compares services' "local" with where the API objects put
// each endpoint: this node's pods are local, the remote node's and the
// apiserver's addresses are not; and every local endpoint ClusterIP
// traffic reaches has its hairpin masquerade.
func checkLocality(t *testing.T, l *kubelab.Lab) {
	t.Helper()
	tr, err := kubelab.ComputeTruth(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, "--netns", l.Node, "services", "-o", "json")
	if r.code != 0 {
		t.Fatalf("services: %+v", r)
	}
	compareServicesTo(t, tr, r.stdout)
}

// compareServices compares services -o json with the API objects, as
// checkLocality does.
func compareServices(t *testing.T, l *kubelab.Lab, stdout string) {
	t.Helper()
	tr, err := kubelab.ComputeTruth(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	compareServicesTo(t, tr, stdout)
}

func compareServicesTo(t *testing.T, tr *kubelab.Truth, stdout string) {
	t.Helper()
	var got []struct {
		ClusterIP string
		Port      int
		Protocol  string
		Endpoints []struct {
			IP          string
			Port        int
			HairpinMasq bool
			Local       *bool
		}
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("services -o json: %v", err)
	}
	checked := 0
	for _, want := range tr.Services {
		for _, s := range got {
			if net.ParseIP(s.ClusterIP).String() != net.ParseIP(want.ClusterIP).String() || s.Port != want.Port || !strings.EqualFold(s.Protocol, want.Protocol) {
				continue
			}
			for _, e := range s.Endpoints {
				for _, te := range want.Endpoints {
					if net.ParseIP(te.IP).String() != net.ParseIP(e.IP).String() || te.Port != e.Port {
						continue
					}
					checked++
					if e.Local == nil || *e.Local != te.Local {
						t.Errorf("%s/%s %s:%d endpoint %s: local %v, want %v", want.Namespace, want.Name, want.ClusterIP, want.Port, e.IP, e.Local, te.Local)
					}
					if te.Local && !e.HairpinMasq {
						t.Errorf("%s/%s endpoint %s (this node's) without its hairpin masquerade", want.Namespace, want.Name, e.IP)
					}
				}
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d endpoints compared", checked)
	}
}
