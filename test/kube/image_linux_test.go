package kube_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/test/kube/kubelab"
)

// imageRef is what the test's image is called in the archive, and
// imageVersion the version its binary is stamped with.
const (
	imageRef     = "kubelab.test/hairpinctl:test"
	imageVersion = "v0.0.0-kubelab"
)

var (
	imageOnce    sync.Once
	imageArchive string
	imageErr     error
)

// image builds the product image as make image does (a static binary
// stamped with its version, packed by the repository's image tool), once.
func image(t *testing.T) string {
	t.Helper()
	imageOnce.Do(func() {
		dir := filepath.Dir(hairpinctl)
		bin := filepath.Join(dir, "image", "hairpinctl")
		imageArchive = filepath.Join(dir, "image.tar")
		build := exec.Command("go", "build", "-trimpath", "-tags", "urfave_cli_no_docs",
			"-ldflags", "-s -w -X main.version="+imageVersion, "-o", bin, ".")
		build.Dir = "../.."
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			imageErr = fmt.Errorf("build hairpinctl for the image: %v\n%s", err, out)
			return
		}
		cmd := exec.Command("go", "run", ".", "build", "--binary", bin, "--arch", runtime.GOARCH,
			"--version", imageVersion, "--ref", imageRef, "--out", imageArchive)
		cmd.Dir = "../../tools/mkimage"
		if out, err := cmd.CombinedOutput(); err != nil {
			imageErr = fmt.Errorf("build the image: %v\n%s", err, out)
		}
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return imageArchive
}

// capNames are every capability the kernel knows but NET_ADMIN: ctr has
// no "drop ALL", and a capability both added and dropped is dropped.
var capNames = []string{"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
	"SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
	"MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
	"CHECKPOINT_RESTORE"}

// capNetAdmin is CAP_NET_ADMIN's bit in /proc/PID/status.
const capNetAdmin = 1 << 12

// ctrRunArgs are `ctr run`'s options as the DaemonSet asks the kubelet
// for them: host network, only CAP_NET_ADMIN, a read-only root.
func ctrRunArgs(c *kubelab.Containerd, extra ...string) []string {
	args := append([]string{"run"}, c.RunArgs()...)
	args = append(args, "--net-host", "--read-only")
	for _, c := range capNames {
		args = append(args, "--cap-drop", "CAP_"+c)
	}
	args = append(args, "--cap-add", "CAP_NET_ADMIN")
	return append(args, extra...)
}

// inImage runs hairpinctl ARGS in a container of the image, to its end.
func inImage(t *testing.T, l *kubelab.Lab, c *kubelab.Containerd, id string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return runCmd(t, c.Command(ctx, append(ctrRunArgs(c, "--rm", "--mount", cniMount(l), imageRef, id, "/usr/local/bin/hairpinctl"), args...)...))
}

// cniMount gives the container the node's CNI configuration, read-only,
// where doctor looks for it, as the DaemonSet mounts it.
func cniMount(l *kubelab.Lab) string {
	return "type=bind,src=" + l.CNI.ConfDir + ",dst=/etc/cni/net.d,options=rbind:ro"
}

// The image in a real runtime: containerd from Debian runs it on the
// lab's node with host networking, only CAP_NET_ADMIN and a read-only
// root. doctor and services read kube-proxy's rules from inside it (no
// iptables or nft binary there), and watch keeps a new pod's port on and
// serves its metrics, against kube-proxy in both of its modes.
func TestImage(t *testing.T) {
	archive := image(t)
	for _, mode := range []string{kubelab.IPTablesNFT, kubelab.NFTables} {
		t.Run(mode, func(t *testing.T) { imageLive(t, mode, archive) })
	}
}

func imageLive(t *testing.T, mode, archive string) {
	l := startLab(t, mode)
	ctx := context.Background()
	c, err := l.StartContainerd(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := c.Ctr(ctx, "images", "import", archive); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(out, imageRef) {
		t.Errorf("ctr images import: %s, want %s", out, imageRef)
	}
	self := l.Pods[0]
	if hairpinOn(t, l, self.HostVeth) {
		t.Fatalf("%s: the bridge plugin made the port with hairpin on", self.HostVeth)
	}

	// doctor in the image, hairpin off: exit 4, a FAIL naming pod-1's port,
	// and the rules found in kube-proxy's mode.
	r := inImage(t, l, c, "doctor-off", "doctor", "-o", "json")
	var rep doctorReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor -o json in the image: %v\n%+v", err, r)
	}
	if r.code != 4 || !failNames(rep, self.HostVeth) {
		t.Errorf("doctor in the image, hairpin off: exit %d, want 4 and a FAIL naming %s:\n%s%s", r.code, self.HostVeth, r.stdout, r.stderr)
	}
	backend := map[string]string{kubelab.IPTablesNFT: "iptables-nft", kubelab.NFTables: "nftables"}[mode]
	for _, ch := range rep.Checks {
		if ch.ID == "kube-proxy" && (ch.Status != "PASS" || !strings.Contains(ch.Finding, "are in "+backend)) {
			t.Errorf("doctor in the image: kube-proxy %s %q, want PASS in %s", ch.Status, ch.Finding, backend)
		}
	}

	// services in the image: every endpoint where the API objects put it.
	r = inImage(t, l, c, "services", "services", "-o", "json")
	if r.code != 0 || !json.Valid([]byte(r.stdout)) {
		t.Fatalf("services -o json in the image: exit %d, %d bytes of stdout (not JSON), stderr %q", r.code, len(r.stdout), r.stderr)
	}
	compareServices(t, l, r.stdout)

	// watch in the image, as the DaemonSet runs it.
	run := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	const metricsAddr = "127.0.0.1:9733"
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	// The lab's libcni cache where the DaemonSet mounts the node's.
	cacheMount := "type=bind,src=" + l.CNI.CacheDir + ",dst=/var/lib/cni,options=rbind:ro"
	w := c.Command(wctx, ctrRunArgs(c, "--mount", "type=bind,src="+run+",dst=/run/hairpinctl,options=rbind:rw", "--mount", cniMount(l), "--mount", cacheMount,
		imageRef, "watch", "/usr/local/bin/hairpinctl", "watch", "--bridge", kubelab.BridgeName,
		"--ready-file", "/run/hairpinctl/ready", "--metrics-listen", metricsAddr, "-o", "json")...)
	var wout bytes.Buffer
	var wmu sync.Mutex
	w.Stdout, w.Stderr = lockedWriter{&wmu, &wout}, lockedWriter{&wmu, &wout}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	wdone := make(chan error, 1)
	go func() { wdone <- w.Wait() }()
	output := func() string { wmu.Lock(); defer wmu.Unlock(); return wout.String() }
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(run, "ready")); err == nil {
			break
		}
		select {
		case err := <-wdone:
			t.Fatalf("watch in the image exited (%v):\n%s", err, output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch in the image never became ready:\n%s", output())
		}
	}

	// What the runtime gave it: CAP_NET_ADMIN alone, a read-only root.
	pid, err := c.TaskPID(ctx, "watch")
	if err != nil {
		t.Fatal(err)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 2 && (f[0] == "CapEff:" || f[0] == "CapBnd:") {
			if v, _ := strconv.ParseUint(f[1], 16, 64); v != capNetAdmin {
				t.Errorf("watch in the image: %s %s, want CAP_NET_ADMIN alone (%x)", f[0], f[1], capNetAdmin)
			}
		}
	}
	if ro, err := rootReadOnly(pid); err != nil || !ro {
		t.Errorf("watch in the image: root read-only %v (%v)", ro, err)
	}

	for _, p := range l.Pods {
		if !hairpinOn(t, l, p.HostVeth) {
			t.Errorf("watch in the image is ready and %s (%s) still has hairpin off", p.HostVeth, p.Name)
		}
	}
	late, err := l.CNI.Add(ctx, "pod-late")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !hairpinOn(t, l, late.HostVeth); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("watch in the image: %s (pod-late) still has hairpin off 10 s after the CNI ADD:\n%s", late.HostVeth, output())
		}
	}

	// The late pod's line names it, from the cache libcni wrote.
	wantPod := fmt.Sprintf(`"pod":{"namespace":%q,"name":%q`, late.Namespace, late.Name)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(output(), wantPod); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("watch in the image: no line naming %s/%s (%s):\n%s", late.Namespace, late.Name, wantPod, output())
		}
	}

	// Its metrics, scraped in the node's network: the lab's pods and the
	// late one, all on.
	want := map[string]float64{
		`hairpinctl_bridge_ports{bridge="cni0",hairpin="on"}`:        float64(len(l.Pods) + 1),
		`hairpinctl_bridge_ports{bridge="cni0",hairpin="off"}`:       0,
		`hairpinctl_watch_fixes_total{bridge="cni0",cause="start"}`:  float64(len(l.Pods)),
		`hairpinctl_watch_fixes_total{bridge="cni0",cause="joined"}`: 1,
		`hairpinctl_watch_ready`:                                     1,
		`hairpinctl_build_info{version="` + imageVersion + `"}`:      1,
		`hairpinctl_watch_resyncs_total{cause="overflow"}`:           0,
	}
	var got map[string]float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got, err = scrapeIn(l.Node, metricsAddr)
		if err == nil && got[`hairpinctl_watch_fixes_total{bridge="cni0",cause="joined"}`] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("scrape: %v %v", err, got)
		}
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}

	// doctor in the image on the healthy node: no FAIL.
	r = inImage(t, l, c, "doctor-on", "doctor", "-o", "json")
	rep = doctorReport{}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 0 || failNames(rep, "") {
		t.Errorf("doctor in the image on a healthy node: exit %d, want 0 and no FAIL (%v):\n%s%s", r.code, err, r.stdout, r.stderr)
	}

	// SIGTERM, as the kubelet stops it: exit 0, the stopped line.
	if _, err := c.Ctr(ctx, "task", "kill", "-s", "SIGTERM", "watch"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-wdone:
		if err != nil {
			t.Errorf("watch in the image after SIGTERM: %v, want exit 0:\n%s", err, output())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("watch in the image still running 20 s after SIGTERM:\n%s", output())
	}
	if !strings.Contains(output(), `"kind":"stopped","cause":"SIGTERM"`) {
		t.Errorf("no stopped line:\n%s", output())
	}
	if _, err := os.Stat(filepath.Join(run, "ready")); err == nil {
		t.Error("ready file left after SIGTERM")
	}
	if _, err := c.Ctr(ctx, "containers", "delete", "watch"); err != nil {
		t.Error(err)
	}
}

