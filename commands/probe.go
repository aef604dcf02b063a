package commands

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
	"github.com/hairpinctl/hairpinctl/netops/probe"
	"github.com/urfave/cli/v2"
)

var probeCommand = &cli.Command{
	Name:      "probe",
	Usage:     "prove a pod reaches itself via its Service; explain failures",
	ArgsUsage: "POD SERVICE",
	Description: `Makes --count connections (TCP connect; for a UDP Service, a datagram that
wants an answer) from inside POD's network namespace, entered from the node
through its veth (no exec into the pod, nothing installed in it), to SERVICE,
all at once, each from its own source port. Reports for each whether it
succeeded, connected only after a resent SYN (retransmitted: a failure, the
first SYN was dropped), timed out, was refused or reset, its latency, and
the endpoint conntrack balanced it to; then explains every failure from
what the kernel showed: the port's hairpin mode, kube-proxy's masquerade
(NO-SNAT in conntrack), the Service's endpoints, br_netfilter. A failure
none of these explains is said to be unexplained.

While it runs, a table of family bridge (hairpinctl-probe-PIDNS-PID)
records which of the probe's frames the bridge forwarded, passed up or
dropped after they were balanced to the pod itself, and which a firewall
dropped in prerouting before: a drop is seen, not inferred. It is removed
on every exit, a signal's included (--no-trace adds nothing).

POD is a pod as pod/NAMESPACE/NAME, a pod IP or a bridge port; SERVICE is
IP:PORT or NS/NAME[:PORT] (one Service port). --fix turns hairpin on for the
pod's port when the probe blames it, and probes again. A UDP datagram gets
a newline, or to port 53 a DNS query; one without an answer cannot be
judged (WARN). Exit status 0 when every connection succeeded or only UDP
datagrams went unanswered, 4 when some failed, 1 when it could not probe,
2 on bad input.

EXAMPLES:
   hairpinctl probe pod/default/web-7d9f6c-x2kq default/web:http
   hairpinctl probe 10.244.0.11 10.96.0.10:80 --count 50
   hairpinctl probe veth1a2b3c default/web --fix
   hairpinctl probe pod/default/dns-0 kube-system/kube-dns:dns -o json`,
	Flags: []cli.Flag{
		&cli.IntFlag{Name: "count", Aliases: []string{"n"}, Value: probe.DefaultCount, Usage: "make `N` connections"},
		&cli.DurationFlag{Name: "timeout", Value: probe.DefaultTimeout, Usage: "give each connection `D` to answer"},
		&cli.BoolFlag{Name: "fix", Usage: "turn hairpin on for the pod's port when the probe blames it, then probe again"},
		&cli.BoolFlag{Name: "no-trace", Usage: "add no bridge table to the node: drops are inferred, not seen"},
		&cli.StringFlag{Name: "backend", Value: "auto", Usage: "read kube-proxy's rules from `BACKEND` (as services)"},
		cniCacheFlag(),
		outputFlag(),
		netnsFlag(),
	},
	Action: runProbe,
}

func runProbe(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	o, err := probeOptions(c)
	if err != nil {
		return err
	}
	cl, err := openClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()

	ctx, caught, stop := signalContext()
	defer stop()
	var res *probe.FixResult
	if c.Bool("fix") {
		res, err = probe.RunFix(ctx, cl, o)
	} else {
		var r *probe.Report
		if r, err = probe.Run(ctx, cl, o); err == nil {
			res = &probe.FixResult{Before: r}
		}
	}
	if err != nil {
		return probeError(ctx, caught, res, err)
	}
	final := res.Before
	if res.After != nil {
		final = res.After
	}
	switch {
	case format == "json" && c.Bool("fix"):
		err = writeJSON(c.App.Writer, res)
	case format == "json":
		err = writeJSON(c.App.Writer, res.Before)
	default:
		err = printProbeResult(c.App.Writer, res, c.Bool("fix"))
	}
	if err != nil {
		return err
	}
	if !final.OK && !probe.Unjudged(final) {
		return silentExit(ExitFindings)
	}
	return nil
}

