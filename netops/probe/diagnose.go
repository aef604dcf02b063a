package probe

import (
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strings"
)

// results lists every connection result, in the order reports show them.
var results = []string{ResultSucceeded, ResultRetransmitted, ResultTimedOut, ResultRefused, ResultReset, ResultNoReply, ResultError}

// Diagnose counts r's connections and explains every one that failed from
// r's facts, filling Results, Endpoints, Findings and OK. cmd turns
// hairpinctl arguments into the command line a fix suggests (with the
// --netns the probe ran with). A failure nothing read explains is said to
// be unexplained, with what was seen: never guessed.
func Diagnose(r *Report, cmd func(args string) string) {
	r.Results = map[string]int{}
	for _, k := range results {
		r.Results[k] = 0
	}
	byEP := map[string]*EndpointCount{}
	for _, c := range r.Connections {
		r.Results[c.Result]++
		if c.Endpoint == "" {
			continue
		}
		e := byEP[c.Endpoint]
		if e == nil {
			e = &EndpointCount{IP: c.Endpoint, Self: c.Self, Results: map[string]int{}}
			if ap, err := netip.ParseAddrPort(c.Endpoint); err == nil {
				e.IP, e.Port = ap.Addr().String(), int(ap.Port())
			}
			byEP[c.Endpoint] = e
		}
		e.Results[c.Result]++
	}
	r.Endpoints = []EndpointCount{}
	for _, e := range byEP {
		r.Endpoints = append(r.Endpoints, *e)
	}
	sort.Slice(r.Endpoints, func(i, j int) bool { return r.Endpoints[i].Addr() < r.Endpoints[j].Addr() })
	r.Findings = []Finding{}
	r.OK = r.Results[ResultSucceeded] == len(r.Connections) && len(r.Connections) > 0

	d := diagnosis{r: r, cmd: cmd, done: make([]bool, len(r.Connections))}
	for i, c := range r.Connections {
		d.done[i] = c.Result == ResultSucceeded
	}
	d.noEndpoints()
	d.hairpinOff()
	d.noSNAT()
	d.refused()
	d.brNetfilter()
	d.udpNoReply()
	d.unexplained()
}

type diagnosis struct {
	r    *Report
	cmd  func(string) string
	done []bool
}

// pick returns the indexes of the connections not yet explained that sel
// selects.
func (d *diagnosis) pick(sel func(c *Connection) bool) []int {
	var out []int
	for i := range d.r.Connections {
		if !d.done[i] && sel(&d.r.Connections[i]) {
			out = append(out, i)
		}
	}
	return out
}

func (d *diagnosis) add(f Finding, idx []int) {
	for _, i := range idx {
		d.done[i] = true
	}
	f.Connections = len(idx)
	if f.Evidence == nil {
		f.Evidence = []string{}
	}
	d.r.Findings = append(d.r.Findings, f)
}

// svcName names the Service port in findings.
func (d *diagnosis) svcName() string {
	s := d.r.Service
	if s.Name != "" {
		return s.Name
	}
	return fmt.Sprintf("%s:%d", s.IP, s.Port)
}

// tally says how the connections idx ended: "7 of 20 timed out",
// "3 timed out and 2 refused of 20".
func (d *diagnosis) tally(idx []int) string {
	n := map[string]int{}
	for _, i := range idx {
		n[d.r.Connections[i].Result]++
	}
	var parts []string
	for _, k := range results {
		if n[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[k], strings.ReplaceAll(k, "-", " ")))
		}
	}
	if len(parts) == 1 {
		num, what, _ := strings.Cut(parts[0], " ")
		return fmt.Sprintf("%s of %d %s", num, len(d.r.Connections), what)
	}
	return fmt.Sprintf("%s of %d", strings.Join(parts, " and "), len(d.r.Connections))
}

func (d *diagnosis) self() *ServiceEndpoint {
	for i := range d.r.Service.Endpoints {
		if d.r.Service.Endpoints[i].Self {
			return &d.r.Service.Endpoints[i]
		}
	}
	return nil
}

// noEntry is the evidence for connections without a conntrack entry:
// what conntrack showed, or that it could not be read.
func (d *diagnosis) noEntry(what string) string {
	if e := d.r.Facts.ConntrackError; e != "" {
		return "conntrack not read (" + e + "): whether an entry was confirmed is unknown"
	}
	return what
}

func (d *diagnosis) rulesSource() string {
	if d.r.Service.Backend == "" {
		return "kube-proxy's rules"
	}
	return "kube-proxy's rules (" + d.r.Service.Backend + ")"
}

