package commands

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
	"github.com/hairpinctl/hairpinctl/netops/selftest"
	"github.com/urfave/cli/v2"
)

var selftestCommand = &cli.Command{
	Name:  "selftest",
	Usage: "show on this node's kernel that hairpin mode is what a pod needs to reach itself through its Service",
	Description: `Builds throwaway network namespaces on this node (a node with bridge cni0,
two pods, and a kube-proxy-style ClusterIP Service backed by pod 1, loaded
with the host's own iptables backend, or, on a machine without iptables,
programmed over netlink the way kube-proxy's nftables mode does) and checks,
step by step:

   pod 2 reaches the Service;
   pod 1 cannot reach itself through it while its port's hairpin is off;
   hairpin on, set the way "hairpinctl enable" sets it;
   pod 1 then reaches itself, and pod 2 still reaches the Service.

Then it removes everything it created, also when interrupted (Ctrl-C,
SIGTERM, or SIGHUP when an SSH session drops). It needs no Kubernetes,
only root, nf_tables and the br_netfilter module (iptables if it is there).
Progress goes to stderr as it happens, a result table to stdout at the end.
Exit 0 when the kernel behaves as expected, 1 otherwise, naming what
differed.

EXAMPLES:
   sudo hairpinctl selftest
   sudo hairpinctl selftest -o json | jq '.steps[] | select(.ok | not)'
   sudo hairpinctl selftest --backend iptables-legacy
   sudo hairpinctl selftest --backend nftables`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "backend", Value: "auto", Usage: "program the Service with `BACKEND`: auto (what the host's iptables uses; nftables mode when there is no iptables), iptables-nft, iptables-legacy or nftables (kube-proxy's nftables mode, over netlink)"},
		&cli.StringFlag{Name: "prefix", Value: "hpselftest", Usage: "start the names of the namespaces it creates with `PREFIX`"},
		outputFlag(),
	},
	Action: runSelftest,
}

func runSelftest(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if c.Args().Present() {
		return usageErrorf("selftest: takes no arguments, got %q", c.Args().First())
	}
	ns, fromEnv := netnsName(c)
	if ns != "" && !fromEnv {
		return usageErrorf("selftest: builds namespaces of its own: --netns does not apply")
	}
	switch b := c.String("backend"); b {
	case "auto", string(kubeproxy.BackendIPTablesNFT), string(kubeproxy.BackendIPTablesLegacy), string(kubeproxy.BackendNFTables):
	default:
		return usageErrorf("selftest: --backend %q: use auto, iptables-nft, iptables-legacy or nftables", b)
	}
	if fromEnv {
		// Exported for the other commands; selftest's node is its own.
		fmt.Fprintf(c.App.ErrWriter, "selftest: ignoring %s=%s: selftest builds namespaces of its own\n", netnsEnv, ns)
	}

	// A signal cancels the run; the namespaces are removed before it
	// returns. Further signals stay caught until then.
	ctx, caught, stop := signalContext()
	defer stop()

	errw := c.App.ErrWriter
	pal := colours(errw)
	rep, err := selftest.Run(ctx, selftest.Options{
		Prefix:  c.String("prefix"),
		Backend: c.String("backend"),
		Created: func(name string) {
			fmt.Fprintf(errw, "selftest: created namespace %s\n", name)
		},
		Step: func(s selftest.Step) {
			printSelftestStep(errw, pal, s)
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			return selftestInterrupted(caught(), rep)
		}
		return fmt.Errorf("selftest: %w", err)
	}
	if format == "json" {
		err = writeJSON(c.App.Writer, rep)
	} else {
		err = printSelftest(c.App.Writer, rep)
	}
	if err != nil {
		return err
	}
	if d := rep.Differed(); len(d) > 0 {
		var parts []string
		for _, s := range d {
			parts = append(parts, fmt.Sprintf("%s: want %s, got %s", s.Name, s.Want, s.Got))
		}
		return errors.New("selftest: " + plural(len(d), "step") + " differed: " + strings.Join(parts, "; "))
	}
	return nil
}

// printSelftestStep writes one step's progress line to stderr.
func printSelftestStep(errw io.Writer, pal palette, s selftest.Step) {
	mark := pal.good("ok")
	got := s.Got
	if !s.OK {
		mark = pal.bad("DIFFERS")
		got = fmt.Sprintf("got %s, want %s", s.Got, s.Want)
	}
	detail := ""
	if s.Detail != "" {
		detail = " (" + s.Detail + ")"
	}
	fmt.Fprintf(errw, "selftest: %s: %s: %s%s\n", mark, s.Name, got, detail)
}

// selftestInterrupted names the signal that stopped the run and says
// whether its namespaces were removed.
func selftestInterrupted(sig os.Signal, rep *selftest.Report) error {
	name := signalName(sig, "a signal")
	what := "removed the namespaces it created"
	if rep != nil {
		for _, s := range rep.Differed() {
			if s.Name == "clean up" {
				what = "could not remove everything: " + s.Detail
			}
		}
	}
	return fmt.Errorf("selftest: interrupted by %s: %s", name, what)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func printSelftest(w io.Writer, r *selftest.Report) error {
	pal := colours(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "STEP\tWANT\tGOT\tRESULT")
	for _, s := range r.Steps {
		res := pal.good("ok")
		if !s.OK {
			res = pal.bad("DIFFERS")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.Want, s.Got, res)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := pal.good("PASS") + ": a pod reaches itself through its Service only with hairpin on"
	if !r.Passed {
		verdict = pal.bad("FAIL") + ": the kernel did not behave as expected"
	}
	_, err := fmt.Fprintf(w, "\n%s\n      (kernel %s, backend %s)\n", verdict, r.Kernel, r.Backend)
	return err
}
