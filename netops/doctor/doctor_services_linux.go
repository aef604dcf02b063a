package doctor

import (
	"slices"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
)

// doctorServices reads kube-proxy's NAT from whichever backend holds it.
// It asks DetectBackends first, so that "no kube-proxy rules anywhere" is
// a finding (kube-proxy absent or replaced) rather than an error, and only
// then reads the rules with Services.
func doctorServices(c *netops.Client) (*kubeproxy.Result, error) {
	const wait = 5 // seconds for the xtables lock, per backend
	probes, err := kubeproxy.DetectBackends(c, 0, wait)
	if err != nil {
		return nil, err
	}
	res := &kubeproxy.Result{
		Checked:           []kubeproxy.Backend{kubeproxy.BackendIPTablesNFT, kubeproxy.BackendIPTablesLegacy, kubeproxy.BackendNFTables},
		BackendsWithRules: []kubeproxy.Backend{},
		Services:          []kubeproxy.Service{},
		Warnings:          []string{},
	}
	any := false
	unreadable := map[kubeproxy.Backend]bool{}
	for _, p := range probes {
		any = any || p.HasRules
		if p.Error != "" {
			res.Warnings = append(res.Warnings, p.Error)
			unreadable[p.Backend] = true
		}
	}
	// Checked names only what could be read: a backend that could not is
	// not one without rules.
	res.Checked = slices.DeleteFunc(res.Checked, func(b kubeproxy.Backend) bool { return unreadable[b] })
	if !any {
		return res, nil
	}
	return kubeproxy.Services(c, kubeproxy.Options{Backend: kubeproxy.BackendAuto, WaitSeconds: wait})
}
