package netops

import "slices"

// doctorServices reads kube-proxy's NAT from whichever backend holds it.
// It asks DetectBackends first, so that "no kube-proxy rules anywhere" is
// a finding (kube-proxy absent or replaced) rather than an error, and only
// then reads the rules with Services.
func (c *Client) doctorServices() (*ServicesResult, error) {
	const wait = 5 // seconds for the xtables lock, per backend
	probes, err := c.DetectBackends(0, wait)
	if err != nil {
		return nil, err
	}
	res := &ServicesResult{
		Checked:           []Backend{BackendIPTablesNFT, BackendIPTablesLegacy, BackendNFTables},
		BackendsWithRules: []Backend{},
		Services:          []Service{},
		Warnings:          []string{},
	}
	any := false
	unreadable := map[Backend]bool{}
	for _, p := range probes {
		any = any || p.HasRules
		if p.Error != "" {
			res.Warnings = append(res.Warnings, p.Error)
			unreadable[p.Backend] = true
		}
	}
	// Checked names only what could be read: a backend that could not is
	// not one without rules.
	res.Checked = slices.DeleteFunc(res.Checked, func(b Backend) bool { return unreadable[b] })
	if !any {
		return res, nil
	}
	return c.Services(ServicesOptions{Backend: BackendAuto, WaitSeconds: wait})
}