// noEndpoints: kube-proxy rejects connections to a Service port without
// endpoints.
func (d *diagnosis) noEndpoints() {
	s := d.r.Service
	if !s.NoEndpoints && len(s.Endpoints) > 0 {
		return
	}
	idx := d.pick(func(c *Connection) bool { return !c.Conntrack })
	if len(idx) == 0 {
		return
	}
	ev := []string{
		d.rulesSource() + ": the Service port has no endpoints",
		d.noEntry("conntrack: no entry for these connections (rejected before one was confirmed)"),
	}
	refused, silent := 0, 0
	for _, i := range idx {
		switch d.r.Connections[i].Result {
		case ResultRefused:
			refused++
		case ResultTimedOut, ResultNoReply:
			silent++
		}
	}
	if refused > 0 && silent > 0 {
		// A rejection is an ICMP error, and the kernel sends a burst of
		// six to one address, then one a second (net.ipv4.icmp_ratelimit).
		ev = append(ev, fmt.Sprintf("%d refused and %d got no answer, as the kernel's rate limit on ICMP errors to one address (net.ipv4.icmp_ratelimit: a burst of 6) would make them", refused, silent))
	}
	d.add(Finding{
		ID:       FindingNoEndpoints,
		Finding:  fmt.Sprintf("%s: %s has no endpoints: kube-proxy rejects every connection to it", d.tally(idx), d.svcName()),
		Evidence: ev,
	}, idx)
}

// hairpinOff: a frame balanced back to the pod it came from must leave the
// bridge by the port it came in on, which the bridge does only with hairpin
// on; otherwise it drops the frame before the forward hook, and conntrack
// never confirms the connection.
func (d *diagnosis) hairpinOff() {
	self := d.self()
	if d.r.Client.Hairpin || self == nil {
		return
	}
	traced := d.r.Facts.Traced
	idx := d.pick(func(c *Connection) bool {
		switch c.Result {
		case ResultTimedOut, ResultNoReply, ResultRetransmitted:
		default:
			return false
		}
		if traced {
			// Seen: balanced to itself, then left by no port.
			return c.Bridge == BridgeDropped && c.BalancedToSelf
		}
		return !c.Conntrack || c.Result == ResultRetransmitted
	})
	if len(idx) == 0 {
		return
	}
	total := len(d.r.Connections)
	if !traced {
		// Inferred: blame the bridge for no more connections than the
		// pod's share of the balancing makes likely; the rest stay
		// unexplained.
		if most := likelyAtMost(self.Share, total); len(idx) > most {
			idx = idx[:most]
		}
		if len(idx) == 0 {
			return
		}
	}
	p := d.r.Client
	n := len(d.r.Service.Endpoints)
	who := "the only endpoint"
	if n > 1 {
		who = fmt.Sprintf("1 of %d endpoints", n)
	}
	ev := []string{
		fmt.Sprintf("kernel: port %s of bridge %s has hairpin off", p.Interface, p.Bridge),
		fmt.Sprintf("%s: %s (this pod) is %s of %s, share %s", d.rulesSource(), self.Addr(), who, d.svcName(), percent(self.Share)),
	}
	retrans := 0
	for _, i := range idx {
		if d.r.Connections[i].Result == ResultRetransmitted {
			retrans++
		}
	}
	if traced {
		ev = append(ev, fmt.Sprintf("bridge trace: %d of the probe's connections entered the bridge from %s, came out of prerouting addressed to this pod itself, and left by no port, nor were passed up to the node: dropped by the bridge", len(idx), p.Interface))
	} else {
		ev = append(ev, fmt.Sprintf("bridge not traced: the drop is inferred, not seen, from the hairpin mode and the pod's share (at most %d of %d put on it)", likelyAtMost(self.Share, total), total))
	}
	if retrans > 0 {
		ev = append(ev, fmt.Sprintf("socket: %d connected only after the kernel sent the SYN again: the first SYN was dropped and the resent one balanced elsewhere", retrans))
	}
	if retrans < len(idx) {
		ev = append(ev, d.noEntry("conntrack: no entry confirmed for the dropped ones (the kernel confirms one only after the bridge passes the packet on)"))
	}
	verb := "are dropped by the bridge"
	if !traced {
		verb = "are dropped by the bridge, which likely accounts for these (inferred: the bridge was not traced)"
	}
	d.add(Finding{
		ID: FindingHairpinOff,
		Finding: fmt.Sprintf("%s; this pod is %s of %s and its port %s has hairpin off: connections balanced to itself %s (expected %s)",
			d.tally(idx), who, d.svcName(), p.Interface, verb, expected(self.Share)),
		Evidence: ev,
		Fix:      d.cmd("enable " + p.Interface),
	}, idx)
}

