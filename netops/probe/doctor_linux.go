package probe

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/doctor"
	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
)

// DoctorOptions says what doctor --probe probes and how long it may take.
type DoctorOptions struct {
	// Services are doctor's Service selectors; empty probes every Service.
	Services []string
	// CacheDir is libcni's cache directory.
	CacheDir string
	// Count and Timeout are each probe's [DefaultDoctorCount,
	// DefaultDoctorTimeout].
	Count   int
	Timeout time.Duration
	// Budget bounds all the probes together [DefaultDoctorBudget]: none
	// starts that could end after it.
	Budget time.Duration
}

// Defaults of DoctorOptions: ten connections are enough to see a third
// of them fail, and a dozen failing probes fit the budget.
const (
	DefaultDoctorCount   = 10
	DefaultDoctorTimeout = 500 * time.Millisecond
	DefaultDoctorBudget  = 30 * time.Second
)

// Pair is one probe doctor --probe makes: from an endpoint's pod, through
// the Service port it backs.
type Pair struct {
	// Port is the endpoint's bridge port, and Pod its pod's name ("" when
	// unknown).
	Port, Pod string
	// Service is the Service port as IP:PORT, and Name as NS/NAME:PORT
	// ("" when the rules do not name it).
	Service, Name string
	// Ambiguous, when not "", says why the pair is not probed: two
	// ports claim the endpoint's address, and probing from either could
	// be probing from the wrong pod.
	Ambiguous string

	// What the probe needs, as PlanDoctor read it: the probe does not
	// read the ports and kube-proxy's rules again.
	port  bridgeports.Port
	ip    netip.Addr
	ep    string
	svc   kubeproxy.Service
	model *kubeproxy.Result
}

func (o *DoctorOptions) defaults() {
	if o.Count <= 0 {
		o.Count = DefaultDoctorCount
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultDoctorTimeout
	}
	if o.Budget <= 0 {
		o.Budget = DefaultDoctorBudget
	}
}

// PlanDoctor lists the probes doctor --probe makes: one for each endpoint
// of a selected TCP or UDP Service port that sits behind a pod's port of
// this node's bridges, in the Services' order. An address two ports
// claim (bridgeports.PodsByIP's rule) is probed from neither: its pair says so.
func PlanDoctor(c *netops.Client, o DoctorOptions) ([]Pair, error) {
	ports, err := bridgeports.List(c, bridgeports.ListOptions{PodIPs: true, Kinds: true, Pods: &bridgeports.PodOptions{CacheDir: o.CacheDir}})
	if err != nil {
		return nil, err
	}
	byIP := map[netip.Addr][]bridgeports.Port{}
	for _, p := range ports {
		if !p.PodPort {
			continue
		}
		for _, s := range p.PodIPs {
			if a, err := netip.ParseAddr(s); err == nil {
				byIP[a.Unmap()] = append(byIP[a.Unmap()], p)
			}
		}
	}
	so, err := servicesOptions(o.Services, "")
	if err != nil {
		return nil, err
	}
	model, err := kubeproxy.Services(c, so)
	if err != nil {
		return nil, err
	}
	pairs := []Pair{}
	for _, s := range model.Services {
		proto := strings.ToUpper(s.Protocol)
		a, err := netip.ParseAddr(s.ClusterIP)
		if err != nil || (proto != "TCP" && proto != "UDP") {
			continue
		}
		svc := netip.AddrPortFrom(a.Unmap(), uint16(s.Port)).String()
		name := ""
		if s.Name != "" {
			name = svcLabel(&s)
		}
		seen := map[string]bool{}
		for _, e := range s.Endpoints {
			ea, err := netip.ParseAddr(e.IP)
			if err != nil {
				continue
			}
			ea = ea.Unmap()
			claim := byIP[ea]
			switch {
			case len(claim) == 0:
				continue
			case len(claim) > 1:
				names := make([]string, len(claim))
				for i, p := range claim {
					names[i] = p.Name
				}
				pairs = append(pairs, Pair{Port: strings.Join(names, ","), Service: svc, Name: name,
					Ambiguous: fmt.Sprintf("endpoint %s is claimed by ports %s: probed from neither", ea, strings.Join(names, " and "))})
				continue
			}
			p := claim[0]
			if seen[p.Name] {
				continue
			}
			seen[p.Name] = true
			pairs = append(pairs, Pair{Port: p.Name, Pod: p.Pod.FullName(), Service: svc, Name: name,
				port: p, ip: ea, ep: netip.AddrPortFrom(ea, uint16(e.Port)).String(), svc: s, model: model})
		}
	}
	return pairs, nil
}

