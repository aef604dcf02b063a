package commands

import (
	_ "embed"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/pods"
	"github.com/urfave/cli/v2"
)

// The shell scripts are thin: each hands the words typed so far to
// `hairpinctl __complete`, which answers from the CLI definitions and the
// live system. completions/ holds copies; a test fails when they drift.
var (
	//go:embed completion/hairpinctl.bash
	bashCompletion string
	//go:embed completion/_hairpinctl
	zshCompletion string
	//go:embed completion/hairpinctl.fish
	fishCompletion string
)

// CompletionScripts maps each shell to its script and its file name under
// completions/.
var CompletionScripts = map[string]struct{ File, Script string }{
	"bash": {"hairpinctl.bash", bashCompletion},
	"zsh":  {"_hairpinctl", zshCompletion},
	"fish": {"hairpinctl.fish", fishCompletion},
}

var completionCommand = &cli.Command{
	Name:      "completion",
	Usage:     "print a shell completion script (bash, zsh or fish)",
	ArgsUsage: "bash|zsh|fish",
	Description: `Prints a completion script. It completes commands, flags, flag values
(-o), bridge names for --bridge, port names and pod/NAMESPACE/NAME for
ports/enable/disable and probe's POD, and pod names for --pod, from the live
system.

EXAMPLES:
   source <(hairpinctl completion bash)
   hairpinctl completion zsh > "${fpath[1]}/_hairpinctl"
   hairpinctl completion fish > ~/.config/fish/completions/hairpinctl.fish`,
	Action: func(c *cli.Context) error {
		if c.NArg() != 1 {
			return usageErrorf("completion: name one shell: bash, zsh or fish")
		}
		s, ok := CompletionScripts[c.Args().First()]
		if !ok {
			return usageErrorf("completion: unknown shell %q: use bash, zsh or fish", c.Args().First())
		}
		_, err := io.WriteString(c.App.Writer, s.Script)
		return err
	},
}

// completeCommand answers the completion scripts: given the words after
// "hairpinctl", the last being the one under the cursor (possibly empty),
// it prints the candidates, one a line.
var completeCommand = &cli.Command{
	Name:            "__complete",
	Hidden:          true,
	SkipFlagParsing: true,
	Action: func(c *cli.Context) error {
		words := c.Args().Slice()
		if len(words) == 0 {
			words = []string{""}
		}
		var b strings.Builder
		for _, s := range complete(c.App, words) {
			b.WriteString(s)
			b.WriteByte('\n')
		}
		_, err := io.WriteString(c.App.Writer, b.String())
		return err
	},
}

// flagValues completes the values of flags that take one.
var flagValues = map[string]func(words []string) []string{
	"output":  outputValues,
	"hairpin": fixed("on", "off"),
	"backend": fixed("auto", "iptables", "iptables-legacy", "nftables"),
	"proto":   fixed("tcp", "udp", "sctp"),
	"bridge":  liveBridges,
	"netns":   netnsNames,
	"pod":     livePodNames,
}

// positionals completes a command's arguments.
var positionals = map[string]func(words []string) []string{
	"ports":      livePorts,
	"enable":     livePorts,
	"disable":    livePorts,
	"completion": fixed("bash", "zsh", "fish"),
	"probe":      probeArgs,
}

// probeArgs completes probe's POD (a port or pod/NS/NAME); SERVICE,
// the second, is left to the user.
func probeArgs(words []string) []string {
	n := 0
	before := words[:len(words)-1]
	for i := slices.Index(before, "probe") + 1; i > 0 && i < len(before); i++ {
		w := before[i]
		if strings.HasPrefix(w, "-") {
			if f := findFlag(probeCommand.Flags, w); f != nil && flagTakesValue(f) && !strings.Contains(w, "=") {
				i++
			}
			continue
		}
		n++
	}
	if n == 0 {
		return livePorts(words)
	}
	return nil
}

// outputValues are -o's formats; ports also has wide.
func outputValues(words []string) []string {
	if slices.Contains(words, "ports") || slices.Contains(words, "ls") {
		return []string{"table", "wide", "json"}
	}
	return []string{"table", "json"}
}

func fixed(vals ...string) func([]string) []string {
	return func([]string) []string { return vals }
}

