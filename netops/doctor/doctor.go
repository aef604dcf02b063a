package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
	"github.com/hairpinctl/hairpinctl/netops/pods"
)

// CheckStatus is a check's verdict.
type CheckStatus string

// The verdicts, in the JSON and table as written here.
const (
	// StatusPass: the check found nothing wrong.
	StatusPass CheckStatus = "PASS"
	// StatusWarn: something is likely to hurt, or could not be checked.
	StatusWarn CheckStatus = "WARN"
	// StatusFail: hairpin traffic is broken by what was found.
	StatusFail CheckStatus = "FAIL"
	// StatusSkip: the check does not apply here (no bridge, no kube-proxy
	// rules, no CNI configuration, not permitted).
	StatusSkip CheckStatus = "SKIP"
)

// CheckStatuses lists every verdict, for exporters that emit one series
// per verdict.
var CheckStatuses = []CheckStatus{StatusPass, StatusWarn, StatusFail, StatusSkip}

// rank orders verdicts for "worst of".
func (s CheckStatus) rank() int {
	switch s {
	case StatusFail:
		return 3
	case StatusWarn:
		return 2
	case StatusPass:
		return 1
	}
	return 0
}

// Check IDs, stable: metrics and scripts key on them. A Service check's ID
// is CheckService + ":" + the service port ("service:default/web:http"),
// or CheckService + ":" + the argument that matched nothing.
const (
	// CheckBridgeHairpin: hairpin on every bridge port, or a promiscuous
	// bridge with duplicate suppression.
	CheckBridgeHairpin = "bridge-hairpin"
	// CheckBrNetfilter: net.bridge.bridge-nf-call-iptables = 1.
	CheckBrNetfilter = "br-netfilter"
	// CheckIPForward: net.ipv4.ip_forward = 1.
	CheckIPForward = "ip-forward"
	// CheckKubeProxy: which backend holds kube-proxy's rules, and only one.
	CheckKubeProxy = "kube-proxy"
	// CheckMasquerade: the mark-and-masquerade plumbing hairpin needs.
	CheckMasquerade = "masquerade"
	// CheckServices is the check of every Service, when none is named.
	CheckServices = "services"
	// CheckService prefixes the check of one named Service port.
	CheckService = "service"
	// CheckCNIConfig: the CNI configuration new pods get sets hairpinMode.
	CheckCNIConfig = "cni-config"
	// CheckConntrack: no insert failures or drops.
	CheckConntrack = "conntrack"
)

// Check is one diagnosis.
type Check struct {
	// ID names the check (see the Check* constants); stable across releases.
	ID string `json:"id"`
	// Status is PASS, WARN, FAIL or SKIP.
	Status CheckStatus `json:"status"`
	// Finding says what was found, in one line.
	Finding string `json:"finding"`
	// Fix is what to do about it, a command where one exists; "" when
	// nothing needs doing.
	Fix string `json:"fix"`
	// Details are the facts behind the finding, one a line.
	Details []string `json:"details"`
	// Pods are the pods behind the ports and endpoints the finding and
	// details speak of, when doctor was asked to name them
	// (Options.Pods), and always for a --probe check (the pod probed
	// from); empty otherwise.
	Pods []PodRef `json:"pods"`
}

// PodRef is a bridge port a check speaks of and the pod behind it.
type PodRef struct {
	// Bridge and Port are the bridge port.
	Bridge string `json:"bridge"`
	Port   string `json:"port"`
	// Endpoint is the Service endpoint (IP:port) behind the port, for a
	// Service check; "" for a port.
	Endpoint string `json:"endpoint,omitempty"`
	// Pod is the pod, with where its name came from (pod.source); absent
	// when neither the CNI result cache nor the container runtime names
	// it: the text then says "pod unknown".
	Pod *pods.Pod `json:"pod,omitempty"`
}

