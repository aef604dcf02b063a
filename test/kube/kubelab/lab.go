// Package kubelab stands up a real one-node Kubernetes data plane on this
// machine, in network namespaces: etcd and kube-apiserver in a control-plane
// namespace, a node namespace joined to it by a veth pair, pods made in the
// node by the real CNI bridge plugin through libcni, a catalogue of Services
// and EndpointSlices created through the API, and the real kube-proxy of a
// chosen release and mode programming the node. Nothing is made in the
// caller's namespace; Close removes every namespace and process.
package kubelab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Modes kube-proxy can run in, as the lab names them.
const (
	IPTablesNFT    = "iptables-nft"
	IPTablesLegacy = "iptables-legacy"
	NFTables       = "nftables"
)

// Releases is the matrix of kube-proxy releases the goldens cover, oldest
// first; the last is the one the live tests run.
var Releases = []string{"v1.31.14", "v1.32.13", "v1.33.13", "v1.34.4", "v1.35.4", "v1.36.3", "v1.37.2"}

// Newest is the release the control plane runs and the live tests use.
const Newest = "v1.37.2"

// EtcdVersion is the etcd the control plane runs.
const EtcdVersion = "v3.6.17"

// Addresses of the lab. The node's are what kube-proxy sees as its node IPs.
const (
	ControlPlaneIP  = "10.200.0.1"
	ControlPlaneIP6 = "fd00:200::1"
	NodeIP          = "10.200.0.2"
	NodeIP6         = "fd00:200::2"
	ClusterCIDR     = "10.244.0.0/16"
	ClusterCIDR6    = "fd00:10:244::/56"
	PodCIDR         = "10.244.0.0/24"
	PodCIDR6        = "fd00:10:244::/64"
	ServiceCIDR     = "10.96.0.0/16"
	ServiceCIDR6    = "fd00:10:96::/112"
	BridgeName      = "cni0"
)

// Options shapes a lab.
type Options struct {
	// Release is the kube-proxy release [Newest].
	Release string
	// Mode is IPTablesNFT, IPTablesLegacy or NFTables [IPTablesNFT].
	Mode string
	// Pods is how many pods the CNI plugin makes [6].
	Pods int
	// Hairpin is the bridge plugin's hairpinMode for the pods it makes [off,
	// the plugin's default].
	Hairpin bool
	// NoProxy leaves kube-proxy out (StartProxy starts it later).
	NoProxy bool
	// Log receives progress lines [discarded].
	Log func(format string, args ...any)
}

// Lab is one running lab.
type Lab struct {
	// Dir holds the PKI, kubeconfigs, data and every component's log.
	Dir string
	// ControlPlane and Node are the namespaces' names under /run/netns.
	ControlPlane, Node string
	// NodeName is the Node object's name (kube-proxy's --hostname-override).
	NodeName string
	// Client talks to the apiserver as the cluster admin.
	Client kubernetes.Interface
	// AdminKubeconfig works from inside the node namespace.
	AdminKubeconfig string
	// Pods are the pods the CNI plugin made, in order.
	Pods []*Pod
	// Catalogue is what was created through the API, with the truth.
	Catalogue *Catalogue
	// CNI is how pods are added and removed.
	CNI *CNI

	opts    Options
	id      string
	pki     *pki
	mu      sync.Mutex
	procs   []*proc
	proxy   *proc
	nsMade  []string
	closed  bool
	failed  bool
	binPath map[string]string
	// containerd, when started, is stopped first: its containers may
	// hold the node's ports.
	containerd *Containerd
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (o *Options) defaults() {
	if o.Release == "" {
		o.Release = Newest
	}
	if o.Mode == "" {
		o.Mode = IPTablesNFT
	}
	if o.Pods == 0 {
		o.Pods = 6
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
}

// Binary returns the path of a component, building it into the cache the
// first time (test/kube/build.sh).
func Binary(component, version string, log func(string, ...any)) (string, error) {
	_, self, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(self), "..", "build.sh")
	cmd := exec.Command(script, component, version)
	cmd.Stderr = logWriter{log}
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build %s %s: %w", component, version, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Cached returns the path of a component already in the cache, without
// building it.
func Cached(component, version string) (string, bool) {
	cache := os.Getenv("KUBE_LAB_CACHE")
	if cache == "" {
		cache = "/var/cache/hairpinctl-kube-lab"
	}
	p := filepath.Join(cache, version, component)
	if _, err := os.Stat(p); err != nil {
		return "", false
	}
	return p, true
}

type logWriter struct{ log func(string, ...any) }

func (w logWriter) Write(b []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		w.log("%s", l)
	}
	return len(b), nil
}

// live are the labs not yet closed, for CloseAllOnSignal.
var (
	liveMu sync.Mutex
	live   = map[*Lab]bool{}
)

// CloseAllOnSignal closes every open lab and exits with 128+signal on
// SIGINT, SIGTERM or SIGHUP (an SSH session dropping), so that an
// interrupted test or lab leaves no namespace or process behind; then it
// runs cleanups (a test binary's temporary directory, say).
func CloseAllOnSignal(cleanups ...func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-ch
		liveMu.Lock()
		labs := make([]*Lab, 0, len(live))
		for l := range live {
			labs = append(labs, l)
		}
		liveMu.Unlock()
		for _, l := range labs {
			_ = l.Close()
		}
		for _, c := range cleanups {
			c()
		}
		fmt.Fprintf(os.Stderr, "kubelab: %v: %d lab(s) torn down\n", sig, len(labs))
		os.Exit(128 + int(sig.(syscall.Signal)))
	}()
}

