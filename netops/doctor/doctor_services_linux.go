package doctor

import (
	"slices"

	"github.com/hairpinctl/hairpinctl/netops"
)

// doctorServices reads kube-proxy's NAT from whichever backend holds it.
// It asks DetectBackends first, so that "no kube-proxy rules anywhere" is
// a finding (kube-proxy absent or replaced) rather than an error, and only
// then reads the rules with Services.
func doctorServices(c *netops.Client) (*netops.ServicesResult, error) {
	const wait = 5 // seconds for the xtables lock, per backend
	probes, err := c.DetectBackends(0, wait)
	if err != nil {
		return nil, err
	}
	res := &netops.ServicesResult{
		Checked:           []netops.Backend{netops.BackendIPTablesNFT, netops.BackendIPTablesLegacy, netops.BackendNFTables},
		BackendsWithRules: []netops.Backend{},
		Services:          []netops.Service{},
		Warnings:          []string{},
	}
	any := false
	unreadable := map[netops.Backend]bool{}
	for _, p := range probes {
		any = any || p.HasRules
		if p.Error != "" {
			res.Warnings = append(res.Warnings, p.Error)
			unreadable[p.Backend] = true
		}
	}
	// Checked names only what could be read: a backend that could not is
	// not one without rules.
	res.Checked = slices.DeleteFunc(res.Checked, func(b netops.Backend) bool { return unreadable[b] })
	if !any {
		return res, nil
	}
	return c.Services(netops.ServicesOptions{Backend: netops.BackendAuto, WaitSeconds: wait})
}