// likelyAtMost is how many of n connections a share of the balancing can
// plausibly send to one endpoint: the mean plus three standard deviations
// of the binomial, plus one.
func likelyAtMost(share float64, n int) int {
	if share >= 0.999 {
		return n
	}
	m := share*float64(n) + 3*math.Sqrt(float64(n)*share*(1-share)) + 1
	return min(n, int(math.Ceil(m)))
}

// noSNAT: a connection balanced to the pod itself and not masqueraded
// arrives with the pod's own address as its source; the pod answers
// itself directly, and the reply never passes the node to be un-NATed.
func (d *diagnosis) noSNAT() {
	idx := d.pick(func(c *Connection) bool {
		return c.Conntrack && c.Self && !c.SNAT && c.Result != ResultSucceeded && c.Result != ResultRetransmitted && c.Result != ResultRefused
	})
	if len(idx) == 0 {
		return
	}
	m := d.r.Facts.Masquerade
	ev := []string{fmt.Sprintf("conntrack: %d entries balanced to this pod itself (reply tuple %s → %s) show no source NAT (NO-SNAT)", len(idx), d.r.Client.IP, d.r.Client.IP)}
	var missing []string
	if !m.HairpinSet {
		if !m.MarkMasq {
			missing = append(missing, "nothing sets the masquerade mark (KUBE-MARK-MASQ / mark-for-masquerade)")
		}
		if self := d.self(); self != nil && !self.HairpinMasq {
			missing = append(missing, fmt.Sprintf("the chain of endpoint %s does not mark the endpoint's own traffic for masquerade", self.Addr()))
		}
	}
	if !m.PostroutingMasquerade {
		missing = append(missing, "no rule masquerades marked packets (KUBE-POSTROUTING / masquerading)")
	}
	if !m.PostroutingHooked {
		missing = append(missing, "the POSTROUTING hook does not jump to kube-proxy's masquerade chain")
	}
	for _, s := range missing {
		ev = append(ev, d.rulesSource()+": "+s)
	}
	if len(missing) == 0 {
		ev = append(ev, d.rulesSource()+": the masquerade plumbing is in place, yet it did not apply to these connections (unexplained)")
	}
	d.add(Finding{
		ID:       FindingNoSNAT,
		Finding:  fmt.Sprintf("%s: the connections balanced to this pod itself were not masqueraded (NO-SNAT): the pod receives its own address as source and its reply bypasses the node", d.tally(idx)),
		Evidence: ev,
	}, idx)
}

// refused: an endpoint answered the SYN with a reset: nothing listens
// on its port.
func (d *diagnosis) refused() {
	by := map[string][]int{}
	var order []string
	for _, i := range d.pick(func(c *Connection) bool { return c.Result == ResultRefused && c.Conntrack && c.Endpoint != "" }) {
		ep := d.r.Connections[i].Endpoint
		if by[ep] == nil {
			order = append(order, ep)
		}
		by[ep] = append(by[ep], i)
	}
	for _, ep := range order {
		idx := by[ep]
		who := "endpoint " + ep
		if d.r.Connections[idx[0]].Self {
			who += " (this pod itself)"
		}
		d.add(Finding{
			ID:       FindingRefused,
			Finding:  fmt.Sprintf("%s by %s: nothing listens on its port", d.tally(idx), who),
			Evidence: []string{fmt.Sprintf("conntrack: the entries' reply tuple comes from %s, and the connection was refused (a reset or ICMP port unreachable answered it)", ep)},
		}, idx)
	}
}

// brNetfilter: with bridge-nf-call-iptables (ip6tables for IPv6) off, the reply of another pod
// on the same bridge is bridged straight back without passing conntrack,
// so it is never un-DNATed and the client ignores it.
func (d *diagnosis) brNetfilter() {
	v := d.r.Facts.BrNetfilter
	if v != "0" {
		return
	}
	idx := d.pick(func(c *Connection) bool {
		return c.Result == ResultTimedOut && c.Conntrack && !c.Self && strings.HasPrefix(c.State, "SYN_SENT")
	})
	if len(idx) == 0 {
		return
	}
	name := d.r.Facts.BrNetfilterSysctl
	if name == "" {
		name = "net.bridge.bridge-nf-call-iptables"
		if strings.Contains(d.r.Client.IP, ":") {
			name = "net.bridge.bridge-nf-call-ip6tables"
		}
	}
	d.add(Finding{
		ID:      FindingBrNetfilter,
		Finding: fmt.Sprintf("%s: %s is 0, so the replies of other pods on this bridge bypass conntrack and never reach this pod un-NATed", d.tally(idx), name),
		Evidence: []string{
			"sysctl: " + name + " = 0",
			"conntrack: the entries of these connections never saw a reply (state SYN_SENT)",
		},
		Fix: "sysctl -w " + name + "=1",
	}, idx)
}

