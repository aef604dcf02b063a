package kubeproxy

import (
	"io"
	"slices"
)

// parseIPTablesSave reads iptables-save text of one address family (the
// nat table, and the filter table for the "has no endpoints" REJECTs) the
// way Services does, selecting with sel. It builds anywhere: the tests and
// the fuzz target feed it captured text.
func parseIPTablesSave(r io.Reader, family int, backend Backend, raw bool, sel *serviceSelector) (*Result, error) {
	p := newIPTParser(family, raw)
	if err := p.feed(r); err != nil {
		return nil, err
	}
	res := newServicesResult(backend)
	p.into(res, sel)
	return res, nil
}

// into adds what the parser read to res.
func (p *iptParser) into(res *Result, sel *serviceSelector) {
	p.backend = res.Backend
	svcs, unknown := p.link(sel)
	res.Unparsed += p.unparsed
	res.UnparsedRules = append(res.UnparsedRules, unknown...)
	mergeMasquerade(res, p.masq, p.family)
	addServices(res, svcs, true)
}

// newServicesResult returns a result with empty, non-nil slices.
func newServicesResult(backend Backend) *Result {
	return &Result{
		Backend:           backend,
		BackendsWithRules: []Backend{},
		Checked:           []Backend{},
		Services:          []Service{},
		Warnings:          []string{},
		Families:          []int{},
	}
}

// mergeMasquerade folds one family's plumbing into res: with both
// families read, a piece counts as present only when every family has it.
func mergeMasquerade(res *Result, m MasqueradePlumbing, family int) {
	switch {
	case len(res.Families) == 0:
		res.Masquerade = m
	case !slices.Contains(res.Families, family):
		res.Masquerade.MarkMasq = res.Masquerade.MarkMasq && m.MarkMasq
		res.Masquerade.PostroutingMasquerade = res.Masquerade.PostroutingMasquerade && m.PostroutingMasquerade
		res.Masquerade.PostroutingHooked = res.Masquerade.PostroutingHooked && m.PostroutingHooked
		res.Masquerade.HairpinSet = res.Masquerade.HairpinSet && m.HairpinSet
		if res.Masquerade.Mark == "" {
			res.Masquerade.Mark = m.Mark
		}
	}
	res.Families = appendUniqueInt(res.Families, family)
}
