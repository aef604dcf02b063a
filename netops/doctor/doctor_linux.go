package doctor

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// Run runs every check on the client's namespace and returns the
// verdicts. A check that cannot read what it needs says so in its verdict
// (WARN, or SKIP when it lacks privileges) and the others still run; only
// bad input is an error: a selector that names no Service shape, or a
// --bridge that does not exist.
func Run(c *netops.Client, o Options) (*Report, error) {
	for _, s := range o.Services {
		if err := kubeproxy.ValidateServiceSelector(s); err != nil {
			return nil, err
		}
	}
	for _, b := range o.Bridges {
		if _, err := bridgeports.Bridge(c, b); err != nil {
			return nil, err
		}
	}
	f := &doctorFacts{netns: c.Spec(), label: c.NetnsLabel(), bridgesAsked: o.Bridges, selectors: o.Services, cniDir: o.CNIConfDir}
	if c.Own() {
		// The namespace is this host's, and so is the UTS namespace
		// whose name kubelet registers as the Node's by default,
		// trimmed and lowercased (kubelet's GetHostname). Another
		// namespace (--netns) may be another node's: a kind node, a lab.
		if h, err := os.Hostname(); err == nil {
			f.node = strings.ToLower(strings.TrimSpace(h))
		}
	}
	if f.cniDir == "" {
		f.cniDir = DefaultCNIConfDir
	}
	readBridges(c, f, o.Pods)
	readSysctls(c, f)
	f.services, f.servicesErr = doctorServices(c)
	f.cniFiles, f.cniErr = loadCNIConfigs(f.cniDir)
	f.conntrack, f.conntrackErr = readConntrackCounters(c)
	return diagnose(f), nil
}

// readBridges lists the bridges (every one, or --bridge), their ports
// with the pod IPs (and, when asked, the pods) behind them, and, for a promiscuous bridge with a port
// whose hairpin is off, looks for duplicate suppression.
func readBridges(c *netops.Client, f *doctorFacts, named *bridgeports.PodOptions) {
	links, err := c.Handle().LinkList()
	if err != nil {
		f.bridgesErr = fmt.Errorf("list links in netns %s: %w", c.NetnsLabel(), err)
		return
	}
	want := map[string]bool{}
	for _, b := range f.bridgesAsked {
		want[b] = true
	}
	byName := map[string]int{}
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "bridge" || (len(want) > 0 && !want[a.Name]) {
			continue
		}
		byName[a.Name] = len(f.bridges)
		f.bridges = append(f.bridges, bridgeFacts{
			Name:    a.Name,
			MAC:     a.HardwareAddr.String(),
			Promisc: a.RawFlags&unix.IFF_PROMISC != 0,
			Ports:   []bridgeports.Port{},
		})
	}
	if len(f.bridges) == 0 {
		return
	}
	ports, err := bridgeports.List(c, bridgeports.ListOptions{Bridges: f.bridgesAsked, PodIPs: true, Kinds: true, Pods: named})
	if err != nil {
		f.bridgesErr = err
		f.bridges = nil
		return
	}
	f.podsNamed = named != nil
	for _, p := range ports {
		if i, ok := byName[p.Bridge]; ok {
			f.bridges[i].Ports = append(f.bridges[i].Ports, p)
		}
	}
	for i := range f.bridges {
		b := &f.bridges[i]
		if !b.Promisc || !slices.ContainsFunc(b.Ports, func(p bridgeports.Port) bool { return !p.Hairpin }) {
			continue
		}
		b.Dedup = findDedup(c, b.MAC)
	}
}

// findDedup searches the bridge-family nf_tables rules (nft's and
// ebtables-nft's, read over netlink) and ebtables-legacy's filter table
// (not in nf_tables: read with its binary) for a duplicate-suppression
// rule.
func findDedup(c *netops.Client, mac string) dedupFacts {
	d := dedupFacts{Looked: true}
	rule, where, err := findDedupNFT(c, mac)
	if err != nil {
		d.Unchecked = append(d.Unchecked, err.Error())
	} else if rule != "" {
		d.Rule, d.Where = rule, where
		return d
	}
	out, err := execIn(c, "ebtables-legacy", "-t", "filter", "-L")
	if err != nil {
		d.Unchecked = append(d.Unchecked, err.Error())
		return d
	}
	d.Rule, d.Where = findDedupEbtables(out, mac)
	return d
}