// complete returns the candidates for the last word.
func complete(app *cli.App, words []string) []string {
	cur := words[len(words)-1]
	before := words[:len(words)-1]
	var cmd *cli.Command
	flags := app.Flags
	for i := 0; i < len(before); i++ {
		w := before[i]
		if strings.HasPrefix(w, "-") {
			if f := findFlag(flags, w); f != nil && flagTakesValue(f) && !strings.Contains(w, "=") {
				i++ // skip the value
			}
			continue
		}
		if cmd == nil {
			if cmd = app.Command(w); cmd == nil {
				return nil
			}
			flags = append(append([]cli.Flag{}, cmd.Flags...), app.Flags...)
		}
	}
	var cands []string
	if len(before) > 0 {
		if f := findFlag(flags, before[len(before)-1]); f != nil && flagTakesValue(f) {
			if fn := flagValues[f.Names()[0]]; fn != nil {
				cands = fn(words)
			}
			return withPrefix(cands, cur)
		}
	}
	switch {
	case strings.HasPrefix(cur, "-"):
		for _, f := range flags {
			for _, n := range f.Names() {
				if len(n) > 1 {
					cands = append(cands, "--"+n)
				}
			}
		}
		cands = append(cands, "--help")
	case cmd == nil:
		for _, c := range app.VisibleCommands() {
			if c.Name != "help" {
				cands = append(cands, c.Name)
			}
		}
	default:
		if fn := positionals[cmd.Name]; fn != nil {
			cands = fn(words)
		}
	}
	return withPrefix(cands, cur)
}

func findFlag(flags []cli.Flag, word string) cli.Flag {
	name := strings.TrimLeft(word, "-")
	if i := strings.IndexByte(name, '='); i >= 0 {
		name = name[:i]
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func flagTakesValue(f cli.Flag) bool {
	_, isBool := f.(*cli.BoolFlag)
	return !isBool
}

func withPrefix(cands []string, prefix string) []string {
	out := []string{}
	seen := map[string]bool{}
	for _, c := range cands {
		if strings.HasPrefix(c, prefix) && !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// flagOf finds --name among the words typed, "" when absent.
func flagOf(words []string, name string) string {
	for i, w := range words {
		switch {
		case w == "--"+name && i+1 < len(words):
			return words[i+1]
		case strings.HasPrefix(w, "--"+name+"="):
			return strings.TrimPrefix(w, "--"+name+"=")
		}
	}
	return ""
}

// netnsOf finds --netns among the words typed, so live completions look
// in the namespace the command will work in.
func netnsOf(words []string) string {
	if ns := flagOf(words, "netns"); ns != "" {
		return ns
	}
	return os.Getenv(netnsEnv)
}

// livePortList lists the ports, with their pods when withPods.
func livePortList(words []string, withPods bool) []bridgeports.Port {
	cl, err := netops.Open(netnsOf(words))
	if err != nil {
		return nil
	}
	defer cl.Close()
	var o bridgeports.ListOptions
	if withPods {
		dir := flagOf(words, "cni-cache")
		if dir == "" {
			dir = pods.DefaultCacheDir
		}
		o.Pods = &bridgeports.PodOptions{CacheDir: dir}
	}
	ports, err := bridgeports.List(cl, o)
	if err != nil {
		return nil
	}
	return ports
}

// livePorts offers the ports' names, and pod/NAMESPACE/NAME for the pods
// behind them once "pod/" is being typed.
func livePorts(words []string) []string {
	withPods := strings.HasPrefix(bridgeports.PodArgPrefix, words[len(words)-1]) || strings.HasPrefix(words[len(words)-1], bridgeports.PodArgPrefix)
	var out []string
	for _, p := range livePortList(words, withPods) {
		out = append(out, p.Name)
		if n := p.Pod.FullName(); n != "" {
			out = append(out, bridgeports.PodArgPrefix+n)
		}
	}
	return out
}

// livePodNames offers NAMESPACE/NAME of the pods behind the ports.
func livePodNames(words []string) []string {
	var out []string
	for _, p := range livePortList(words, true) {
		if n := p.Pod.FullName(); n != "" {
			out = append(out, n)
		}
	}
	return out
}

func liveBridges(words []string) []string {
	cl, err := netops.Open(netnsOf(words))
	if err != nil {
		return nil
	}
	defer cl.Close()
	names, err := bridgeports.BridgeNames(cl)
	if err != nil {
		return nil
	}
	return names
}

func netnsNames([]string) []string {
	ents, err := os.ReadDir(netops.NetnsDir)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