// probeOptions reads and checks probe's arguments and flags.
func probeOptions(c *cli.Context) (probe.Options, error) {
	switch c.NArg() {
	case 0:
		return probe.Options{}, usageErrorf("probe: missing POD and SERVICE: probe needs both (see: hairpinctl probe --help)")
	case 1:
		return probe.Options{}, usageErrorf("probe: missing SERVICE: probe needs POD and SERVICE (see: hairpinctl probe --help)")
	case 2:
	default:
		return probe.Options{}, usageErrorf("probe: %d arguments: probe needs POD and SERVICE only (see: hairpinctl probe --help)", c.NArg())
	}
	o := probe.Options{
		Pod: c.Args().Get(0), Service: c.Args().Get(1),
		Count: c.Int("count"), Timeout: c.Duration("timeout"),
		CacheDir: c.String("cni-cache"), Backend: c.String("backend"), NoTrace: c.Bool("no-trace"),
	}
	if err := bridgeports.ValidatePortArg(o.Pod); err != nil {
		return o, fmt.Errorf("probe: %w", err)
	}
	if err := kubeproxy.ValidateServiceSelector(o.Service); err != nil {
		return o, fmt.Errorf("probe: %w", err)
	}
	if o.Count < 1 || o.Count > probe.MaxCount {
		return o, usageErrorf("probe: --count %d: give 1 to %d", o.Count, probe.MaxCount)
	}
	if o.Timeout <= 0 || o.Timeout > time.Minute {
		return o, usageErrorf("probe: --timeout %s: give more than 0 and at most 1m", o.Timeout)
	}
	return o, nil
}

// probeError is the error line of a probe that ended in err: interrupted
// by a signal, or failed; a fix applied before it stays, and the line says
// so and how to undo it.
func probeError(ctx context.Context, caught func() os.Signal, res *probe.FixResult, err error) error {
	kept := ""
	if res != nil && res.Applied != "" {
		kept = fmt.Sprintf("; --fix applied %s, which stays (undo: %s)", termSafeText(res.Applied), termSafeText(res.Undo))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("probe: interrupted by %s: its bridge table and sockets are removed%s", signalName(caught(), "a signal"), kept)
	}
	return fmt.Errorf("probe: %w%s", err, kept)
}

// printProbeResult prints the probe, and with --fix the fix and the probe
// after it.
func printProbeResult(w io.Writer, res *probe.FixResult, fix bool) error {
	var b strings.Builder
	pal := colours(w)
	if fix {
		b.WriteString("BEFORE\n")
	}
	writeProbe(&b, pal, res.Before)
	if fix {
		switch {
		case res.Applied == "" && res.Before.OK:
			b.WriteString("\nFIX: none needed\n")
		case res.Applied == "":
			b.WriteString("\nFIX: none applies (only a port's hairpin mode is fixed by --fix)\n")
		default:
			fmt.Fprintf(&b, "\nFIX: %s (undo: %s)\n\nAFTER\n", termSafeText(res.Applied), termSafeText(res.Undo))
			writeProbe(&b, pal, res.After)
			fmt.Fprintf(&b, "\n%s -> %s succeeded\n", fraction(res.Before), fraction(res.After))
		}
	}
	_, err := io.WriteString(w, asciiText(b.String()))
	return err
}

func fraction(r *probe.Report) string {
	return fmt.Sprintf("%d/%d", r.Results[probe.ResultSucceeded], r.Count)
}

// writeProbe writes one probe: the pod and the Service, the results per
// endpoint, a summary, then one block per finding as doctor prints them.
func writeProbe(b *strings.Builder, pal palette, r *probe.Report) {
	writeProbeHead(b, r)
	writeProbeEndpoints(b, r)
	writeProbeSummary(b, pal, r)
	writeProbeFindings(b, pal, r)
}

// writeProbeHead writes who probed what: the pod, its port and bridge,
// and the Service.
func writeProbeHead(b *strings.Builder, r *probe.Report) {
	p, s := r.Client, r.Service
	who := r.Pod.FullName()
	if who == "" {
		who = "pod " + p.IP
	} else {
		who = "pod " + who + " (" + p.IP + ")"
	}
	hp := "off"
	if p.Hairpin {
		hp = "on"
	}
	svc := s.Name
	if svc == "" {
		svc = "Service"
	}
	fmt.Fprintf(b, "%s, port %s of %s, hairpin %s\n", termSafeText(who), termSafeText(p.Interface), termSafeText(p.Bridge), hp)
	fmt.Fprintf(b, "-> %s %s:%d/%s, %s, %s backend\n", termSafeText(svc), s.IP, s.Port, r.Protocol, plural(len(s.Endpoints), "endpoint"), s.Backend)
}

