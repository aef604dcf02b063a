package commands

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/urfave/cli/v2"
)

var portsCommand = &cli.Command{
	Name:      "ports",
	Aliases:   []string{"ls"},
	Usage:     "list bridge ports with their hairpin state and the pod behind each",
	ArgsUsage: "[IFACE | POD-IP]...",
	Description: `Lists every port of every bridge (or of --bridge BR), one row each:
bridge, port, ifindex, STP state, operational state, hairpin mode, MAC, and
the IPs of the pod behind the port, learnt from the veth peer's namespace or
from the bridge's neighbour and FDB tables (empty when unknown). Ports may be
named by interface or by the IP of the pod behind them. Works without
privileges.

EXAMPLES:
   hairpinctl ports
   hairpinctl ports --bridge cni0 --hairpin off
   for i in $(hairpinctl ports -q --hairpin off); do echo "$i"; done
   hairpinctl ports veth1 -o json
   hairpinctl ports 10.244.0.11`,
	Flags: []cli.Flag{
		bridgeFlag("only ports of bridge `BR` (repeatable)"),
		&cli.StringFlag{Name: "hairpin", Usage: "only ports whose hairpin mode is `on|off`"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print port names only, one a line"},
		outputFlag(),
		netnsFlag(),
	},
	Action: runPorts,
}

func runPorts(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	brs, err := bridges(c)
	if err != nil {
		return err
	}
	var want *bool
	switch h := c.String("hairpin"); h {
	case "":
	case "on", "off":
		v := h == "on"
		want = &v
	default:
		return usageErrorf("ports: --hairpin %q: use on or off", h)
	}
	names := c.Args().Slice()
	for _, n := range names {
		if err := netops.ValidatePortArg(n); err != nil {
			return fmt.Errorf("ports: %w", err)
		}
	}
	cl, err := openClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	quiet := c.Bool("quiet")
	ports, err := cl.ListPorts(netops.ListOptions{Bridges: brs, PodIPs: !quiet || netops.PortArgsNeedPodIPs(names), Kinds: !quiet})
	if err != nil {
		return fmt.Errorf("ports: %w", err)
	}
	var fails []netops.Failure
	if len(names) > 0 {
		ports, fails = cl.SelectPorts(ports, names)
	}
	if want != nil {
		kept := ports[:0]
		for _, p := range ports {
			if p.Hairpin == *want {
				kept = append(kept, p)
			}
		}
		ports = kept
	}
	if len(names) > 0 && len(ports) == 0 && len(fails) > 0 {
		// Nothing to show: leave stdout empty so scripts get no partial data.
		return failuresError(c, fails, 0)
	}
	w := c.App.Writer
	switch {
	case quiet:
		err = printPortNames(w, ports)
	case format == "json":
		err = writeJSON(w, ports)
	default:
		err = printPortsTable(w, ports)
	}
	if err != nil {
		return err
	}
	return failuresError(c, fails, len(ports))
}

// failuresError reports failures of named items on stderr and picks the exit
// code: none failed 0; one item asked for and it failed, its own code;
// some failed while others were done 3 (partial).
func failuresError(c *cli.Context, fails []netops.Failure, done int) error {
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
func printPortNames(w io.Writer, ports []netops.Port) error {
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

func printPortsTable(w io.Writer, ports []netops.Port) error {
	pal := colours(w)
	// Eight columns with a MAC and a veth name fit 80 columns only with
	// single-space gaps; a pod's further IPs go on lines of their own.
	tw := newTableGap(w, 1)
	fmt.Fprintln(tw, "BRIDGE\tPORT\tINDEX\tSTATE\tOPER\tHAIRPIN\tMAC\tPOD-IPS")
	for _, p := range ports {
		hp := pal.bad("off")
		if p.Hairpin {
			hp = pal.good("on")
		}
		first := "-"
		if len(p.PodIPs) > 0 {
			first = p.PodIPs[0]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", termSafe(p.Bridge), termSafe(p.Name), strconv.Itoa(p.Index), p.State, p.OperState, hp, p.MAC, first)
		for _, ip := range p.PodIPs[min(1, len(p.PodIPs)):] {
			fmt.Fprintf(tw, "\t\t\t\t\t\t\t%s\n", ip)
		}
	}
	return tw.Flush()
}
