// Command hairpinctl inspects and fixes Kubernetes hairpin networking on a
// node: bridge-port hairpin mode, kube-proxy's Service NAT, and conntrack.
package main

import (
	"fmt"
	"os"

	"github.com/hairpinctl/hairpinctl/commands"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

func main() {
	app := commands.NewApp(version)
	if err := app.Run(commands.NormalizeArgs(app, os.Args)); err != nil {
		if msg := commands.ErrorMessage(err); msg != "" {
			fmt.Fprintf(os.Stderr, "hairpinctl: %s\n", msg)
		}
		os.Exit(commands.ExitCode(err))
	}
}