// CheckID is the ID of a probe check: probe:NS/NAME:PORT (probe:IP:PORT
// when the rules do not name the Service port). The pod probed from is in
// the check's finding and pods, not its ID.
func (p Pair) CheckID() string {
	if p.Name != "" {
		return "probe:" + p.Name
	}
	return "probe:" + p.Service
}

// Doctor probes each pair, one after the other, and returns a doctor check
// for each: PASS when every connection succeeded, FAIL when some failed
// (WARN when only UDP's unanswered datagrams did), SKIP for the pairs left
// when the budget would be overrun or ctx ends. The budget is a deadline
// on all the probes together: a probe it cuts short is skipped too.
func Doctor(ctx context.Context, c *netops.Client, pairs []Pair, o DoctorOptions) []doctor.Check {
	o.defaults()
	deadline := time.Now().Add(o.Budget)
	bctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	// A probe lasts its timeout, and reading the node takes a little more.
	per := o.Timeout + 250*time.Millisecond
	checks := []doctor.Check{}
	for _, p := range pairs {
		from := p.Port
		if p.Pod != "" {
			from = p.Pod + " (" + p.Port + ")"
		}
		ch := doctor.Check{ID: p.CheckID(), Details: []string{}, Pods: []doctor.PodRef{}}
		if p.Ambiguous == "" {
			ref := doctor.PodRef{Bridge: p.port.Bridge, Port: p.port.Name, Endpoint: p.ep}
			if p.port.Pod != nil {
				pod := *p.port.Pod
				ref.Pod = &pod
			}
			ch.Pods = append(ch.Pods, ref)
		}
		skip := func(why string) doctor.Check {
			ch.Status, ch.Finding = doctor.StatusSkip, "from "+from+": not probed: "+why
			return ch
		}
		switch {
		case ctx.Err() != nil:
			checks = append(checks, skip("interrupted"))
			continue
		case time.Until(deadline) < per:
			checks = append(checks, skip(fmt.Sprintf("the --probe budget of %s was spent", o.Budget)))
			continue
		case p.Ambiguous != "":
			ch.Status, ch.Finding = doctor.StatusWarn, "not probed: "+p.Ambiguous
			checks = append(checks, ch)
			continue
		}
		r, err := runPair(bctx, c, p, Options{Count: o.Count, Timeout: o.Timeout})
		switch {
		case err != nil && ctx.Err() != nil:
			checks = append(checks, skip("interrupted"))
		case err != nil && bctx.Err() != nil:
			checks = append(checks, skip(fmt.Sprintf("cut short: the --probe budget of %s ran out", o.Budget)))
		case err != nil:
			ch.Status, ch.Finding = doctor.StatusWarn, "from "+from+": could not probe: "+err.Error()
			checks = append(checks, ch)
		default:
			checks = append(checks, probeCheck(ch, from, r))
		}
	}
	return checks
}

// runPair probes one pair from what PlanDoctor read.
func runPair(ctx context.Context, c *netops.Client, p Pair, o Options) (*Report, error) {
	o.defaults()
	t := &target{port: p.port, podIP: p.ip, svc: p.svc, model: p.model}
	if err := t.finish(c); err != nil {
		return nil, err
	}
	defer t.ns.Close()
	return run(ctx, c, o, t)
}

// probeCheck turns a probe into a doctor check.
func probeCheck(ch doctor.Check, from string, r *Report) doctor.Check {
	ch.Status = doctor.StatusPass
	ok := r.Results[ResultSucceeded]
	if r.OK {
		ch.Finding = fmt.Sprintf("from %s: %d/%d connections from the pod to itself through the Service succeeded", from, ok, r.Count)
		return ch
	}
	ch.Status = doctor.StatusWarn
	var finds []string
	for _, f := range r.Findings {
		if f.ID != FindingUDPNoReply {
			ch.Status = doctor.StatusFail
		}
		finds = append(finds, f.Finding)
		if ch.Fix == "" {
			ch.Fix = f.Fix
		}
		ch.Details = append(ch.Details, f.Evidence...)
	}
	ch.Finding = "from " + from + ": " + strings.Join(finds, "; ")
	ch.Details = append(ch.Details, strconv.Itoa(ok)+"/"+strconv.Itoa(r.Count)+" succeeded")
	return ch
}
