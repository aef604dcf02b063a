package commands

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/watch"
	"github.com/urfave/cli/v2"
)

// hairpinFlags are enable's and disable's flags.
func hairpinFlags() []cli.Flag {
	return []cli.Flag{
		bridgeFlag("every port of bridge `BR`, besides any named (repeatable)"),
		&cli.BoolFlag{Name: "all", Usage: "every pod port of every bridge"},
		anyPortFlag(),
		&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "report what would change, write nothing"},
		&cli.DurationFlag{Name: "wait-bridge", Usage: "wait up to `DURATION` for the --bridge bridges to exist and have a port (at boot cni0 appears with the first pod)"},
		outputFlag(),
		cniCacheFlag(),
		criEndpointFlag(),
		netnsFlag(),
	}
}

// hairpinAction is enable's (on=true) and disable's Action.
func hairpinAction(on bool) cli.ActionFunc {
	return func(c *cli.Context) error {
		format, err := outputFormat(c)
		if err != nil {
			return err
		}
		req, err := hairpinArgs(c)
		if err != nil {
			return err
		}
		dry := c.Bool("dry-run")
		if !dry && !netops.HasNetAdmin() {
			return netops.Errorf(netops.ErrPermission, "%s needs CAP_NET_ADMIN: run as root", req.cmd)
		}
		cl, err := openClient(c)
		if err != nil {
			return err
		}
		defer cl.Close()
		if req.wait > 0 {
			if err := bridgeports.WaitForBridges(cl, req.brs, req.wait); err != nil {
				return fmt.Errorf("%s: %w", req.cmd, err)
			}
		}
		ports, skipped, fails, err := hairpinTargets(c, cl, req)
		if err != nil {
			return err
		}
		if !on {
			warnWatchers(c, cl, ports)
		}
		res := bridgeports.SetHairpin(cl, ports, on, dry)
		res.Skipped = skipped
		if len(fails) > 0 {
			// Not unconditionally: appending to a nil fails would turn
			// an empty Failed into JSON null.
			res.Failed = append(fails, res.Failed...)
		}
		switch {
		case format == "json":
			err = writeJSON(c.App.Writer, res)
		case len(res.Changed)+len(res.Unchanged)+len(res.Skipped) > 0:
			// With nothing done the failures alone are said, on stderr.
			err = printSetResult(c.App.Writer, res, on)
		}
		if err != nil {
			return err
		}
		return failuresError(c, res.Failed, len(res.Changed)+len(res.Unchanged))
	}
}

// hairpinRequest is what enable or disable was asked to act on.
type hairpinRequest struct {
	cmd          string
	names, brs   []string
	all, anyPort bool
	wait         time.Duration
}

// hairpinArgs reads and checks enable's or disable's arguments.
func hairpinArgs(c *cli.Context) (hairpinRequest, error) {
	req := hairpinRequest{cmd: c.Command.Name, names: c.Args().Slice(), all: c.Bool("all"), anyPort: c.Bool("any-port"), wait: c.Duration("wait-bridge")}
	brs, err := bridges(c)
	if err != nil {
		return req, err
	}
	req.brs = brs
	cmd := req.cmd
	switch {
	case len(req.names) == 0 && len(brs) == 0 && !req.all:
		return req, usageErrorf("%s: name the interfaces, or use --bridge BR or --all (see: hairpinctl %s --help)", cmd, cmd)
	case req.all && (len(req.names) > 0 || len(brs) > 0):
		// As watch: --all is every port of every bridge already.
		return req, usageErrorf("%s: give interface names and --bridge, or --all, not both", cmd)
	case req.wait < 0:
		return req, usageErrorf("%s: --wait-bridge %s is negative", cmd, req.wait)
	case req.wait > 0 && len(brs) == 0:
		return req, usageErrorf("%s: --wait-bridge needs --bridge BR, the bridge to wait for", cmd)
	}
	for _, n := range req.names {
		if err := bridgeports.ValidatePortArg(n); err != nil {
			return req, fmt.Errorf("%s: %w", cmd, err)
		}
	}
	return req, nil
}

