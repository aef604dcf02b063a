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
// this node's bridges, in the Services' order.
func PlanDoctor(c *netops.Client, o DoctorOptions) ([]Pair, error) {
	ports, err := bridgeports.List(c, bridgeports.ListOptions{PodIPs: true, Kinds: true, Pods: &bridgeports.PodOptions{CacheDir: o.CacheDir}})
	if err != nil {
		return nil, err
	}
	byIP := map[netip.Addr]bridgeports.Port{}
	for _, p := range ports {
		if !p.PodPort {
			continue
		}
		for _, s := range p.PodIPs {
			if a, err := netip.ParseAddr(s); err == nil {
				byIP[a.Unmap()] = p
			}
		}
	}
	so := kubeproxy.Options{}
	for _, s := range o.Services {
		ip, name, err := kubeproxy.ParseServiceArg(s)
		if err != nil {
			return nil, err
		}
		if ip != "" {
			so.ClusterIPs = append(so.ClusterIPs, ip)
		} else {
			so.Names = append(so.Names, name)
		}
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
			p, ok := byIP[ea.Unmap()]
			if !ok || seen[p.Name] {
				continue
			}
			seen[p.Name] = true
			pairs = append(pairs, Pair{Port: p.Name, Pod: p.Pod.FullName(), Service: svc, Name: name})
		}
	}
	return pairs, nil
}

// Doctor probes each pair, one after the other, and returns a doctor check
// for each: PASS when every connection succeeded, FAIL when some failed
// (WARN when only UDP's unanswered datagrams did), SKIP for the pairs left
// when the budget would be overrun or ctx ends.
func Doctor(ctx context.Context, c *netops.Client, pairs []Pair, o DoctorOptions) []doctor.Check {
	o.defaults()
	start := time.Now()
	// A probe lasts its timeout, and reading the node takes a little more.
	per := o.Timeout + 250*time.Millisecond
	checks := []doctor.Check{}
	for _, p := range pairs {
		id := "probe:" + p.Service
		if p.Name != "" {
			id = "probe:" + p.Name
		}
		from := p.Port
		if p.Pod != "" {
			from = p.Pod + " (" + p.Port + ")"
		}
		id += " from " + from
		if ctx.Err() != nil || time.Since(start)+per > o.Budget {
			checks = append(checks, doctor.Check{ID: id, Status: doctor.StatusSkip,
				Finding: fmt.Sprintf("not probed: the --probe budget of %s was spent", o.Budget), Details: []string{}})
			continue
		}
		r, err := Run(ctx, c, Options{Pod: p.Port, Service: p.Service, Count: o.Count, Timeout: o.Timeout, CacheDir: o.CacheDir})
		if err != nil {
			checks = append(checks, doctor.Check{ID: id, Status: doctor.StatusWarn, Finding: "could not probe: " + err.Error(), Details: []string{}})
			continue
		}
		checks = append(checks, probeCheck(id, r))
	}
	return checks
}

// probeCheck turns a probe into a doctor check.
func probeCheck(id string, r *Report) doctor.Check {
	ch := doctor.Check{ID: id, Status: doctor.StatusPass, Details: []string{}}
	ok := r.Results[ResultSucceeded]
	if r.OK {
		ch.Finding = fmt.Sprintf("%d/%d connections from the pod to itself through the Service succeeded", ok, r.Count)
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
	ch.Finding = strings.Join(finds, "; ")
	ch.Details = append(ch.Details, strconv.Itoa(ok)+"/"+strconv.Itoa(r.Count)+" succeeded")
	return ch
}
