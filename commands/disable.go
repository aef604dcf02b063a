package commands

import "github.com/urfave/cli/v2"

var disableCommand = &cli.Command{
	Name:      "disable",
	Usage:     "turn hairpin mode off, per port or in bulk",
	ArgsUsage: "[IFACE | POD-IP | pod/NS/NAME]...",
	Description: `Turns hairpin mode off, with the same selection as enable. Ports already
off are reported unchanged and not written.

EXAMPLES:
   hairpinctl disable veth1
   hairpinctl disable pod/default/web-7d9f6c-x2kq
   hairpinctl disable --bridge cni0 --dry-run`,
	Flags:  hairpinFlags(),
	Action: hairpinAction(false),
}