// The image has no iptables-legacy-save: with kube-proxy's rules in
// iptables-legacy, services says what it lacks and exits non-zero rather
// than reporting no Services, and doctor's kube-proxy check warns.
func TestImageLegacy(t *testing.T) {
	archive := image(t)
	l := startLab(t, kubelab.IPTablesLegacy)
	ctx := context.Background()
	c, err := l.StartContainerd(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ctr(ctx, "images", "import", archive); err != nil {
		t.Fatal(err)
	}
	r := inImage(t, l, c, "services", "services")
	if r.code == 0 || !strings.Contains(r.stderr, "iptables-legacy-save not found") {
		t.Errorf("services in the image on iptables-legacy: exit %d, stderr %q; want non-zero naming iptables-legacy-save", r.code, r.stderr)
	}
	t.Logf("services in the image on iptables-legacy: exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	// doctor cannot tell either: its kube-proxy check warns and says
	// which backend it could not read.
	r = inImage(t, l, c, "doctor", "doctor", "-o", "json")
	var rep doctorReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor -o json in the image: %v\n%+v", err, r)
	}
	found := false
	for _, ch := range rep.Checks {
		if ch.ID == "kube-proxy" {
			found = true
			t.Logf("doctor in the image on iptables-legacy: kube-proxy %s: %s %q", ch.Status, ch.Finding, ch.Details)
			// Not "kube-proxy is not running": it is, in the backend
			// the image cannot read.
			if ch.Status != "WARN" || !strings.Contains(strings.Join(ch.Details, "\n"), "iptables-legacy not found in PATH") ||
				!strings.Contains(ch.Finding, "iptables-legacy could not be read") || strings.Contains(ch.Finding, "not running") {
				t.Errorf("doctor in the image on iptables-legacy: kube-proxy %s %q %q; want WARN naming iptables-legacy", ch.Status, ch.Finding, ch.Details)
			}
		}
	}
	if !found {
		t.Errorf("doctor in the image: no kube-proxy check:\n%s", r.stdout)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// rootReadOnly reports whether the process's root is mounted read-only.
func rootReadOnly(pid int) (bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == "/" {
			return strings.Contains(","+f[5]+",", ",ro,"), nil
		}
	}
	return false, fmt.Errorf("no / in %d's mountinfo", pid)
}

// scrapeIn fetches /metrics from inside a namespace; the series come back
// keyed by their text form (name{labels}).
func scrapeIn(ns, addr string) (map[string]float64, error) {
	var body []byte
	err := kubelab.In(ns, func() error {
		// Dialled here, on the thread in ns: http.Transport would dial
		// from another goroutine, in another namespace.
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
		req.Header.Set("Accept", "text/plain")
		if err := req.Write(conn); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /metrics: %s", resp.Status)
		}
		body, err = io.ReadAll(resp.Body)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, nil
}

// skopeo (containers/image, what podman load and buildah use too) reads the
// archive as an OCI archive: the image, its platform and its version label.
func TestImageSkopeo(t *testing.T) {
	archive := image(t)
	out, err := exec.Command("skopeo", "inspect", "oci-archive:"+archive).Output()
	if err != nil {
		t.Fatalf("skopeo inspect oci-archive:%s: %v", archive, err)
	}
	var got struct {
		Architecture, Os string
		Labels           map[string]string
		Layers           []string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, out)
	}
	if got.Os != "linux" || got.Architecture != runtime.GOARCH || got.Labels["org.opencontainers.image.version"] != imageVersion || len(got.Layers) != 1 {
		t.Errorf("skopeo inspect: %s/%s, labels %v, %d layers; want linux/%s, version %s, 1 layer", got.Os, got.Architecture, got.Labels, len(got.Layers), runtime.GOARCH, imageVersion)
	}
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("skopeo", "copy", "oci-archive:"+archive, "dir:"+dst).CombinedOutput(); err != nil {
		t.Errorf("skopeo copy oci-archive: %v\n%s", err, out)
	}
}
