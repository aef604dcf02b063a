package commands

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// NormalizeArgs moves a subcommand's flags in front of its positional
// arguments, so "hairpinctl enable veth1 --dry-run" parses like
// "hairpinctl enable --dry-run veth1": Go's flag parsing (and so
// urfave/cli/v2) stops at the first positional argument. Everything after
// "--" stays positional.
func NormalizeArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	i := 1
	// Global flags before the command name, with their values.
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--" {
		out = append(out, args[i])
		name := strings.TrimLeft(args[i], "-")
		i++
		if !strings.Contains(name, "=") && flagsTakeValue(app.Flags, name) && i < len(args) {
			out = append(out, args[i])
			i++
		}
	}
	if i >= len(args) {
		return out
	}
	cmd := app.Command(args[i])
	out = append(out, args[i])
	i++
	if cmd == nil || cmd.SkipFlagParsing {
		return append(out, args[i:]...)
	}
	var flags, positional []string
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if takesValue(cmd, name) && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	out = append(out, flags...)
	return append(out, positional...)
}

// takesValue reports whether the command's flag called name needs a value.
func takesValue(cmd *cli.Command, name string) bool {
	return flagsTakeValue(cmd.Flags, name)
}

// flagsTakeValue reports whether the flag called name among flags needs a value.
func flagsTakeValue(flags []cli.Flag, name string) bool {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if _, isBool := f.(*cli.BoolFlag); isBool {
				return false
			}
			return true
		}
	}
	return false
}
