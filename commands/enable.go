package commands

import "github.com/urfave/cli/v2"

var enableCommand = &cli.Command{
	Name:      "enable",
	Usage:     "turn hairpin mode on, per port or in bulk",
	ArgsUsage: "[IFACE | POD-IP | pod/NS/NAME]...",
	Description: `Turns hairpin mode on for the named ports (by interface name, by the IP of
the pod behind the port, as ports prints it, or by pod as
pod/NAMESPACE/NAME: every port of the pod, named from the CNI result cache),
every port of --bridge BR, or every port of every bridge with --all (alone).
Names and --bridge add up. Ports already on are reported unchanged and not
written. A port that fails (deleted mid-way) is reported and the rest are
still set: exit 3.

EXAMPLES:
   hairpinctl enable veth1
   hairpinctl enable 10.244.0.11                       # the port of this pod
   hairpinctl enable pod/default/web-7d9f6c-x2kq
   hairpinctl enable --bridge cni0
   hairpinctl enable veth1 --dry-run
   hairpinctl enable --bridge cni0 --wait-bridge 2m     # at boot`,
	Flags:  hairpinFlags(),
	Action: hairpinAction(true),
}