// Summary counts the verdicts.
type Summary struct {
	// Status is the worst verdict: FAIL, WARN, PASS, or SKIP when every
	// check skipped.
	Status CheckStatus `json:"status"`
	// Pass, Warn, Fail and Skip count the checks with each verdict.
	Pass int `json:"pass"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
	Skip int `json:"skip"`
	// Netns is the namespace examined: the --netns value, else its name
	// under /run/netns (run under `ip netns exec NAME`), else "host".
	Netns string `json:"netns"`
}

// Report is doctor's answer.
type Report struct {
	// Checks in a fixed order: bridge hairpin, br_netfilter, ip_forward,
	// kube-proxy backend, masquerade, Services, CNI configuration, conntrack.
	Checks []Check `json:"checks"`
	// Summary counts the verdicts.
	Summary Summary `json:"summary"`
	// Bridges and Ports are the bridges and bridge ports looked at, for
	// exporters (metrics); not part of doctor's JSON.
	Bridges []string           `json:"-"`
	Ports   []bridgeports.Port `json:"-"`
}

// Options says what doctor looks at.
type Options struct {
	// Bridges limits the bridge checks to these bridges; empty means every
	// bridge in the namespace.
	Bridges []string
	// CNIConfDir is the CNI configuration directory [DefaultCNIConfDir].
	CNIConfDir string
	// Services are Service selectors, as ParseServiceArg reads them (IP,
	// IP:PORT, NS/NAME, NS/NAME:PORT); empty checks every Service kube-proxy programmed, in
	// one check.
	Services []string
	// Pods, when not nil, names the pod behind each port a finding
	// speaks of, as bridgeports.List does (ListOptions.Pods).
	Pods *bridgeports.PodOptions
}

// doctorFacts is everything doctor read from the kernel and the
// filesystem; diagnose judges it without touching either, so every
// finding can be tested on captured data.
type doctorFacts struct {
	// netns is the --netns value, "" for the caller's own namespace.
	netns string
	// label names the namespace in findings (Client.NetnsLabel); "" is
	// netns, or "host".
	label string
	// node is the name of the Node this namespace belongs to, "" when
	// not known.
	node string
	// bridgesAsked is --bridge.
	bridgesAsked []string
	bridges      []bridgeFacts
	// bridgesErr is why the bridges or their ports could not be listed.
	bridgesErr error
	// podsNamed: the ports were listed with their pods (Port.Pod), so a
	// port without one is a pod nothing names.
	podsNamed bool

	brNfCallIPTables sysctlFact
	ipForward        sysctlFact

	// services is kube-proxy's NAT as read; servicesErr why it could not
	// be.
	services    *kubeproxy.Result
	servicesErr error
	// selectors are the Services asked about.
	selectors []string

	cniDir   string
	cniFiles []cniFile
	// cniErr is why the directory could not be read (os.ErrNotExist when
	// there is none).
	cniErr error

	conntrack    conntrackCounters
	conntrackErr error
}

// bridgeFacts is one bridge and its ports.
type bridgeFacts struct {
	Name string
	MAC  string
	// Promisc: the bridge itself is promiscuous (IFF_PROMISC set by
	// someone, as kubelet's promiscuous-bridge mode and the bridge
	// plugin's promiscMode do), so it passes every frame up to the host
	// stack, hairpin ones included.
	Promisc bool
	Ports   []bridgeports.Port
	// Dedup is what was found of a duplicate-suppression rule; only
	// looked for when the bridge is promiscuous and a port has hairpin off.
	Dedup dedupFacts
}

// dedupFacts is the search for the ebtables rule kubenet installed with
// promiscuous-bridge mode: a promiscuous bridge delivers a frame both to
// the port and up the stack, so the pod gets duplicates unless frames the
// bridge itself sends from the pod range are dropped.
type dedupFacts struct {
	// Looked is true when a search was made.
	Looked bool
	// Rule is the rule found, "" when none.
	Rule string
	// Where names the table/chain or tool the rule was found in.
	Where string
	// Unchecked lists what could not be searched and why.
	Unchecked []string
}

// sysctlFact is one /proc/sys value in the namespace.
type sysctlFact struct {
	Value string
	// Missing: the file does not exist (the module providing it is not loaded).
	Missing bool
	Err     error
}

// conntrackCounters are conntrack's per-CPU statistics summed, and the
// table's fill.
type conntrackCounters struct {
	InsertFailed uint64
	Drop         uint64
	EarlyDrop    uint64
	Invalid      uint64
	Error        uint64
	Entries      uint64
	MaxEntries   uint64
}

// diagnose runs every check on the facts.
func diagnose(f *doctorFacts) *Report {
	r := &Report{Checks: []Check{}, Bridges: []string{}, Ports: []bridgeports.Port{}}
	for _, b := range f.bridges {
		r.Bridges = append(r.Bridges, b.Name)
		r.Ports = append(r.Ports, b.Ports...)
	}
	r.Checks = append(r.Checks,
		checkBridgeHairpin(f),
		checkBrNetfilter(f),
		checkIPForward(f),
		checkKubeProxy(f),
		checkMasquerade(f),
	)
	r.Checks = append(r.Checks, checkServices(f)...)
	r.Checks = append(r.Checks, checkCNI(f), checkConntrack(f))
	for i := range r.Checks {
		if r.Checks[i].Details == nil {
			r.Checks[i].Details = []string{}
		}
		if r.Checks[i].Pods == nil {
			r.Checks[i].Pods = []PodRef{}
		}
	}
	r.Summary = summarize(r.Checks, f.netnsLabel())
	return r
}

// AddChecks appends checks made outside doctor (doctor --probe's) and
// counts them in the summary.
func (r *Report) AddChecks(checks ...Check) {
	r.Checks = append(r.Checks, checks...)
	r.Summary = summarize(r.Checks, r.Summary.Netns)
}

func summarize(checks []Check, netns string) Summary {
	s := Summary{Status: StatusSkip, Netns: netns}
	if s.Netns == "" {
		s.Netns = "host"
	}
	for _, c := range checks {
		switch c.Status {
		case StatusPass:
			s.Pass++
		case StatusWarn:
			s.Warn++
		case StatusFail:
			s.Fail++
		case StatusSkip:
			s.Skip++
		}
		if c.Status.rank() > s.Status.rank() {
			s.Status = c.Status
		}
	}
	return s
}

// hairpinctlCmd is a hairpinctl command line that acts on the namespace
// doctor examined.
func (f *doctorFacts) hairpinctlCmd(args string) string {
	return netops.HairpinctlCmd(f.netns, args)
}

// nsCmd is a shell command run in the namespace doctor examined.
func (f *doctorFacts) nsCmd(cmd string) string {
	switch {
	case f.netns == "":
		return cmd
	case strings.Contains(f.netns, "/"):
		return "nsenter --net=" + netops.ShellQuote(f.netns) + " " + cmd
	default:
		return "ip netns exec " + netops.ShellQuote(f.netns) + " " + cmd
	}
}

// couldNotCheck is the verdict when reading the facts failed: SKIP when
// privileges were missing, WARN otherwise.
func couldNotCheck(id, what string, err error) Check {
	if errors.Is(err, netops.ErrPermission) || errors.Is(err, fs.ErrPermission) {
		return Check{ID: id, Status: StatusSkip, Finding: fmt.Sprintf("%s: not permitted (%v)", what, err), Fix: "run as root"}
	}
	return Check{ID: id, Status: StatusWarn, Finding: fmt.Sprintf("could not check %s: %v", what, err)}
}

// listNames joins names, eliding past max: "veth1, veth3 and 40 more".
func listNames(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:max], ", "), len(names)-max)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// noBridgeReason is why the bridge checks do not apply.
func (f *doctorFacts) noBridgeReason(what string) string {
	return fmt.Sprintf("no Linux bridge in netns %s: %s does not apply (a routed CNI such as Calico or Cilium needs none)", f.netnsLabel(), what)
}

func (f *doctorFacts) netnsLabel() string {
	if f.label != "" {
		return f.label
	}
	if f.netns == "" {
		return "host"
	}
	return f.netns
}

// Check 1: hairpin on every port, or a promiscuous bridge with duplicate
// suppression.
func checkBridgeHairpin(f *doctorFacts) Check {
	c := Check{ID: CheckBridgeHairpin}
	if f.bridgesErr != nil {
		return couldNotCheck(c.ID, "bridge ports", f.bridgesErr)
	}
	if len(f.bridges) == 0 {
		c.Status, c.Finding = StatusSkip, f.noBridgeReason("bridge hairpin")
		return c
	}
	c.Status = StatusPass
	var fail, warn []string
	var failBridges, warnBridges []string
	total := 0
	for _, b := range f.bridges {
		off, judged := f.judgePorts(&c, b)
		total += judged
		switch {
		case judged == 0:
			c.Details = append(c.Details, fmt.Sprintf("%s: no pod ports yet", b.Name))
		case len(off) == 0:
			c.Details = append(c.Details, fmt.Sprintf("%s: hairpin on for all %s", b.Name, plural(judged, "pod port", "pod ports")))
		case b.Promisc && b.Dedup.Rule != "":
			c.Details = append(c.Details,
				fmt.Sprintf("%s: promiscuous (promiscuous-bridge mode) with duplicate suppression (%s: %s); %d of %d ports have hairpin off and rely on it: %s",
					b.Name, b.Dedup.Where, b.Dedup.Rule, len(off), judged, strings.Join(off, ", ")),
				fmt.Sprintf("%s: not checked: that the rule is reached from the bridge's OUTPUT hook and covers the whole pod range", b.Name),
				fmt.Sprintf("%s: not checked: that this kernel carries hairpin traffic through a promiscuous bridge; with br_netfilter's bridged DNAT, Linux 6.18 in hairpinctl's lab does not (hairpin mode on the ports does)", b.Name))
		case b.Promisc:
			warn = append(warn, fmt.Sprintf("%s is promiscuous (promiscuous-bridge mode) but no duplicate-suppression rule was found: hairpin traffic gets through, duplicated", b.Name))
			warnBridges = append(warnBridges, b.Name)
			c.Details = append(c.Details, fmt.Sprintf("%s: promiscuous; %d of %d pod ports have hairpin off: %s", b.Name, len(off), judged, strings.Join(off, ", ")))
			for _, u := range b.Dedup.Unchecked {
				c.Details = append(c.Details, fmt.Sprintf("%s: not checked: %s", b.Name, u))
			}
		default:
			fail = append(fail, fmt.Sprintf("%d of %d pod ports of %s have hairpin off: %s", len(off), judged, b.Name, listNames(off, 4)))
			failBridges = append(failBridges, b.Name)
			c.Details = append(c.Details, fmt.Sprintf("%s: hairpin off: %s", b.Name, strings.Join(off, ", ")))
		}
	}
	switch {
	case len(fail) > 0:
		c.Status = StatusFail
		c.Finding = strings.Join(append(fail, warn...), "; ")
		c.Fix = f.enableCmd(append(failBridges, warnBridges...))
	case len(warn) > 0:
		c.Status = StatusWarn
		c.Finding = strings.Join(warn, "; ")
		c.Fix = f.enableCmd(warnBridges) + " (hairpin mode needs no duplicate suppression)"
	default:
		names := make([]string, len(f.bridges))
		for i, b := range f.bridges {
			names[i] = b.Name
		}
		c.Finding = fmt.Sprintf("every pod port of %s reflects hairpin traffic (%s)", strings.Join(names, ", "), plural(total, "pod port", "pod ports"))
	}
	return c
}

// judgePorts judges a bridge's ports for checkBridgeHairpin: it returns
// the ports with hairpin off, named with their pods, and how many ports
// were judged; it adds their pods to c and the ports not judged to its
// details. Only a pod's port that can carry traffic is judged: hairpin on
// an uplink would reflect floods back out of it, and a down or
// STP-disabled port forwards nothing either way.
func (f *doctorFacts) judgePorts(c *Check, b bridgeFacts) (off []string, judged int) {
	var ignored []string
	for _, p := range b.Ports {
		if why := portNotJudged(p); why != "" {
			ignored = append(ignored, p.Name+" ("+why+")")
			continue
		}
		judged++
		if !p.Hairpin {
			off = append(off, p.Name+f.podSuffix(p))
			if f.podsNamed {
				c.Pods = append(c.Pods, PodRef{Bridge: b.Name, Port: p.Name, Pod: p.Pod})
			}
		}
	}
	if len(ignored) > 0 {
		c.Details = append(c.Details, fmt.Sprintf("%s: not judged: %s", b.Name, strings.Join(ignored, ", ")))
	}
	return off, judged
}

// enableCmd is the command that turns hairpin on for the bridges' ports.
func (f *doctorFacts) enableCmd(brs []string) string {
	args := "enable"
	for _, b := range brs {
		args += " --bridge " + netops.ShellQuote(b)
	}
	return f.hairpinctlCmd(args)
}

// podSuffix is " (pod NS/NAME)" for a port whose pod is named, " (pod
// unknown)" for one nothing names, "" when the names were not asked for.
func (f *doctorFacts) podSuffix(p bridgeports.Port) string {
	if !f.podsNamed {
		return ""
	}
	if n := p.Pod.FullName(); n != "" {
		return " (pod " + n + ")"
	}
	return " (pod unknown)"
}

// portNotJudged says why bridge-hairpin leaves p out, "" when it judges it.
func portNotJudged(p bridgeports.Port) string {
	switch {
	case !p.PodPort:
		return strings.TrimPrefix(bridgeports.NotPodPort(p), "not a pod's port: ")
	case p.OperState == "down" || p.OperState == "lowerlayerdown":
		return "down"
	case p.State == "disabled":
		return "STP disabled"
	}
	return ""
}

// Check 2: br_netfilter. Without it bridged frames skip iptables: a pod's
// packet to a ClusterIP still reaches the host (via the gateway) and is
// DNATed, but the endpoint's reply to a pod on the same bridge is bridged
// straight back without the reverse NAT, and the client drops it.
func checkBrNetfilter(f *doctorFacts) Check {
	c := Check{ID: CheckBrNetfilter}
	const key = "net.bridge.bridge-nf-call-iptables"
	if f.bridgesErr == nil && len(f.bridges) == 0 {
		c.Status, c.Finding = StatusSkip, f.noBridgeReason("br_netfilter")
		return c
	}
	s := f.brNfCallIPTables
	switch {
	case s.Err != nil:
		return couldNotCheck(c.ID, key, s.Err)
	case s.Missing:
		c.Status = StatusFail
		c.Finding = key + " does not exist: the br_netfilter module is not loaded, so traffic between pods on the bridge skips kube-proxy's NAT"
		c.Fix = "modprobe br_netfilter && " + f.nsCmd("sysctl -w "+key+"=1") + " (persist: /etc/modules-load.d/, /etc/sysctl.d/)"
	case s.Value == "1":
		c.Status = StatusPass
		c.Finding = key + " = 1: bridged pod traffic passes through iptables"
	default:
		c.Status = StatusFail
		c.Finding = fmt.Sprintf("%s = %s: traffic between pods on the bridge skips kube-proxy's NAT, so replies from a Service's endpoint are not un-DNATed", key, s.Value)
		c.Fix = f.nsCmd("sysctl -w "+key+"=1") + " (persist in /etc/sysctl.d/)"
	}
	return c
}

// Check 3: IP forwarding.
func checkIPForward(f *doctorFacts) Check {
	c := Check{ID: CheckIPForward}
	const key = "net.ipv4.ip_forward"
	s := f.ipForward
	switch {
	case s.Err != nil:
		return couldNotCheck(c.ID, key, s.Err)
	case s.Missing:
		c.Status = StatusWarn
		c.Finding = key + " does not exist in this namespace"
	case s.Value == "1":
		c.Status = StatusPass
		c.Finding = key + " = 1"
	default:
		c.Status = StatusFail
		c.Finding = fmt.Sprintf("%s = %s: the node does not route pod traffic (to Services, other nodes and the outside)", key, s.Value)
		c.Fix = f.nsCmd("sysctl -w "+key+"=1") + " (persist in /etc/sysctl.d/)"
	}
	return c
}

// backendNames joins backend names.
func backendNames(bs []kubeproxy.Backend) string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = string(b)
	}
	return strings.Join(s, ", ")
}

// kubeRulesUsable reports whether the Service checks have rules to read,
// and if not, why.
func (f *doctorFacts) kubeRulesUsable() (bool, string) {
	switch {
	case f.servicesErr != nil:
		return false, "kube-proxy's rules could not be read"
	case f.services == nil || len(f.services.BackendsWithRules) == 0:
		return false, "no kube-proxy rules were found"
	}
	return true, ""
}

// Check 4: which backend holds kube-proxy's rules, and whether more than one does.
func checkKubeProxy(f *doctorFacts) Check {
	c := Check{ID: CheckKubeProxy}
	if f.servicesErr != nil {
		return couldNotCheck(c.ID, "kube-proxy's rules", f.servicesErr)
	}
	res := f.services
	if res == nil {
		res = &kubeproxy.Result{}
	}
	c.Details = append(c.Details, "checked: "+backendNames(res.Checked))
	c.Details = append(c.Details, res.Warnings...)
	switch len(res.BackendsWithRules) {
	case 0:
		c.Status = StatusWarn
		var unread []kubeproxy.Backend
		for _, b := range []kubeproxy.Backend{kubeproxy.BackendIPTablesNFT, kubeproxy.BackendIPTablesLegacy, kubeproxy.BackendNFTables} {
			if !slices.Contains(res.Checked, b) {
				unread = append(unread, b)
			}
		}
		if len(unread) > 0 {
			// Not "kube-proxy is not running": its rules may be in
			// the backend that could not be read.
			c.Finding = fmt.Sprintf("no kube-proxy rules in %s, but %s could not be read (see details): kube-proxy's rules may be there; the Service checks are skipped", backendNames(res.Checked), backendNames(unread))
			c.Fix = "make it readable (see details: on a host, install the iptables package), or run hairpinctl on the host"
			break
		}
		c.Finding = fmt.Sprintf("no kube-proxy rules in %s: kube-proxy is not running here, or something else (IPVS mode, Cilium, kube-router) does its job; the Service checks are skipped", backendNames(res.Checked))
		c.Fix = "kubectl -n kube-system get pods -l k8s-app=kube-proxy -o wide (is one running on this node?)"
	case 1:
		c.Status = StatusPass
		c.Finding = fmt.Sprintf("kube-proxy's rules are in %s (%s)", res.Backend, plural(len(res.Services), "service port", "service ports"))
	default:
		c.Status = StatusWarn
		c.Finding = fmt.Sprintf("kube-proxy rules in %s (split brain): the kernel applies both sets and the one kube-proxy no longer writes goes stale; doctor read %s",
			strings.Join(strings.Split(backendNames(res.BackendsWithRules), ", "), " and "), res.Backend)
		c.Fix = "find the backend kube-proxy writes (iptables -V in its pod) and delete the KUBE-* chains of the other"
	}
	return c
}

// Check 5: the masquerade plumbing hairpin connections depend on.
func checkMasquerade(f *doctorFacts) Check {
	c := Check{ID: CheckMasquerade}
	if ok, why := f.kubeRulesUsable(); !ok {
		c.Status, c.Finding = StatusSkip, why
		return c
	}
	m := f.services.Masquerade
	markChain, postChain, hook := "KUBE-MARK-MASQ", "KUBE-POSTROUTING", "POSTROUTING"
	if f.services.Backend == kubeproxy.BackendNFTables {
		markChain, postChain, hook = "mark-for-masquerade", "masquerading", "nat-postrouting"
		if m.HairpinSet {
			// Releases with the hairpin-connections set have no
			// mark-for-masquerade chain: the rules set the mark themselves.
			markChain = "the services and external chains"
		}
	}
	mark := m.Mark
	if mark == "" {
		mark = "the masquerade mark"
	}
	var missing []string
	if !m.MarkMasq {
		missing = append(missing, fmt.Sprintf("%s does not set %s", markChain, mark))
	}
	if !m.PostroutingMasquerade {
		missing = append(missing, fmt.Sprintf("%s does not masquerade marked packets", postChain))
	}
	if !m.PostroutingHooked {
		missing = append(missing, fmt.Sprintf("%s does not jump to %s, so its masquerade rule never runs", hook, postChain))
	}
	if m.HairpinSet {
		c.Details = append(c.Details, fmt.Sprintf("%s masquerades the hairpin-connections set: yes", postChain))
	}
	c.Details = append(c.Details,
		fmt.Sprintf("%s sets the mark: %s", markChain, yesNo(m.MarkMasq)),
		fmt.Sprintf("%s masquerades marked packets: %s", postChain, yesNo(m.PostroutingMasquerade)),
		fmt.Sprintf("%s jumps to %s: %s", hook, postChain, yesNo(m.PostroutingHooked)))
	if len(missing) == 0 {
		c.Status = StatusPass
		c.Finding = fmt.Sprintf("%s marks with %s and %s masquerades what is marked (%s)", markChain, mark, postChain, f.services.Backend)
		return c
	}
	c.Status = StatusFail
	c.Finding = strings.Join(missing, "; ") + ": a pod's connection to itself through a Service keeps its own source address, so it gets no reply"
	c.Fix = f.kubeProxyRestart()
	return c
}

// kubeProxyRestart is the fix for rules kube-proxy should have written:
// delete this node's kube-proxy pod, selected by its spec.nodeName. The
// fix says where the name came from: kubelet registers the host's name
// unless its --hostname-override says otherwise.
func (f *doctorFacts) kubeProxyRestart() string {
	node, whence := "NODE", "NODE: the name of the Node whose namespace this is"
	if f.node != "" {
		node, whence = netops.ShellQuote(f.node), "this host's name; kubelet's --hostname-override may differ"
	}
	return "restart kube-proxy on this node so it rewrites its rules: kubectl -n kube-system delete pod -l k8s-app=kube-proxy --field-selector spec.nodeName=" + node + " (" + whence + ")"
}

// serviceLabel names a service port the way the findings do:
// "default/web:http 10.96.0.10:80".
func serviceLabel(s kubeproxy.Service) string {
	return serviceName(s) + " " + net.JoinHostPort(s.ClusterIP, strconv.Itoa(s.Port))
}

// serviceName is "ns/name" or "ns/name:port".
func serviceName(s kubeproxy.Service) string {
	n := s.Namespace + "/" + s.Name
	if s.PortName != "" {
		n += ":" + s.PortName
	}
	return n
}

// portIndex finds the bridge port behind a pod IP.
type portIndex map[netip.Addr]portRef

type portRef struct {
	port   bridgeports.Port
	bridge *bridgeFacts
}

func (f *doctorFacts) portIndex() (portIndex, int) {
	idx := portIndex{}
	unknown := 0
	for i := range f.bridges {
		b := &f.bridges[i]
		for _, p := range b.Ports {
			if len(p.PodIPs) == 0 {
				unknown++
			}
			for _, ip := range p.PodIPs {
				if a, err := netip.ParseAddr(ip); err == nil {
					idx[a.Unmap()] = portRef{port: p, bridge: b}
				}
			}
		}
	}
	return idx, unknown
}

// serviceVerdict is what was found for one service port.
type serviceVerdict struct {
	status   CheckStatus
	problems []string // headline per problem, worst first
	details  []string
	// enable are ports to turn hairpin on for; restart says kube-proxy's
	// rules need rewriting.
	enable  []string
	restart bool
	// pods are this node's endpoints the details speak of.
	pods []PodRef
}

// judgeService checks every endpoint of s: its hairpin masquerade rule,
// and hairpin on the bridge port it sits behind, if it is on this node.
func (f *doctorFacts) judgeService(s kubeproxy.Service, idx portIndex) serviceVerdict {
	v := serviceVerdict{status: StatusPass}
	label := serviceLabel(s)
	if s.NoEndpoints || len(s.Endpoints) == 0 {
		// Not a hairpin problem, and a permanent WARN would be noise in
		// every metrics scrape: a detail only.
		v.details = append(v.details, label+" has no endpoints: kube-proxy rejects its connections")
		return v
	}
	n := len(s.Endpoints)
	hang := "every one of its connections will hang"
	if n > 1 {
		hang = fmt.Sprintf("1 in %d of its connections will hang", n)
	}
	var warns []string
	for _, ep := range s.Endpoints {
		epLabel := net.JoinHostPort(ep.IP, strconv.Itoa(ep.Port))
		head := label + " → endpoint " + epLabel
		ref, local := portRef{}, false
		if a, err := netip.ParseAddr(ep.IP); err == nil {
			ref, local = idx[a.Unmap()]
		}
		// kube-proxy's nftables mode lists only this node's endpoints in
		// hairpin-connections: another node's endpoint needs no hairpin
		// masquerade here (its own node masquerades it), so it is judged
		// only when it sits behind a port of this node. iptables mode writes
		// the rule for every endpoint, so a missing one is a fault anywhere.
		applies := local || !f.services.Masquerade.HairpinSet
		if local {
			epLabel += f.podSuffix(ref.port)
			head = label + " → endpoint " + epLabel
			if f.podsNamed {
				v.pods = append(v.pods, PodRef{Bridge: ref.bridge.Name, Port: ref.port.Name, Endpoint: net.JoinHostPort(ep.IP, strconv.Itoa(ep.Port)), Pod: ref.port.Pod})
			}
		}
		if !ep.HairpinMasq && !applies {
			v.details = append(v.details, fmt.Sprintf("%s: not behind a bridge port of this node: the hairpin masquerade does not apply here", epLabel))
			continue
		}
		if !ep.HairpinMasq {
			v.status = StatusFail
			v.restart = true
			rule := fmt.Sprintf("-s %s -j KUBE-MARK-MASQ", ep.IP)
			if f.services.Masquerade.HairpinSet {
				rule = fmt.Sprintf("%s . %s . %s . %d in the hairpin-connections set", ep.IP, ep.IP, strings.ToLower(s.Protocol), ep.Port)
			}
			v.problems = append(v.problems, fmt.Sprintf("%s has no hairpin masquerade rule (%s): it cannot reach itself through this Service (%s)", head, rule, hang))
		}
		switch {
		case !local:
			v.details = append(v.details, fmt.Sprintf("%s: masquerade rule %s; not behind a bridge port of this node", epLabel, yesNo(ep.HairpinMasq)))
		case ref.port.Hairpin:
			v.details = append(v.details, fmt.Sprintf("%s: masquerade rule %s; behind %s on %s, hairpin on", epLabel, yesNo(ep.HairpinMasq), ref.port.Name, ref.bridge.Name))
		case ref.bridge.Promisc && ref.bridge.Dedup.Rule != "":
			v.details = append(v.details, fmt.Sprintf("%s: masquerade rule %s; behind %s on %s, hairpin off, bridge promiscuous with duplicate suppression (not checked: that the kernel carries hairpin traffic that way; see %s)", epLabel, yesNo(ep.HairpinMasq), ref.port.Name, ref.bridge.Name, CheckBridgeHairpin))
		case ref.bridge.Promisc:
			warns = append(warns, fmt.Sprintf("%s sits behind %s on %s with hairpin off; the bridge is promiscuous without duplicate suppression, so its hairpin traffic arrives duplicated", head, ref.port.Name, ref.bridge.Name))
			v.enable = append(v.enable, ref.port.Name)
			v.details = append(v.details, fmt.Sprintf("%s: masquerade rule %s; behind %s on %s, hairpin off, promiscuous bridge", epLabel, yesNo(ep.HairpinMasq), ref.port.Name, ref.bridge.Name))
		default:
			v.status = StatusFail
			v.enable = append(v.enable, ref.port.Name)
			v.problems = append(v.problems, fmt.Sprintf("%s sits behind %s on %s with hairpin off: it cannot reach itself through this Service (%s)", head, ref.port.Name, ref.bridge.Name, hang))
			v.details = append(v.details, fmt.Sprintf("%s: masquerade rule %s; behind %s on %s, hairpin off", epLabel, yesNo(ep.HairpinMasq), ref.port.Name, ref.bridge.Name))
		}
	}
	if len(warns) > 0 && v.status == StatusPass {
		v.status = StatusWarn
	}
	v.problems = append(v.problems, warns...)
	return v
}

// fix turns the verdicts' remedies into one line.
func (f *doctorFacts) serviceFix(enable []string, restart bool) string {
	var fixes []string
	if len(enable) > 0 {
		seen := map[string]bool{}
		var ports []string
		for _, p := range enable {
			if !seen[p] {
				seen[p] = true
				ports = append(ports, netops.ShellQuote(p))
			}
		}
		fixes = append(fixes, f.hairpinctlCmd("enable "+strings.Join(ports, " ")))
	}
	if restart {
		fixes = append(fixes, f.kubeProxyRestart())
	}
	return strings.Join(fixes, "; ")
}

// Check 6: the join of Services, endpoints, bridge ports and hairpin.
func checkServices(f *doctorFacts) []Check {
	if ok, why := f.kubeRulesUsable(); !ok {
		id := CheckServices
		if len(f.selectors) > 0 {
			id = CheckService + ":" + strings.Join(f.selectors, ",")
		}
		return []Check{{ID: id, Status: StatusSkip, Finding: why}}
	}
	idx, unknown := f.portIndex()
	var note []string
	switch {
	case f.bridgesErr != nil:
		note = append(note, "bridge ports could not be listed: endpoints were not joined to ports")
	case len(f.bridges) == 0:
		note = append(note, "no bridge in this namespace: bridge hairpin does not apply; only the masquerade rules were checked")
	case unknown > 0:
		note = append(note, fmt.Sprintf("%s whose pod IPs could not be learnt: endpoints behind them count as not on this node", plural(unknown, "port", "ports")))
	}
	if len(f.selectors) == 0 {
		return []Check{f.allServices(idx, note)}
	}
	var out []Check
	for _, sel := range f.selectors {
		arg, err := kubeproxy.NewServiceArg(sel)
		if err != nil { // validated by Doctor
			continue
		}
		found := false
		for _, s := range f.services.Services {
			if !arg.Matches(&s) {
				continue
			}
			found = true
			v := f.judgeService(s, idx)
			c := Check{ID: CheckService + ":" + serviceName(s), Status: v.status, Details: append(v.details, note...), Pods: v.pods}
			if len(v.problems) > 0 {
				c.Finding = v.problems[0]
				if len(v.problems) > 1 {
					c.Finding += fmt.Sprintf(" (and %d more, see details)", len(v.problems)-1)
					c.Details = append(v.problems[1:], c.Details...)
				}
				c.Fix = f.serviceFix(v.enable, v.restart)
			} else {
				c.Finding = fmt.Sprintf("%s: all %s have their hairpin masquerade rule, and hairpin is on wherever one sits behind this node's bridge", serviceLabel(s), plural(len(s.Endpoints), "endpoint", "endpoints"))
			}
			out = append(out, c)
		}
		if !found {
			out = append(out, Check{
				ID:      CheckService + ":" + sel,
				Status:  StatusWarn,
				Finding: fmt.Sprintf("no Service %s in kube-proxy's %s rules: a connection to it is not load-balanced on this node", sel, f.services.Backend),
				Fix:     "check the name or IP: kubectl get svc -A -o wide",
			})
		}
	}
	return out
}

// allServices is check 6 over every Service, as one check.
func (f *doctorFacts) allServices(idx portIndex, note []string) Check {
	c := Check{ID: CheckServices, Status: StatusPass}
	var fails, warns []string
	var enable []string
	restart := false
	endpoints, local := 0, 0
	var quiet []string            // Services without endpoints: said, not judged
	seenPods := map[string]bool{} // an endpoint of several Services is one pod
	for _, s := range f.services.Services {
		v := f.judgeService(s, idx)
		if len(s.Endpoints) == 0 {
			quiet = append(quiet, v.details...)
		}
		endpoints += len(s.Endpoints)
		for _, ep := range s.Endpoints {
			if a, err := netip.ParseAddr(ep.IP); err == nil {
				if _, ok := idx[a.Unmap()]; ok {
					local++
				}
			}
		}
		switch v.status {
		case StatusFail:
			fails = append(fails, v.problems...)
		case StatusWarn:
			warns = append(warns, v.problems...)
		}
		enable = append(enable, v.enable...)
		restart = restart || v.restart
		for _, pr := range v.pods {
			if k := pr.Port + " " + pr.Endpoint; !seenPods[k] {
				seenPods[k] = true
				c.Pods = append(c.Pods, pr)
			}
		}
	}
	problems := append(fails, warns...)
	c.Details = append(c.Details, problems...)
	c.Details = append(c.Details, quiet...)
	c.Details = append(c.Details, note...)
	switch {
	case len(fails) > 0:
		c.Status = StatusFail
	case len(warns) > 0:
		c.Status = StatusWarn
	}
	if len(problems) > 0 {
		c.Finding = problems[0]
		if len(problems) > 1 {
			c.Finding += fmt.Sprintf(" (and %d more, see details)", len(problems)-1)
		}
		c.Fix = f.serviceFix(enable, restart)
		return c
	}
	c.Finding = fmt.Sprintf("%s, %s: the hairpin masquerade is in place wherever it applies; the %d behind this node's bridge ports have hairpin on",
		plural(len(f.services.Services), "service port", "service ports"), plural(endpoints, "endpoint", "endpoints"), local)
	return c
}

// Check 7: the CNI configuration new pods get.
func checkCNI(f *doctorFacts) Check {
	c := Check{ID: CheckCNIConfig}
	if f.cniErr != nil {
		if errors.Is(f.cniErr, fs.ErrNotExist) {
			c.Status, c.Finding = StatusSkip, fmt.Sprintf("no CNI configuration directory %s", f.cniDir)
			return c
		}
		return couldNotCheck(c.ID, "the CNI configuration in "+f.cniDir, f.cniErr)
	}
	var active *cniFile
	for i := range f.cniFiles {
		file := &f.cniFiles[i]
		switch {
		case file.Err != nil:
			c.Details = append(c.Details, fmt.Sprintf("skipped, as the runtime does: %v", file.Err))
		case active == nil:
			active = file
			c.Details = append(c.Details, fmt.Sprintf("%s: network %q, the one new pods get (first valid file)", file.Path, file.Name))
		default:
			c.Details = append(c.Details, fmt.Sprintf("%s: not used (%s comes first)", file.Path, active.Path))
		}
	}
	if active == nil {
		c.Status = StatusSkip
		c.Finding = fmt.Sprintf("no valid CNI configuration in %s", f.cniDir)
		if len(f.cniFiles) > 0 {
			c.Status = StatusWarn
			c.Finding = fmt.Sprintf("no file in %s can be loaded (%s): new pods cannot start", f.cniDir, plural(len(f.cniFiles), "file", "files"))
		}
		return c
	}
	var types []string
	c.Status = StatusPass
	bridged := false
	for _, p := range active.Plugins {
		types = append(types, p.Type)
		if !p.Bridges {
			continue
		}
		bridged = true
		where := fmt.Sprintf("%s: plugin %s", active.Path, p.Type)
		if p.Via != "" {
			where += " (its " + p.Via + ")"
		}
		switch {
		case p.HairpinMode && p.PromiscMode:
			c.Status = StatusFail
			c.Finding = fmt.Sprintf("%s sets hairpinMode and promiscMode together: the bridge plugin rejects that, so new pods fail to start", where)
			c.Fix = fmt.Sprintf(`remove "promiscMode" from %s`, active.Path)
			return c
		case p.HairpinMode:
			c.Finding = fmt.Sprintf(`%s sets "hairpinMode": true: new pods on %s come up with hairpin on`, where, p.Bridge)
		default:
			c.Status = StatusWarn
			c.Finding = fmt.Sprintf(`%s lacks "hairpinMode": true: new pods on %s come up with hairpin off`, where, p.Bridge)
			if p.PromiscMode {
				c.Finding += " (promiscMode is set: promiscuous-bridge mode, which needs duplicate suppression)"
			}
			c.Fix = fmt.Sprintf(`set "hairpinMode": true in %s (or keep ports on: %s)`, active.Path, f.hairpinctlCmd("watch --bridge "+netops.ShellQuote(p.Bridge)))
			return c
		}
	}
	if !bridged {
		c.Status = StatusSkip
		c.Finding = fmt.Sprintf("%s uses %s, no Linux bridge: hairpin mode does not apply", active.Path, strings.Join(types, ", "))
	}
	return c
}

// Check 8: conntrack counters that mean dropped connections.
func checkConntrack(f *doctorFacts) Check {
	c := Check{ID: CheckConntrack}
	if f.conntrackErr != nil {
		if errors.Is(f.conntrackErr, netops.ErrNotFound) {
			c.Status, c.Finding = StatusSkip, f.conntrackErr.Error()
			return c
		}
		return couldNotCheck(c.ID, "conntrack statistics", f.conntrackErr)
	}
	k := f.conntrack
	c.Details = append(c.Details,
		fmt.Sprintf("%s of %d (nf_conntrack_count, nf_conntrack_max)", plural(int(k.Entries), "entry", "entries"), k.MaxEntries),
		fmt.Sprintf("insert_failed %d, drop %d, early_drop %d, invalid %d, error %d (summed over CPUs, since the namespace was created)", k.InsertFailed, k.Drop, k.EarlyDrop, k.Invalid, k.Error))
	var found, fixes []string
	if k.InsertFailed > 0 {
		found = append(found, fmt.Sprintf("insert_failed %d", k.InsertFailed))
		fixes = append(fixes, "insert_failed counts NAT clashes of simultaneous connections (often UDP DNS): make sure KUBE-POSTROUTING masquerades --random-fully (kube-proxy 1.16+)")
	}
	if k.Drop > 0 {
		found = append(found, fmt.Sprintf("drop %d", k.Drop))
	}
	if k.EarlyDrop > 0 {
		found = append(found, fmt.Sprintf("early_drop %d", k.EarlyDrop))
	}
	full := k.MaxEntries > 0 && k.Entries*10 >= k.MaxEntries*9
	if full {
		found = append(found, fmt.Sprintf("table %d%% full", k.Entries*100/k.MaxEntries))
	}
	// A clash counts in both drop and insert_failed; drops beyond the
	// clashes, early drops and a nearly full table mean it fills up.
	if full || k.EarlyDrop > 0 || k.Drop > k.InsertFailed {
		fixes = append(fixes, fmt.Sprintf("the table fills up: raise it, e.g. sysctl -w net.netfilter.nf_conntrack_max=%d", max(2*k.MaxEntries, 262144)))
	}
	if len(found) == 0 {
		c.Status = StatusPass
		c.Finding = fmt.Sprintf("no conntrack insert failures or drops (%s of %d)", plural(int(k.Entries), "entry", "entries"), k.MaxEntries)
		return c
	}
	c.Status = StatusWarn
	c.Finding = "conntrack lost connections: " + strings.Join(found, ", ") + " (watch whether it grows: conntrack -S)"
	c.Fix = strings.Join(fixes, "; ")
	return c
}
