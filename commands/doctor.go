package commands

import (
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/doctor"
	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
	"github.com/hairpinctl/hairpinctl/netops/probe"
	"github.com/urfave/cli/v2"
)

var doctorCommand = &cli.Command{
	Name:      "doctor",
	Usage:     "diagnose hairpin failures, with a fix for each finding",
	ArgsUsage: "[IP[:PORT] | NS/NAME[:PORT]]...",
	Description: `Runs the hairpin checklist on the node and joins what no single tool joins:
which endpoint of a Service sits behind which bridge port, and whether that
port has hairpin on. Each check says PASS, WARN, FAIL or SKIP, a one-line
finding, and a fix (a command where one exists):

   bridge-hairpin  hairpin on every bridge port, or a promiscuous bridge with
                   duplicate suppression
   br-netfilter    net.bridge.bridge-nf-call-iptables = 1
   ip-forward      net.ipv4.ip_forward = 1
   kube-proxy      which backend holds kube-proxy's rules: iptables-nft,
                   iptables-legacy or nftables; both iptables ones is a
                   split brain
   masquerade      KUBE-MARK-MASQ and the KUBE-POSTROUTING MASQUERADE rule
   service:NAME    each named Service (or "services": all of them): every
                   endpoint has its hairpin masquerade rule, and every one
                   behind a port of this node's bridge has hairpin on
   cni-config      the CNI configuration new pods get sets hairpinMode
   conntrack       insert_failed and drop counters
   probe:SVC       with --probe: each endpoint of a Service on this node,
                   probed from its own pod through the Service (see probe),
                   all within 30s, said up front on stderr

Each port and endpoint on this node is named by its pod, from the CNI
result cache, else from the runtime over CRI ("pod unknown" when neither
says; -o json: each check's "pods"). Without a bridge (routed CNIs such as
Calico or Cilium) the bridge checks SKIP. Exit status 4 when a check
FAILs. Reading kube-proxy's rules and conntrack needs root; without it
those checks SKIP.

EXAMPLES:
   hairpinctl doctor
   hairpinctl doctor 10.96.0.10
   hairpinctl doctor default/web:http --bridge cni0
   hairpinctl doctor -o json | jq '.checks[] | select(.status == "FAIL")'
   hairpinctl doctor --cni-conf-dir /etc/cni/net.d --netns node1
   hairpinctl doctor default/web --probe`,
	Flags: []cli.Flag{
		bridgeFlag("check only bridge `BR` (repeatable; default: every bridge)"),
		cniConfDirFlag(),
		cniCacheFlag(),
		criEndpointFlag(),
		&cli.BoolFlag{Name: "probe", Usage: "also probe each Service endpoint on this node from its pod (see probe; at most 30s)"},
		outputFlag(),
		netnsFlag(),
	},
	Action: runDoctor,
}

func cniConfDirFlag() cli.Flag {
	return &cli.StringFlag{
		Name:  "cni-conf-dir",
		Value: doctor.DefaultCNIConfDir,
		Usage: "read CNI network configurations from `DIR`",
	}
}

// doctorOptions validates doctor's and metrics' shared input.
func doctorOptions(c *cli.Context, services []string) (doctor.Options, error) {
	cmd := c.Command.Name
	brs, err := bridges(c)
	if err != nil {
		return doctor.Options{}, err
	}
	for _, s := range services {
		if err := kubeproxy.ValidateServiceSelector(s); err != nil {
			return doctor.Options{}, fmt.Errorf("%s: %w", cmd, err)
		}
	}
	dir := c.String("cni-conf-dir")
	if dir == "" {
		return doctor.Options{}, usageErrorf("%s: --cni-conf-dir is empty", cmd)
	}
	// The default directory may be absent (a routed CNI: the check SKIPs);
	// one the user named must exist.
	if c.IsSet("cni-conf-dir") {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return doctor.Options{}, usageErrorf("%s: --cni-conf-dir %s is not a directory: give the CNI configuration directory (default /etc/cni/net.d)", cmd, dir)
		}
	}
	return doctor.Options{Bridges: brs, CNIConfDir: dir, Services: services}, nil
}

func runDoctor(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	o, err := doctorOptions(c, c.Args().Slice())
	if err != nil {
		return err
	}
	cl, err := openClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	o.Pods = podNaming(c, cl)
	rep, err := doctor.Run(cl, o)
	if err != nil {
		return fmt.Errorf("doctor: %w", err)
	}
	if c.Bool("probe") {
		doctorProbe(c, cl, rep, o.Services)
	}
	if format == "json" {
		err = writeJSON(c.App.Writer, rep)
	} else {
		err = printDoctor(c.App.Writer, rep)
	}
	if err != nil {
		return err
	}
	if rep.Summary.Fail > 0 {
		return silentExit(ExitFindings)
	}
	return nil
}

