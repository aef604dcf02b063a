package selftest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"golang.org/x/sys/unix"
)

// Timeouts of the self-test's connections. A hairpin drop shows as no
// answer at all, so "blocked" means the whole blockedWait passed; an
// answer on a healthy path takes milliseconds.
const (
	reachWait   = 5 * time.Second
	blockedWait = 2 * time.Second
)

// brNetfilterSysctl exists once br_netfilter is loaded. Without it bridged
// frames skip iptables: kube-proxy's DNAT then happens only for routed
// traffic, and the hairpin case this test shows does not arise.
const brNetfilterSysctl = "/proc/sys/net/bridge/bridge-nf-call-iptables"

// Run shows on this node's kernel what hairpin mode does. It builds
// throwaway namespaces with netops/lab (a node with bridge cni0, two pods,
// a kube-proxy-style ClusterIP Service backed by pod 1, loaded with the
// host's iptables backend), then checks that pod 2 reaches the Service,
// that pod 1 cannot reach itself through it while its port's hairpin is
// off, and that it can once SetHairpin (the product's own path) turns it
// on. Everything it created is removed before it returns, also when ctx
// is cancelled half-way; it then returns the report so far and an error.
//
// A step that differs is recorded in the report, not returned as an error:
// the error is for not being able to run at all (privileges, bad options)
// and for interruption.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Prefix == "" {
		o.Prefix = "hpselftest"
	}
	if err := validatePrefix(o.Prefix); err != nil {
		return nil, err
	}
	switch o.Backend {
	case "", "auto", string(kubeproxy.BackendIPTablesNFT), string(kubeproxy.BackendIPTablesLegacy), string(kubeproxy.BackendNFTables):
	default:
		return nil, netops.Errorf(netops.ErrInvalid, "backend %q: use auto, iptables-nft, iptables-legacy or nftables", o.Backend)
	}
	if !hasCapability(unix.CAP_SYS_ADMIN) || !hasCapability(unix.CAP_NET_ADMIN) {
		return nil, netops.Errorf(netops.ErrPermission, "creating network namespaces needs CAP_SYS_ADMIN and CAP_NET_ADMIN: run as root")
	}
	r := &Report{Kernel: kernelRelease(), Namespaces: []string{}, Steps: []Step{}}
	t := &selftest{ctx: ctx, o: o, r: r}
	t.run()
	t.cleanup()
	if err := ctx.Err(); err != nil {
		return r, fmt.Errorf("selftest interrupted: %w", err)
	}
	r.Passed = len(r.Differed()) == 0
	return r, nil
}

type selftest struct {
	ctx context.Context
	o   Options
	r   *Report
	lab *lab.Lab
}

// record adds a step unless ctx ended during it (its outcome would be
// the interruption's, not the kernel's), and reports whether to go on.
func (t *selftest) record(s Step, start time.Time) bool {
	if t.ctx.Err() != nil {
		return false
	}
	s.Millis = time.Since(start).Milliseconds()
	t.r.Steps = append(t.r.Steps, s)
	if t.o.Step != nil {
		t.o.Step(s)
	}
	return true
}

func (t *selftest) run() {
	start := time.Now()
	backend, restore, detail, err := detectIptables(t.o.Backend)
	s := Step{Name: "kube-proxy rules", Want: "found", Got: string(backend), OK: err == nil, Detail: detail}
	if err != nil {
		s.Got, s.Detail = "not found", err.Error()
	}
	t.r.Backend, t.r.Restore = backend, restore
	if !t.record(s, start) || !s.OK {
		return
	}

	start = time.Now()
	s = Step{Name: "br_netfilter", Want: "loaded", Got: "loaded", OK: true}
	if _, err := os.Stat(brNetfilterSysctl); err != nil {
		s.Got, s.OK = "not loaded", false
		s.Detail = "bridged traffic skips iptables without it (kube-proxy needs it too): modprobe br_netfilter"
	}
	if !t.record(s, start) || !s.OK {
		return
	}

	start = time.Now()
	l, err := lab.New(lab.Options{
		Pods:      2,
		Prefix:    t.o.Prefix,
		Endpoints: []int{1},
		Restore:   restore,
		Created: func(name string) {
			t.r.Namespaces = append(t.r.Namespaces, name)
			if t.o.Created != nil {
				t.o.Created(name)
			}
		},
	})
	s = Step{Name: "build namespaces", Want: "built", Got: "built", OK: err == nil}
	if err != nil {
		s.Got, s.Detail = "failed", err.Error()
	} else {
		t.lab = l
		s.Detail = fmt.Sprintf("node %s: bridge %s, 2 pods, Service %s:%d -> pod1 %s:8080 (%s)",
			l.Node, l.Bridge, l.ServiceIP, l.ServicePort, l.Pod(1).IP, restore)
	}
	if !t.record(s, start) || !s.OK {
		return
	}

	self, other := l.Pod(1), l.Pod(2)
	if !t.connect("pod2 -> svc, hairpin off", other, "reach pod1") {
		return
	}
	if !t.connect("pod1 -> own svc, hairpin off", self, "blocked") {
		return
	}

	start = time.Now()
	s = Step{Name: "set hairpin on " + self.HostVeth, Want: "changed"}
	s.Got, s.Detail = t.enable(self.HostVeth)
	s.OK = s.Got == s.Want
	if !t.record(s, start) || !s.OK {
		return
	}

	if !t.connect("pod1 -> own svc, hairpin on", self, "reach pod1") {
		return
	}
	t.connect("pod2 -> svc, hairpin on", other, "reach pod1")
}