// writeProbeEndpoints writes the results per endpoint, with a column for
// each result seen (succeeded, timed out, refused and reset always).
func writeProbeEndpoints(b *strings.Builder, r *probe.Report) {
	var t strings.Builder
	tw := newTable(&t)
	cols := []string{probe.ResultSucceeded}
	if r.Results[probe.ResultRetransmitted] > 0 {
		// Connected only after a resent SYN: the first was dropped.
		cols = append(cols, probe.ResultRetransmitted)
	}
	cols = append(cols, probe.ResultTimedOut, probe.ResultRefused, probe.ResultReset)
	for _, k := range []string{probe.ResultNoReply, probe.ResultError} {
		if r.Results[k] > 0 {
			cols = append(cols, k)
		}
	}
	head := []string{"ENDPOINT"}
	for _, k := range cols {
		head = append(head, strings.ToUpper(k))
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	row := func(name string, counts map[string]int) {
		cells := []string{name}
		for _, k := range cols {
			cells = append(cells, fmt.Sprint(counts[k]))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	none := map[string]int{}
	for _, cn := range r.Connections {
		if cn.Endpoint == "" {
			none[cn.Result]++
		}
	}
	for _, e := range r.Endpoints {
		name := e.Addr()
		if e.Self {
			name += " (self)"
		}
		row(name, e.Results)
	}
	if len(none) > 0 {
		row("(no conntrack entry)", none)
	}
	_ = tw.Flush()
	b.WriteString("\n" + t.String() + "\n")
}

// writeProbeSummary writes the verdict line: how many succeeded, their
// latency, and what the probe could not see.
func writeProbeSummary(b *strings.Builder, pal palette, r *probe.Report) {
	lat := []float64{}
	for _, cn := range r.Connections {
		if cn.Result == probe.ResultSucceeded {
			lat = append(lat, cn.LatencyMs)
		}
	}
	sum := fmt.Sprintf("%s succeeded in %.0f ms", fraction(r), r.DurationMs)
	if len(lat) > 0 {
		slices.Sort(lat)
		sum += fmt.Sprintf(" (latency median %.1f ms, max %.1f ms)", lat[len(lat)/2], lat[len(lat)-1])
	}
	switch {
	case r.Facts.Traced:
		sum += "; bridge traced"
	case r.Facts.TraceError != "":
		sum += "; bridge not traced: " + r.Facts.TraceError
	}
	if r.Facts.ConntrackError != "" {
		sum += "; conntrack not read: " + r.Facts.ConntrackError
	}
	status := pal.good("OK")
	switch {
	case probe.Unjudged(r):
		// As doctor: a warning, no failure seen.
		status = pal.warn("WARN")
	case !r.OK:
		status = pal.bad("FAIL")
	}
	for _, ln := range wrapText(status+": "+termSafeText(sum), doctorWidth, "  ") {
		b.WriteString(ln + "\n")
	}
}

// writeProbeFindings writes each finding as doctor writes a check: its
// ID, the finding, the fix and the evidence.
func writeProbeFindings(b *strings.Builder, pal palette, r *probe.Report) {
	pad := strings.Repeat(" ", doctorIndent)
	for _, f := range r.Findings {
		fmt.Fprintf(b, "\n%s\n", f.ID)
		for _, ln := range wrapText(termSafeText(f.Finding), doctorWidth-doctorIndent, "") {
			b.WriteString(pad + ln + "\n")
		}
		if f.Fix != "" {
			for _, ln := range wrapText("Fix: "+termSafeText(f.Fix), doctorWidth-doctorIndent, "     ") {
				b.WriteString(pad + ln + "\n")
			}
		}
		for _, e := range f.Evidence {
			for _, ln := range wrapText("- "+termSafeText(e), doctorWidth-doctorIndent, "  ") {
				b.WriteString(pad + pal.dim(ln) + "\n")
			}
		}
	}
}
