package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/cri"
	"github.com/hairpinctl/hairpinctl/netops/pods"
	"github.com/urfave/cli/v2"
)

// criEndpointFlag is --cri-endpoint, the runtime asked when the CNI cache
// does not name a pod.
func criEndpointFlag() cli.Flag {
	return &cli.StringFlag{
		Name:  "cri-endpoint",
		Usage: "ask the container runtime at `URL` (unix:///path) for pods the CNI cache does not name [containerd's, then CRI-O's socket]",
	}
}

// namePodsFromCRI asks the runtime for the pods behind ports the cache
// left unknown, within cri.DefaultTimeout. A node without a runtime socket
// is silent; a runtime that fails or does not answer is a warning, never
// an error: the listing stands without the names.
func namePodsFromCRI(c *cli.Context, cl *netops.Client, ports []bridgeports.Port) {
	if err := askRuntime(c, cl, ports); err != nil {
		fmt.Fprintf(c.App.ErrWriter, "hairpinctl: %s: %s\n", c.Command.Name, termSafeText(err.Error()))
	}
}

// askRuntime is namePodsFromCRI without the warning: the error, ending
// in "pod names from the runtime unknown", or nil when the runtime
// answered, was not needed, or there is none and none was named.
func askRuntime(c *cli.Context, cl *netops.Client, ports []bridgeports.Port) error {
	need := false
	for _, p := range ports {
		if p.Pod == nil && len(p.PodIPs) > 0 {
			need = true
			break
		}
	}
	if !need {
		return nil
	}
	endpoints := cri.DefaultEndpoints
	if ep := c.String("cri-endpoint"); ep != "" {
		endpoints = []string{ep}
	}
	ctx, cancel := context.WithTimeout(c.Context, cri.DefaultTimeout)
	defer cancel()
	sbs, _, err := cri.Sandboxes(ctx, endpoints)
	if err != nil {
		if !errors.Is(err, cri.ErrNoRuntime) || c.IsSet("cri-endpoint") {
			return fmt.Errorf("%w: pod names from the runtime unknown", err)
		}
		return nil
	}
	bridgeports.NamePods(cl, ports, pods.FromSandboxes(sbs))
	return nil
}

// podNaming is podOptions that also asks the runtime, over CRI, for the
// pods the cache does not name.
func podNaming(c *cli.Context, cl *netops.Client) *bridgeports.PodOptions {
	o := podOptions(c)
	o.Unnamed = func(ports []bridgeports.Port) { namePodsFromCRI(c, cl, ports) }
	return o
}