// enable turns hairpin on for port the way `hairpinctl enable` does.
func (t *selftest) enable(port string) (got, detail string) {
	c, err := netops.Open(t.lab.Node)
	if err != nil {
		return "failed", err.Error()
	}
	defer c.Close()
	ports, err := bridgeports.List(c, bridgeports.ListOptions{Bridges: []string{t.lab.Bridge}})
	if err != nil {
		return "failed", err.Error()
	}
	sel, fails := bridgeports.Select(c, ports, []string{port})
	if len(fails) > 0 {
		return "failed", fails[0].Error
	}
	res := bridgeports.SetHairpin(c, sel, true, false)
	switch {
	case len(res.Failed) > 0:
		return "failed", res.Failed[0].Error
	case len(res.Changed) == 1:
		return "changed", "RTM_SETLINK IFLA_BRPORT_MODE=1 on " + port
	}
	return "unchanged", port + " was already on: the lab did not start with hairpin off"
}

// connect records a connection from pod to the Service.
func (t *selftest) connect(name string, from *lab.Pod, want string) bool {
	wait := reachWait
	if want == "blocked" {
		wait = blockedWait
	}
	start := time.Now()
	answer, err := t.lab.ConnectServiceContext(t.ctx, from, wait)
	s := Step{Name: name, Want: want}
	switch {
	case err == nil:
		s.Got = "reach " + t.podLabel(answer)
		s.Detail = fmt.Sprintf("%s answered", answer)
	case isTimeout(err):
		s.Got = "blocked"
		s.Detail = fmt.Sprintf("no answer within %s", wait)
	default:
		s.Got = "error"
		s.Detail = err.Error()
	}
	s.OK = s.Got == s.Want
	return t.record(s, start)
}

func (t *selftest) podLabel(name string) string {
	for _, p := range t.lab.Pods {
		if p.Name == name {
			return fmt.Sprintf("pod%d", p.N)
		}
	}
	return name
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}

// cleanup removes the lab and checks that none of its namespaces is left.
// It runs after an interruption too: the step is recorded regardless.
func (t *selftest) cleanup() {
	if len(t.r.Namespaces) == 0 {
		return
	}
	start := time.Now()
	var err error
	if t.lab != nil {
		err = t.lab.Close()
	}
	var left []string
	for _, name := range t.r.Namespaces {
		if _, serr := os.Stat(filepath.Join(netops.NetnsDir, name)); serr == nil {
			left = append(left, name)
		}
	}
	s := Step{Name: "clean up", Want: "nothing left", Got: "nothing left", OK: true,
		Detail: fmt.Sprintf("removed %d namespaces", len(t.r.Namespaces))}
	if len(left) > 0 || err != nil {
		s.Got, s.OK = "left behind", false
		s.Detail = fmt.Sprintf("still under %s: %s", netops.NetnsDir, strings.Join(left, " "))
		if err != nil {
			s.Detail += "; " + err.Error()
		}
	}
	s.Millis = time.Since(start).Milliseconds()
	t.r.Steps = append(t.r.Steps, s)
	if t.o.Step != nil {
		t.o.Step(s)
	}
}

// detectIptables picks the iptables backend and the restore binary that
// loads it. "auto" asks the host's `iptables -V`, which names its mode
// since iptables 1.8 ("(nf_tables)" or "(legacy)"; older ones are legacy).
func detectIptables(want string) (b kubeproxy.Backend, restore, detail string, err error) {
	switch want {
	case string(kubeproxy.BackendNFTables):
		return kubeproxy.BackendNFTables, lab.RestoreNFTables, "chosen with --backend; kube-proxy's nftables-mode rules programmed over netlink", nil
	case "", "auto":
		out, err := exec.Command("iptables", "-V").CombinedOutput()
		if err != nil {
			// No iptables tools (a fresh machine, a minimal image):
			// program the Service as kube-proxy's nftables mode does,
			// which needs nothing but nf_tables in the kernel.
			return kubeproxy.BackendNFTables, lab.RestoreNFTables, "no iptables command on this machine: kube-proxy's nftables-mode rules programmed over netlink", nil
		}
		detail = strings.TrimSpace(string(out))
		b = kubeproxy.BackendIPTablesLegacy
		if strings.Contains(detail, "nf_tables") {
			b = kubeproxy.BackendIPTablesNFT
		}
	default:
		b = kubeproxy.Backend(want)
		detail = "chosen with --backend"
	}
	restore = "iptables-legacy-restore"
	if b == kubeproxy.BackendIPTablesNFT {
		restore = "iptables-nft-restore"
	}
	if _, err := exec.LookPath(restore); err != nil {
		if want != "" && want != "auto" {
			return b, "", detail, netops.Errorf(netops.ErrNotFound, "%s not found: install iptables with the %s backend", restore, b)
		}
		// An iptables without the mode-named binaries: its plain
		// iptables-restore is the mode -V reported.
		restore = "iptables-restore"
	}
	return b, restore, detail + "; rules loaded with " + restore, nil
}

func validatePrefix(p string) error {
	if len(p) > 32 {
		return netops.Errorf(netops.ErrInvalid, "namespace prefix %q is longer than 32 bytes", p)
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return netops.Errorf(netops.ErrInvalid, "namespace prefix %q: use lower-case letters, digits and '-'", p)
		}
	}
	return nil
}

// hasCapability reports whether capability c is in the effective set.
func hasCapability(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(uint(c)%32)) != 0
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