// doctorProbe adds a check per Service endpoint on this node: a probe
// from the endpoint's pod through the Service. It says up front, on
// stderr, how many probes it makes and how long they may take.
func doctorProbe(c *cli.Context, cl *netops.Client, rep *doctor.Report, services []string) {
	po := probe.DoctorOptions{Services: services, CacheDir: c.String("cni-cache")}
	pairs, err := probe.PlanDoctor(cl, po)
	if err != nil {
		rep.AddChecks(doctor.Check{ID: "probe", Status: doctor.StatusWarn, Finding: "could not list what to probe: " + err.Error(), Details: []string{}})
		return
	}
	fmt.Fprintf(c.App.ErrWriter, "doctor: --probe: %s of %d connections each (timeout %s), at most %s in all\n",
		plural(len(pairs), "probe"), probe.DefaultDoctorCount, probe.DefaultDoctorTimeout, probe.DefaultDoctorBudget)
	ctx, _, stop := signalContext()
	defer stop()
	rep.AddChecks(probe.Doctor(ctx, cl, pairs, po)...)
}

// doctorWidth is the width the report is wrapped to, and doctorIndent the
// column findings start in.
const (
	doctorWidth  = 80
	doctorIndent = 8
	// doctorMaxDetails bounds the details shown per check; -o json has all.
	doctorMaxDetails = 8
)

// printDoctor writes one block per check: the verdict and the check's ID,
// then the finding, the fix and (for WARN and FAIL) the details, wrapped
// to 80 columns under the ID; then a summary line.
func printDoctor(w io.Writer, rep *doctor.Report) error {
	pal := colours(w)
	var b strings.Builder
	pad := strings.Repeat(" ", doctorIndent)
	fmt.Fprintf(&b, "%-*s%s\n", doctorIndent, "STATUS", "CHECK / FINDING")
	for _, ch := range rep.Checks {
		fmt.Fprintf(&b, "%s%s%s\n", paintStatus(pal, ch.Status), strings.Repeat(" ", doctorIndent-len(ch.Status)), ch.ID)
		for _, ln := range wrapText(termSafeText(ch.Finding), doctorWidth-doctorIndent, "") {
			b.WriteString(pad + ln + "\n")
		}
		if ch.Fix != "" {
			for _, ln := range wrapText("Fix: "+termSafeText(ch.Fix), doctorWidth-doctorIndent, "     ") {
				b.WriteString(pad + ln + "\n")
			}
		}
		if ch.Status != doctor.StatusWarn && ch.Status != doctor.StatusFail {
			continue
		}
		for i, d := range ch.Details {
			if i == doctorMaxDetails {
				fmt.Fprintf(&b, "%s%s\n", pad, pal.dim(fmt.Sprintf("… %d more (see -o json)", len(ch.Details)-i)))
				break
			}
			for _, ln := range wrapText("- "+termSafeText(d), doctorWidth-doctorIndent, "  ") {
				b.WriteString(pad + pal.dim(ln) + "\n")
			}
		}
	}
	s := rep.Summary
	fmt.Fprintf(&b, "\n%s: %d fail, %d warn, %d pass, %d skip (netns %s)\n",
		paintStatus(pal, s.Status), s.Fail, s.Warn, s.Pass, s.Skip, s.Netns)
	_, err := io.WriteString(w, asciiText(b.String()))
	return err
}

func paintStatus(pal palette, s doctor.CheckStatus) string {
	switch s {
	case doctor.StatusPass:
		return pal.good(string(s))
	case doctor.StatusWarn:
		return pal.warn(string(s))
	case doctor.StatusFail:
		return pal.bad(string(s))
	}
	return pal.dim(string(s))
}

// wrapText breaks s into lines of at most width characters at spaces,
// continuation lines starting with hang. A word longer than a line is
// left whole.
func wrapText(s string, width int, hang string) []string {
	var lines []string
	line, n, fresh := "", 0, true
	for _, word := range strings.Fields(s) {
		wl := utf8.RuneCountInString(word)
		if !fresh && n+1+wl > width {
			lines = append(lines, line)
			line, n, fresh = hang, utf8.RuneCountInString(hang), true
		}
		if !fresh {
			line += " "
			n++
		}
		line += word
		n += wl
		fresh = false
	}
	if !fresh {
		lines = append(lines, line)
	}
	return lines
}
