package commands

import (
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/pods"
	"github.com/urfave/cli/v2"
)

var portsCommand = &cli.Command{
	Name:      "ports",
	Aliases:   []string{"ls"},
	Usage:     "list bridge ports with their hairpin state and the pod behind each",
	ArgsUsage: "[IFACE | POD-IP | pod/NS/NAME]...",
	Description: `Lists every port of every bridge (or of --bridge BR), one row each:
bridge, port, STP state, hairpin mode, the IPs of the pod behind the port,
learnt from the veth peer's namespace or from the bridge's neighbour and FDB
tables, and the pod's namespace/name, read from the CNI result cache the
container runtime keeps, else asked of the runtime over CRI within 2s (-
when unknown; a name is never guessed). -o wide
adds the ifindex, operational state, MAC and the pod's container ID. Ports
may be named by interface, by the IP of the pod behind them, or by pod as
pod/NAMESPACE/NAME. Works without privileges.

EXAMPLES:
   hairpinctl ports
   hairpinctl ports --bridge cni0 --hairpin off
   for i in $(hairpinctl ports -q --hairpin off); do echo "$i"; done
   hairpinctl ports veth1 -o json
   hairpinctl ports 10.244.0.11
   hairpinctl ports pod/default/web-7d9f6c-x2kq
   hairpinctl ports --pod 'default/web-*' -o wide`,
	Flags: []cli.Flag{
		bridgeFlag("only ports of bridge `BR` (repeatable)"),
		&cli.StringFlag{Name: "hairpin", Usage: "only ports whose hairpin mode is `on|off`"},
		&cli.StringSliceFlag{Name: "pod", Usage: "only ports of pods whose namespace/name matches shell `PATTERN` (repeatable)"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print port names only, one a line"},
		&cli.StringFlag{
			Name:    "output",
			Aliases: []string{"o"},
			Value:   "table",
			Usage:   "output `FORMAT`: table, wide or json",
		},
		cniCacheFlag(),
		criEndpointFlag(),
		netnsFlag(),
	},
	Action: runPorts,
}

func runPorts(c *cli.Context) error {
	in, err := portsInput(c)
	if err != nil {
		return err
	}
	cl, err := openClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	quiet := c.Bool("quiet")
	o := bridgeports.ListOptions{Bridges: in.bridges, PodIPs: !quiet || bridgeports.PortArgsNeedPodIPs(in.names), Kinds: !quiet}
	if !quiet || len(in.podPats) > 0 || bridgeports.PortArgsNeedPods(in.names) {
		o.Pods = podOptions(c)
	}
	ports, err := bridgeports.List(cl, o)
	if err != nil {
		return fmt.Errorf("ports: %w", err)
	}
	if o.Pods != nil {
		namePodsFromCRI(c, cl, ports)
	}
	var fails []bridgeports.Failure
	if len(in.names) > 0 {
		ports, fails = bridgeports.Select(cl, ports, in.names)
	}
	ports = in.filter(ports)
	if len(in.names) > 0 && len(ports) == 0 && len(fails) > 0 {
		// Nothing to show: leave stdout empty so scripts get no partial data.
		return failuresError(c, fails, 0)
	}
	if err := printPorts(c.App.Writer, ports, quiet, in.format); err != nil {
		return err
	}
	return failuresError(c, fails, len(ports))
}

// portsArgs is what ports was asked for, validated.
type portsArgs struct {
	format  string
	bridges []string
	// want is the hairpin state --hairpin keeps, nil for any.
	want    *bool
	names   []string
	podPats []string
}

// portsInput validates the output format, bridges, --hairpin, the port
// arguments and the --pod patterns, in that order.
func portsInput(c *cli.Context) (portsArgs, error) {
	var in portsArgs
	in.format = lineageString(c, "output")
	if in.format != "wide" {
		var err error
		if in.format, err = outputFormat(c); err != nil {
			return in, usageErrorf("ports: unknown output format %q: use table, wide or json", lineageString(c, "output"))
		}
	}
	var err error
	if in.bridges, err = bridges(c); err != nil {
		return in, err
	}
	switch h := c.String("hairpin"); h {
	case "":
	case "on", "off":
		v := h == "on"
		in.want = &v
	default:
		return in, usageErrorf("ports: --hairpin %q: use on or off", h)
	}
	in.names = c.Args().Slice()
	for _, n := range in.names {
		if err := bridgeports.ValidatePortArg(n); err != nil {
			return in, fmt.Errorf("ports: %w", err)
		}
	}
	in.podPats = c.StringSlice("pod")
	for _, p := range in.podPats {
		if _, err := path.Match(p, ""); err != nil {
			return in, usageErrorf("ports: --pod %q is not a shell pattern: %v", p, err)
		}
	}
	return in, nil
}

// filter keeps the ports in the hairpin state and pods asked for.
func (in *portsArgs) filter(ports []bridgeports.Port) []bridgeports.Port {
	if in.want != nil {
		kept := ports[:0]
		for _, p := range ports {
			if p.Hairpin == *in.want {
				kept = append(kept, p)
			}
		}
		ports = kept
	}
	if len(in.podPats) > 0 {
		ports = slices.DeleteFunc(ports, func(p bridgeports.Port) bool {
			return !matchesPod(p.Pod, in.podPats)
		})
	}
	return ports
}

// printPorts writes the ports as names, JSON, the wide or the plain table.
func printPorts(w io.Writer, ports []bridgeports.Port, quiet bool, format string) error {
	switch {
	case quiet:
		return printPortNames(w, ports)
	case format == "json":
		return writeJSON(w, ports)
	case format == "wide":
		return printPortsWide(w, ports)
	default:
		return printPortsTable(w, ports)
	}
}

// failuresError reports failures of named items on stderr and picks the exit
// code: none failed 0; one item asked for and it failed, its own code;
// some failed while others were done 3 (partial).
func failuresError(c *cli.Context, fails []bridgeports.Failure, done int) error {
	if len(fails) == 0 {
		return nil
	}
	cmd := c.Command.Name
	if len(fails) == 1 && done == 0 {
		return fmt.Errorf("%s: %w", cmd, fails[0].Err())
	}
	for _, f := range fails {
		fmt.Fprintf(c.App.ErrWriter, "hairpinctl: %s: %s\n", cmd, termSafeText(f.Error))
	}
	if done == 0 {
		code := ExitUsage
		for _, f := range fails {
			if ExitCode(f.Err()) != ExitUsage {
				code = ExitError
			}
		}
		return &exitError{code: code, err: fmt.Errorf("%s: all %d items failed", cmd, len(fails))}
	}
	return &exitError{code: ExitPartial, err: fmt.Errorf("%s: %d of %d items failed (the others were done)", cmd, len(fails), len(fails)+done)}
}

// printPortNames prints the names as they are for a script's loop, or
// escaped (see termSafe) when a person reads them on a terminal.
func printPortNames(w io.Writer, ports []bridgeports.Port) error {
	name := func(s string) string { return s }
	if isTerminal(w) {
		name = termSafe
	}
	var b strings.Builder
	for _, p := range ports {
		b.WriteString(name(p.Name))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// matchesPod reports whether pod's namespace/name matches one of pats;
// a port whose pod is unknown matches none.
func matchesPod(pod *pods.Pod, pats []string) bool {
	full := pod.FullName()
	if full == "" {
		return false
	}
	for _, p := range pats {
		if ok, _ := path.Match(p, full); ok {
			return true
		}
	}
	return false
}

// podName is the POD column: namespace/name, or - when unknown.
func podName(p *pods.Pod) string {
	if n := p.FullName(); n != "" {
		return termSafe(n)
	}
	return "-"
}

func printPortsTable(w io.Writer, ports []bridgeports.Port) error {
	pal := colours(w)
	// With the pod's name the row has no room for the ifindex, operational
	// state and MAC at 80 columns: -o wide has them. A pod's further IPs go
	// on lines of their own.
	tw := newTableGap(w, 1)
	fmt.Fprintln(tw, "BRIDGE\tPORT\tSTATE\tHAIRPIN\tPOD-IPS\tPOD")
	for _, p := range ports {
		hp, first := portCells(pal, p)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", termSafe(p.Bridge), termSafe(p.Name), p.State, hp, first, podName(p.Pod))
		for _, ip := range p.PodIPs[min(1, len(p.PodIPs)):] {
			fmt.Fprintf(tw, "\t\t\t\t%s\t\n", ip)
		}
	}
	return tw.Flush()
}

// portCells are a port's HAIRPIN cell, coloured, and its first pod IP
// ("-" for none); the table and -o wide print the others on lines of
// their own.
func portCells(pal palette, p bridgeports.Port) (hairpin, firstIP string) {
	hairpin, firstIP = pal.bad("off"), "-"
	if p.Hairpin {
		hairpin = pal.good("on")
	}
	if len(p.PodIPs) > 0 {
		firstIP = p.PodIPs[0]
	}
	return hairpin, firstIP
}

// printPortsWide is -o wide: every column, wider than 80.
func printPortsWide(w io.Writer, ports []bridgeports.Port) error {
	pal := colours(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "BRIDGE\tPORT\tINDEX\tSTATE\tOPER\tHAIRPIN\tMAC\tPOD-IPS\tPOD\tCONTAINER\tIFACE\tSOURCE")
	for _, p := range ports {
		hp, first := portCells(pal, p)
		ctr, ifc, src := "-", "-", "-"
		if p.Pod != nil {
			ctr, ifc, src = termSafe(shortID(p.Pod.ContainerID)), termSafe(p.Pod.Interface), p.Pod.Source
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", termSafe(p.Bridge), termSafe(p.Name), p.Index, p.State, p.OperState, hp, p.MAC, first, podName(p.Pod), ctr, ifc, src)
		for _, ip := range p.PodIPs[min(1, len(p.PodIPs)):] {
			fmt.Fprintf(tw, "\t\t\t\t\t\t\t%s\t\t\t\t\n", ip)
		}
	}
	return tw.Flush()
}

// shortID is a container ID as crictl and ctr print it: 13 characters.
func shortID(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}