// execIn runs a tool inside the namespace and returns its stdout.
func execIn(c *netops.Client, bin string, args ...string) (string, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%s is not installed", bin)
	}
	var stdout, stderr bytes.Buffer
	err = c.Do(func() error {
		cmd := exec.Command(path, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		return cmd.Run()
	})
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		return "", fmt.Errorf("%s %s in netns %s: %v %s", bin, strings.Join(args, " "), c.NetnsLabel(), err, msg)
	}
	return stdout.String(), nil
}

// readSysctls reads the two sysctls doctor judges.
func readSysctls(c *netops.Client, f *doctorFacts) {
	f.brNfCallIPTables = readSysctl(c, "/proc/sys/net/bridge/bridge-nf-call-iptables")
	f.ipForward = readSysctl(c, "/proc/sys/net/ipv4/ip_forward")
}

// readSysctl reads a /proc/sys file on a thread inside the namespace: the
// net.* files show the namespace of the task that opens them.
func readSysctl(c *netops.Client, path string) sysctlFact {
	var s sysctlFact
	err := c.Do(func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		s.Value = strings.TrimSpace(string(b))
		return nil
	})
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s.Missing = true
	case errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EPERM):
		s.Err = netops.Errorf(netops.ErrPermission, "read %s in netns %s: %v", path, c.NetnsLabel(), err)
	case err != nil:
		s.Err = fmt.Errorf("read %s in netns %s: %w", path, c.NetnsLabel(), err)
	}
	return s
}

// readConntrackCounters reads conntrack's per-CPU statistics
// (IPCTNL_MSG_CT_GET_STATS_CPU) on a NETLINK_NETFILTER socket made in the
// namespace, and the table's fill from /proc/sys/net/netfilter: the
// counters and the count are per namespace, the maximum is the host's.
// ti-mo/conntrack's StatsGlobal is not used: it asks with NLM_F_DUMP for
// a request the kernel answers once, and on Linux 6.18 it never returns.
func readConntrackCounters(c *netops.Client) (conntrackCounters, error) {
	var k conntrackCounters
	ct, err := conntrack.Dial(c.NetlinkConfig())
	if err != nil {
		return k, doctorConntrackErr(c, "open conntrack netlink socket", err)
	}
	defer ct.Close()
	cpus, err := ct.Stats()
	if err != nil {
		return k, doctorConntrackErr(c, "read conntrack statistics", err)
	}
	for _, s := range cpus {
		k.InsertFailed += uint64(s.InsertFailed)
		k.Drop += uint64(s.Drop)
		k.EarlyDrop += uint64(s.EarlyDrop)
		k.Invalid += uint64(s.Invalid)
		k.Error += uint64(s.Error)
	}
	for _, v := range []struct {
		path string
		dst  *uint64
	}{
		{"/proc/sys/net/netfilter/nf_conntrack_count", &k.Entries},
		{"/proc/sys/net/netfilter/nf_conntrack_max", &k.MaxEntries},
	} {
		s := readSysctl(c, v.path)
		if s.Value == "" {
			continue // no fill figures: the counters alone are judged
		}
		n, err := strconv.ParseUint(s.Value, 10, 64)
		if err != nil {
			return k, fmt.Errorf("%s in netns %s: %q is not a number", v.path, c.NetnsLabel(), s.Value)
		}
		*v.dst = n
	}
	return k, nil
}

// doctorConntrackErr classifies a conntrack netlink error: no privileges,
// or conntrack not loaded (nothing tracks connections, so nothing is lost).
func doctorConntrackErr(c *netops.Client, what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return netops.Errorf(netops.ErrPermission, "%s in netns %s needs CAP_NET_ADMIN", what, c.NetnsLabel())
	case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOENT):
		return netops.Errorf(netops.ErrNotFound, "conntrack is not loaded in netns %s (nf_conntrack_netlink): nothing to check", c.NetnsLabel())
	}
	return fmt.Errorf("%s in netns %s: %w", what, c.NetnsLabel(), err)
}
