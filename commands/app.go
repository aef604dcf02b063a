// Package commands is hairpinctl's command line: one file per subcommand,
// each an Action that validates input, calls netops, and hands the data to
// a printer.
package commands

import (
	"github.com/urfave/cli/v2"
)

// NewApp builds the hairpinctl application. Errors come back from Run; main
// maps them to exit codes with ExitCode. It is long because it is one
// struct literal: the command list and the app-wide hooks, kept in one place.
func NewApp(version string) *cli.App {
	app := &cli.App{
		Name:    "hairpinctl",
		Usage:   "inspect and fix Kubernetes hairpin networking on a node",
		Version: version,
		Description: `A pod that connects to its own Service's ClusterIP can be load-balanced
back to itself; the packet must then leave the bridge by the port it came in
on, which the bridge drops unless that port has hairpin mode on. hairpinctl
lists and sets hairpin mode on bridge ports, reads kube-proxy's Service NAT,
follows conntrack, and diagnoses the whole chain.`,
		Commands: []*cli.Command{
			portsCommand,
			servicesCommand,
			enableCommand,
			disableCommand,
			watchCommand,
			selftestCommand,
			conntrackCommand,
			doctorCommand,
			probeCommand,
			metricsCommand,
			versionCommand,
			completionCommand,
			completeCommand,
		},
		// --netns and -o are accepted before the command name too.
		Flags: []cli.Flag{
			netnsFlag(),
			outputFlag(),
			&cli.BoolFlag{Name: "version", Usage: "print the version (as hairpinctl version) and exit"},
		},
		// urfave/cli's own --version prints another format than the
		// version command: ours prints the same, -o json included.
		HideVersion:          true,
		EnableBashCompletion: true,
		// Exit codes are decided once, in main, from the returned error.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageErrorf("%s (see: hairpinctl --help)", usageMessage(c.App.Flags, err))
		},
		Before: func(c *cli.Context) error {
			if !c.Bool("version") {
				return nil
			}
			if err := printVersion(c); err != nil {
				return err
			}
			return silentExit(ExitOK)
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				name := c.Args().First()
				if sug := suggest(name, commandNames(c.App.Commands)); sug != "" {
					return usageErrorf("unknown command %q: did you mean %s? (see: hairpinctl --help)", name, sug)
				}
				return usageErrorf("unknown command %q (see: hairpinctl --help)", name)
			}
			// No command is a usage error like any other (exit 2): a
			// script's empty "$cmd" must not pass for success. The help
			// goes to stderr, so stdout stays empty.
			w := c.App.Writer
			c.App.Writer = c.App.ErrWriter
			err := cli.ShowAppHelp(c)
			c.App.Writer = w
			if err != nil {
				return err
			}
			return usageErrorf("no command given (see: hairpinctl --help)")
		},
		// The exit codes are said once, here and in the man page.
		CustomAppHelpTemplate: appHelpTemplate,
	}
	cli.HelpPrinter = printHelp
	for _, cmd := range app.Commands {
		cmd.OnUsageError = commandUsageError
		if cmd.CustomHelpTemplate == "" {
			cmd.CustomHelpTemplate = commandHelpTemplate
		}
	}
	return app
}

func commandUsageError(c *cli.Context, err error, _ bool) error {
	return usageErrorf("%s: %s (see: hairpinctl %s --help)", c.Command.Name, usageMessage(c.Command.Flags, err), c.Command.Name)
}
