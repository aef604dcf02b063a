package commands

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/pods"
	"github.com/urfave/cli/v2"
)

// Flag constructors: each command gets its own flag values, so building the
// app twice (as the tests do) shares no state.

// netnsEnv names the namespace when no --netns is typed.
const netnsEnv = "HAIRPINCTL_NETNS"

// netnsFlag is --netns. It reads no environment variable itself: declared
// on the app and on each command, a variable read by the command's copy
// would count as set there and beat a --netns typed before the command
// name. netnsName applies the variable, after every typed flag.
func netnsFlag() cli.Flag {
	return &cli.StringFlag{
		Name:  "netns",
		Usage: "work in network namespace `NAME|PATH`: a name under /run/netns, or a path such as /proc/PID/ns/net [$" + netnsEnv + "]",
	}
}

func outputFlag() cli.Flag {
	return &cli.StringFlag{
		Name:    "output",
		Aliases: []string{"o"},
		Value:   "table",
		Usage:   "output `FORMAT`: table or json",
	}
}

// anyPortFlag lets --bridge and --all act on uplinks too.
func anyPortFlag() cli.Flag {
	return &cli.BoolFlag{Name: "any-port", Usage: "with --bridge or --all, act on every port, uplinks (NIC, vxlan, tap) included, not only pods' ports"}
}

func bridgeFlag(usage string) cli.Flag {
	return &cli.StringSliceFlag{
		Name:    "bridge",
		Aliases: []string{"b"},
		Usage:   usage,
	}
}

// lineageString returns a flag's value from the innermost context that set
// it, so a flag given before the command name (hairpinctl -o json ports)
// counts as well as one given after it.
func lineageString(c *cli.Context, name string) string {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet(name) {
			return ctx.String(name)
		}
	}
	return c.String(name)
}

// netnsName is the namespace to work in: --netns as typed, wherever it
// was typed (the innermost wins), else $HAIRPINCTL_NETNS. fromEnv says the
// variable supplied it.
func netnsName(c *cli.Context) (name string, fromEnv bool) {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet("netns") {
			return ctx.String("netns"), false
		}
	}
	if v := os.Getenv(netnsEnv); v != "" {
		return v, true
	}
	return "", false
}

// outputFormat validates -o.
func outputFormat(c *cli.Context) (string, error) {
	switch f := lineageString(c, "output"); f {
	case "table", "json":
		return f, nil
	default:
		return "", usageErrorf("%s: unknown output format %q: use table or json", c.Command.Name, f)
	}
}

// openClient opens a netops client for --netns.
func openClient(c *cli.Context) (*netops.Client, error) {
	name, _ := netnsName(c)
	cl, err := netops.Open(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Command.Name, err)
	}
	return cl, nil
}

// bridges returns --bridge values, validated, each once.
func bridges(c *cli.Context) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, b := range c.StringSlice("bridge") {
		// Accept --bridge a,b as well as repeated flags.
		for _, s := range strings.Split(b, ",") {
			if s == "" || seen[s] {
				continue
			}
			seen[s] = true
			if err := netops.ValidateIfName(s); err != nil {
				return nil, fmt.Errorf("%s: --bridge: %w", c.Command.Name, err)
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// Fix commands carry && and <, which need no escaping outside HTML.
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// cniCacheFlag is --cni-cache, where the pods' names are read from.
func cniCacheFlag() cli.Flag {
	return &cli.StringFlag{
		Name:  "cni-cache",
		Value: pods.DefaultCacheDir,
		Usage: "libcni's cache `DIR`, which names the pod behind each port (results/ inside)",
	}
}

// podOptions asks netops for the pods' names from --cni-cache, warnings
// going to stderr.
func podOptions(c *cli.Context) *bridgeports.PodOptions {
	return &bridgeports.PodOptions{
		CacheDir: c.String("cni-cache"),
		Warn: func(msg string) {
			fmt.Fprintf(c.App.ErrWriter, "hairpinctl: %s: %s\n", c.Command.Name, termSafeText(msg))
		},
	}
}