// hairpinTargets lists the ports req acts on: each named port whatever it
// is, and the pods' ports of its bridges (every port with --any-port).
// The bridges' ports left alone come back as skipped, the names that
// match nothing as fails.
func hairpinTargets(c *cli.Context, cl *netops.Client, req hairpinRequest) (ports []bridgeports.Port, skipped []bridgeports.Skipped, fails []bridgeports.Failure, err error) {
	cmd, names, brs := req.cmd, req.names, req.brs
	// Names and --bridge add up: a name is looked for on every bridge.
	listed := brs
	if len(names) > 0 {
		listed = nil
		for _, b := range brs {
			if _, err := bridgeports.Bridge(cl, b); err != nil {
				return nil, nil, nil, fmt.Errorf("%s: %w", cmd, err)
			}
		}
	}
	o := bridgeports.ListOptions{Bridges: listed, PodIPs: bridgeports.PortArgsNeedPodIPs(names), Kinds: !req.anyPort && (req.all || len(brs) > 0)}
	if bridgeports.PortArgsNeedPods(names) {
		o.Pods = podOptions(c)
	}
	ports, err = bridgeports.List(cl, o)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", cmd, err)
	}
	if o.Pods != nil {
		namePodsFromCRI(c, cl, ports)
	}
	skipped = []bridgeports.Skipped{}
	switch {
	case len(names) > 0:
		// A named port is acted on whatever it is; the ports a --bridge
		// adds are pods' ports only.
		var sel []bridgeports.Port
		sel, fails = bridgeports.Select(cl, ports, names)
		bulk := addBridgePorts(nil, ports, brs)
		bulk = slices.DeleteFunc(bulk, func(p bridgeports.Port) bool {
			return slices.ContainsFunc(sel, func(q bridgeports.Port) bool { return q.Name == p.Name })
		})
		if !req.anyPort {
			bulk, skipped = bridgeports.SplitPodPorts(bulk)
		}
		ports = append(sel, bulk...)
	case !req.anyPort && len(ports) > 0:
		ports, skipped = bridgeports.SplitPodPorts(ports)
	case len(ports) == 0:
		where := "no bridge in netns " + cl.NetnsLabel() + " has a port"
		switch {
		case len(brs) == 1:
			where = "bridge " + brs[0] + " has no ports"
		case len(brs) > 1:
			where = "bridges " + strings.Join(brs, ", ") + " have no ports"
		default:
			if names, err := bridgeports.BridgeNames(cl); err == nil && len(names) == 0 {
				where = "no bridge in netns " + cl.NetnsLabel()
			}
		}
		fmt.Fprintf(c.App.ErrWriter, "hairpinctl: %s: %s: nothing to do\n", cmd, where)
	}
	return ports, skipped, fails, nil
}

// addBridgePorts appends to sel every port of ports on one of brs that
// sel does not hold yet.
func addBridgePorts(sel, ports []bridgeports.Port, brs []string) []bridgeports.Port {
	have := make(map[string]bool, len(sel))
	for _, p := range sel {
		have[p.Name] = true
	}
	for _, p := range ports {
		if !have[p.Name] && slices.Contains(brs, p.Bridge) {
			have[p.Name] = true
			sel = append(sel, p)
		}
	}
	return sel
}

func printSetResult(w io.Writer, r *bridgeports.SetResult, on bool) error {
	pal := colours(w)
	to, from := "on", "off"
	if !on {
		to, from = from, to
	}
	changed := "changed"
	if r.DryRun {
		changed = "would change"
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "PORT\tRESULT\tDETAIL")
	for _, n := range r.Changed {
		fmt.Fprintf(tw, "%s\t%s\thairpin %s -> %s\n", termSafe(n), pal.good(changed), from, to)
	}
	for _, n := range r.Unchanged {
		fmt.Fprintf(tw, "%s\t%s\talready %s\n", termSafe(n), pal.dim("unchanged"), to)
	}
	for _, sk := range r.Skipped {
		fmt.Fprintf(tw, "%s\t%s\t%s (name it, or use --any-port)\n", termSafe(sk.Name), pal.dim("skipped"), sk.Reason)
	}
	for _, f := range r.Failed {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", termSafe(f.Name), pal.bad("failed"), termSafeText(f.Error))
	}
	return tw.Flush()
}

// warnWatchers says when a running hairpinctl watch will undo a disable:
// it turns hairpin back on for every port of the bridges it keeps.
func warnWatchers(c *cli.Context, cl *netops.Client, ports []bridgeports.Port) {
	for _, w := range watch.Watchers(cl) {
		var brs []string
		for _, p := range ports {
			if w.Covers(p.Bridge) && !slices.Contains(brs, p.Bridge) {
				brs = append(brs, p.Bridge)
			}
		}
		if len(brs) > 0 {
			fmt.Fprintf(c.App.ErrWriter, "hairpinctl: %s: hairpinctl watch (pid %d) keeps hairpin on for %s in this namespace and will turn these ports back on: stop it first (systemctl stop hairpinctl-watch, or kill %d)\n",
				c.Command.Name, w.PID, strings.Join(brs, ", "), w.PID)
		}
	}
}