// Unjudged reports whether r failed only in ways that cannot be judged:
// its one finding is udp-no-reply (datagrams a server need not answer).
// Such a probe is a warning, not a failure seen.
func Unjudged(r *Report) bool {
	return !r.OK && len(r.Findings) == 1 && r.Findings[0].ID == FindingUDPNoReply
}

// udpNoReply: a datagram without an answer is no proof of a drop.
func (d *diagnosis) udpNoReply() {
	idx := d.pick(func(c *Connection) bool { return c.Result == ResultNoReply })
	if len(idx) == 0 {
		return
	}
	d.add(Finding{
		ID:       FindingUDPNoReply,
		Finding:  fmt.Sprintf("%s: cannot be judged: a UDP server need not answer the probe's datagram", d.tally(idx)),
		Evidence: d.seen(idx),
	}, idx)
}

// unexplained says what was seen of every failure left.
func (d *diagnosis) unexplained() {
	idx := d.pick(func(*Connection) bool { return true })
	if len(idx) == 0 {
		return
	}
	d.add(Finding{
		ID:       FindingUnexplained,
		Finding:  fmt.Sprintf("%s, unexplained: neither the port's hairpin mode, the masquerade, the Service's endpoints nor br_netfilter accounts for them", d.tally(idx)),
		Evidence: d.seen(idx),
	}, idx)
}

// seen describes what conntrack and the bridge trace showed of the
// connections idx.
func (d *diagnosis) seen(idx []int) []string {
	ct, retrans := 0, 0
	bridge := map[string]int{}
	eps := map[string]int{}
	errs := map[string]int{}
	for _, i := range idx {
		c := d.r.Connections[i]
		if c.Error != "" {
			errs[c.Error]++
		}
		if c.Result == ResultRetransmitted {
			retrans++
		}
		if c.Conntrack {
			ct++
			eps[c.Endpoint]++
		}
		bridge[c.Bridge]++
	}
	var ev []string
	for e, n := range errs {
		ev = append(ev, fmt.Sprintf("socket: %d failed with %q", n, e))
	}
	sort.Strings(ev)
	if retrans > 0 {
		ev = append(ev, fmt.Sprintf("socket: %d connected only after the kernel sent the SYN again: the first SYN or its answer was lost", retrans))
	}
	if ct == 0 {
		ev = append(ev, d.noEntry("conntrack: no entry for them"))
	} else {
		var parts []string
		for ep, n := range eps {
			parts = append(parts, fmt.Sprintf("%d to %s", n, ep))
		}
		sort.Strings(parts)
		ev = append(ev, fmt.Sprintf("conntrack: %d of them have an entry: %s", ct, strings.Join(parts, ", ")))
	}
	if d.r.Facts.Traced {
		var parts []string
		for _, k := range []struct{ v, what string }{
			{BridgeForwarded, "reached the bridge's forward hook bound for a port (a FORWARD firewall rule may drop there)"},
			{BridgeDelivered, "passed up to the node"},
			{BridgeDropped, "balanced to this pod itself and dropped by the bridge"},
			{BridgeDroppedEarly, "dropped before the bridge decided where they go (in the IP prerouting hooks br_netfilter runs: a firewall rule, not the hairpin)"},
			{BridgeLost, "balanced to another endpoint and sent to no port"},
			{BridgeUnseen, "never seen entering from " + d.r.Client.Interface},
		} {
			if n := bridge[k.v]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, k.what))
			}
		}
		ev = append(ev, "bridge trace: "+strings.Join(parts, "; "))
	} else {
		ev = append(ev, "bridge not traced")
	}
	return ev
}

func percent(f float64) string {
	return fmt.Sprintf("%.0f%%", f*100)
}

// expected says how many connections a share of the balancing predicts.
func expected(share float64) string {
	switch {
	case share >= 0.999:
		return "all of them"
	case share <= 0:
		return "none"
	}
	n := 1 / share
	if r := math.Round(n); math.Abs(n-r) < 0.05 {
		return fmt.Sprintf("≈ 1 in %.0f", r)
	}
	return "≈ " + percent(share)
}