// Start builds (or finds) the binaries and stands the lab up. On failure it
// removes what it made and keeps the logs, naming where they are.
func Start(ctx context.Context, o Options) (l *Lab, err error) {
	o.defaults()
	switch o.Mode {
	case IPTablesNFT, IPTablesLegacy, NFTables:
	default:
		return nil, fmt.Errorf("kubelab: mode %q: want %s, %s or %s", o.Mode, IPTablesNFT, IPTablesLegacy, NFTables)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	dir, err := os.MkdirTemp("", "kubelab-"+id+"-")
	if err != nil {
		return nil, err
	}
	l = &Lab{Dir: dir, opts: o, id: id, NodeName: "kubelab-node", binPath: map[string]string{},
		ControlPlane: "klcp-" + id, Node: "klnode-" + id}
	liveMu.Lock()
	live[l] = true
	liveMu.Unlock()
	defer func() {
		if err != nil {
			l.failed = true
			_ = l.Close()
			err = fmt.Errorf("%w (logs kept in %s)", err, dir)
		}
	}()
	for _, c := range [][2]string{{"etcd", EtcdVersion}, {"kube-apiserver", Newest}, {"kube-proxy", o.Release}} {
		p, err := Binary(c[0], c[1], o.Log)
		if err != nil {
			return l, err
		}
		l.binPath[c[0]] = p
	}
	if err := l.network(); err != nil {
		return l, err
	}
	if err := l.controlPlane(ctx); err != nil {
		return l, err
	}
	if err := l.node(ctx); err != nil {
		return l, err
	}
	if l.CNI, err = newCNI(l); err != nil {
		return l, err
	}
	for i := 0; i < o.Pods; i++ {
		p, err := l.CNI.Add(ctx, fmt.Sprintf("pod-%d", i+1))
		if err != nil {
			return l, err
		}
		l.Pods = append(l.Pods, p)
	}
	if l.Catalogue, err = createCatalogue(ctx, l); err != nil {
		return l, err
	}
	if !o.NoProxy {
		if err := l.StartProxy(ctx); err != nil {
			return l, err
		}
	}
	return l, nil
}

func (l *Lab) addNS(name string) error {
	if _, err := run("ip", "netns", "add", name); err != nil {
		return err
	}
	l.nsMade = append(l.nsMade, name)
	_, err := run("ip", "-n", name, "link", "set", "lo", "up")
	return err
}

// network makes the two namespaces and the link between them.
func (l *Lab) network() error {
	if err := l.addNS(l.ControlPlane); err != nil {
		return err
	}
	if err := l.addNS(l.Node); err != nil {
		return err
	}
	steps := [][]string{
		{"-n", l.ControlPlane, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", l.Node},
		{"-n", l.ControlPlane, "addr", "add", ControlPlaneIP + "/24", "dev", "eth0"},
		{"-n", l.ControlPlane, "addr", "add", ControlPlaneIP6 + "/64", "dev", "eth0", "nodad"},
		{"-n", l.ControlPlane, "link", "set", "eth0", "up"},
		{"-n", l.Node, "addr", "add", NodeIP + "/24", "dev", "eth0"},
		{"-n", l.Node, "addr", "add", NodeIP6 + "/64", "dev", "eth0", "nodad"},
		{"-n", l.Node, "link", "set", "eth0", "up"},
		{"-n", l.Node, "route", "add", "default", "via", ControlPlaneIP},
		{"-n", l.Node, "-6", "route", "add", "default", "via", ControlPlaneIP6},
	}
	for _, s := range steps {
		if _, err := run("ip", s...); err != nil {
			return err
		}
	}
	// br_netfilter makes bridged frames traverse the node's NAT: without it a
	// pod reaching its own Service never leaves by the port it came in on.
	if _, err := os.Stat("/proc/sys/net/bridge"); err != nil {
		if _, err := run("modprobe", "br_netfilter"); err != nil {
			return fmt.Errorf("br_netfilter: %w", err)
		}
	}
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv6.conf.all.forwarding", "1"},
		{"net.bridge.bridge-nf-call-iptables", "1"},
		{"net.bridge.bridge-nf-call-ip6tables", "1"},
	} {
		if err := sysctl(l.Node, kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// spawn starts a component inside a namespace, its output in DIR/NAME.log.
func (l *Lab) spawn(name, nsName, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(l.Dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + nsName, "--", bin}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = l.Dir
	cmd.Env = append(os.Environ(), "PATH="+l.toolPath()+":"+os.Getenv("PATH"))
	// Its own process group, and SIGKILL if this process dies first, so a
	// crashed test never leaves an apiserver behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startOnSpawner(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// The kernel sends Pdeathsig when the *thread* that forked the child exits,
// and the lab's namespace helpers end their threads on purpose: every
// component is started from one thread that lives as long as the process.
var spawner = make(chan func())

func init() {
	go func() {
		runtime.LockOSThread()
		for f := range spawner {
			f()
		}
	}()
}

func startOnSpawner(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	spawner <- func() { errc <- cmd.Start() }
	return <-errc
}

// exited reports a component that has stopped, with its log's tail.
func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v): %s", p.name, p.err, tail(p.log, 5))
	default:
		return nil
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func (l *Lab) controlPlane(ctx context.Context) error {
	p, err := newPKI(filepath.Join(l.Dir, "pki"))
	if err != nil {
		return err
	}
	l.pki = p
	if err := p.pair("apiserver", "kube-apiserver", nil,
		[]net.IP{net.ParseIP(ControlPlaneIP), net.ParseIP(ControlPlaneIP6), net.ParseIP("10.96.0.1"), net.ParseIP("127.0.0.1")},
		[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost"}, true); err != nil {
		return err
	}
	if err := p.pair("admin", "kubelab-admin", []string{"system:masters"}, nil, nil, false); err != nil {
		return err
	}
	if err := p.pair("kube-proxy", "system:kube-proxy", nil, nil, nil, false); err != nil {
		return err
	}
	if err := p.serviceAccountKey(); err != nil {
		return err
	}
	server := "https://" + ControlPlaneIP + ":6443"
	if l.AdminKubeconfig, err = p.kubeconfig("admin", server); err != nil {
		return err
	}
	if _, err := p.kubeconfig("kube-proxy", server); err != nil {
		return err
	}
	l.opts.Log("starting etcd %s and kube-apiserver %s in netns %s", EtcdVersion, Newest, l.ControlPlane)
	etcd, err := l.spawn("etcd", l.ControlPlane, l.binPath["etcd"],
		"--data-dir", filepath.Join(l.Dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380", "--log-level", "warn")
	if err != nil {
		return err
	}
	api, err := l.spawn("kube-apiserver", l.ControlPlane, l.binPath["kube-apiserver"],
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address="+ControlPlaneIP, "--advertise-address="+ControlPlaneIP, "--secure-port=6443",
		"--tls-cert-file="+p.path("apiserver.crt"), "--tls-private-key-file="+p.path("apiserver.key"),
		"--client-ca-file="+p.path("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+p.path("sa.pub"), "--service-account-signing-key-file="+p.path("sa.key"),
		"--service-cluster-ip-range="+ServiceCIDR+","+ServiceCIDR6,
		"--authorization-mode=AlwaysAllow", "--enable-priority-and-fairness=false", "-v=1")
	if err != nil {
		return err
	}
	cfg := &rest.Config{
		Host: server,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile: p.path("ca.crt"), CertFile: p.path("admin.crt"), KeyFile: p.path("admin.key"),
		},
		Dial:    dialIn(l.Node),
		QPS:     200,
		Burst:   400,
		Timeout: 30 * time.Second,
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	l.Client = c
	start := time.Now()
	deadline := time.Now().Add(90 * time.Second)
	for {
		if err := etcd.exited(); err != nil {
			return err
		}
		if err := api.exited(); err != nil {
			return err
		}
		body, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after 90 s: %v", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	// The apiserver makes default/kubernetes itself; wait for it so the
	// catalogue's truth includes it.
	for {
		if _, err := c.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("default/kubernetes Service never appeared")
		}
		time.Sleep(200 * time.Millisecond)
	}
	l.opts.Log("control plane ready in %.1f s", time.Since(start).Seconds())
	return nil
}

// node creates the Node object kube-proxy reads its pod CIDR and IPs from.
func (l *Lab) node(ctx context.Context) error {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: l.NodeName, Labels: map[string]string{"kubernetes.io/hostname": l.NodeName}},
		Spec:       corev1.NodeSpec{PodCIDR: PodCIDR, PodCIDRs: []string{PodCIDR, PodCIDR6}},
	}
	n, err := l.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create Node: %w", err)
	}
	n.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: NodeIP},
		{Type: corev1.NodeInternalIP, Address: NodeIP6},
		{Type: corev1.NodeHostName, Address: l.NodeName},
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "KubeletReady"}}
	if _, err := l.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("status of the Node: %w", err)
	}
	return nil
}

// toolPath is a directory whose iptables, ip6tables and their save/restore
// are the chosen backend's, put first in kube-proxy's PATH: the real
// kube-proxy image picks its backend the same way (iptables-wrapper).
func (l *Lab) toolPath() string {
	dir := filepath.Join(l.Dir, "sbin")
	if _, err := os.Stat(dir); err == nil {
		return dir
	}
	_ = os.MkdirAll(dir, 0o755)
	suffix := "nft"
	if l.opts.Mode == IPTablesLegacy {
		suffix = "legacy"
	}
	for _, t := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		target, err := exec.LookPath(strings.Replace(t, "tables", "tables-"+suffix, 1))
		if err != nil {
			// e.g. iptables-nft-save: the names are iptables-nft-save.
			base := strings.SplitN(t, "-", 2)
			name := base[0] + "-" + suffix
			if len(base) == 2 {
				name += "-" + base[1]
			}
			target, _ = exec.LookPath(name)
		}
		if target != "" {
			_ = os.Symlink(target, filepath.Join(dir, t))
		}
	}
	return dir
}

// Tool returns the path of an iptables tool of the lab's backend.
func (l *Lab) Tool(name string) string { return filepath.Join(l.toolPath(), name) }

// Failed marks the lab as failed, so Close keeps its logs.
func (l *Lab) Failed() { l.failed = true }

// Close stops every component, removes the pods through the CNI plugin and
// the namespaces, and removes the lab directory unless something failed.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := l.procs
	ctrd := l.containerd
	l.mu.Unlock()
	if ctrd != nil {
		ctrd.stop()
	}
	liveMu.Lock()
	delete(live, l)
	liveMu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	if l.CNI != nil {
		for _, p := range append([]*Pod(nil), l.CNI.pods...) {
			if err := l.CNI.Del(context.Background(), p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for i := len(l.nsMade) - 1; i >= 0; i-- {
		if _, err := run("ip", "netns", "del", l.nsMade[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		l.failed = true
	}
	if !l.failed && os.Getenv("KUBE_LAB_KEEP") == "" {
		_ = os.RemoveAll(l.Dir)
	}
	return errors.Join(errs...)
}
