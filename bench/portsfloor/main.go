// Command portsfloor is the least a Go program must do to do what
// `hairpinctl ports -q` and `enable --bridge` do, through the same
// netops code and without the CLI: open the namespace, run the one
// AF_BRIDGE dump, then print the names. With "enable" it turns hairpin on
// on the pods' ports as `enable --bridge` does (from the AF_UNSPEC dump,
// which tells which ports are pods'), with "enable-any" on every port as
// `enable --any-port` and `bridge -batch` do. With "links" it lists the ports
// from the AF_UNSPEC link dump that kinds and pod IPs need, without
// reading the pods' addresses; with "podips" it reads them too, as
// `hairpinctl ports` does. bench/ports.sh times it beside hairpinctl and
// bridge(8), so the share of a ratio that is the Go runtime, the kernel's
// larger dump, the pods' address dumps, and hairpinctl's start-up, are
// measured.
//
// Usage: portsfloor [enable BRIDGE | enable-any BRIDGE | links | podips]
package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
)

func main() {
	c, err := netops.Open("")
	if err != nil {
		fail(err)
	}
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	var ports []bridgeports.Port
	switch mode {
	case "links":
		ports, err = bridgeports.List(c, bridgeports.ListOptions{Kinds: true})
	case "enable", "enable-any":
		// As enable --bridge BRIDGE [--any-port] lists them.
		if len(os.Args) < 3 {
			fail(fmt.Errorf("%s needs the bridge", mode))
		}
		ports, err = bridgeports.List(c, bridgeports.ListOptions{Bridges: os.Args[2:3], Kinds: mode == "enable"})
	case "podips":
		ports, err = bridgeports.List(c, bridgeports.ListOptions{Kinds: true, PodIPs: true})
	default:
		ports, err = bridgeports.Dump(c)
	}
	if err != nil {
		fail(err)
	}
	if mode == "enable" || mode == "enable-any" {
		if mode == "enable" {
			ports, _ = bridgeports.SplitPodPorts(ports)
		}
		res := bridgeports.SetHairpin(c, ports, true, false)
		if len(res.Failed) > 0 {
			fail(fmt.Errorf("%d ports failed, first %s: %s", len(res.Failed), res.Failed[0].Name, res.Failed[0].Error))
		}
		return
	}
	w := bufio.NewWriter(os.Stdout)
	for _, p := range ports {
		w.WriteString(p.Name)
		for _, ip := range p.PodIPs {
			w.WriteByte(' ')
			w.WriteString(ip)
		}
		w.WriteByte('\n')
	}
	w.Flush()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "portsfloor:", err)
	os.Exit(1)
}
