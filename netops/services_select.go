package netops

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// ParseServiceArg reads one positional filter of `hairpinctl services`: an
// IP address (a ClusterIP, external or load-balancer IP) or
// NS/NAME[:PORT], PORT being the port's name or number. It returns the
// normalised IP or name; a malformed one is ErrInvalid.
func ParseServiceArg(arg string) (ip, name string, err error) {
	if !strings.Contains(arg, "/") {
		a, err := netip.ParseAddr(arg)
		if err != nil || a.Zone() != "" {
			return "", "", errorf(ErrInvalid, "%q is neither an IP address nor NS/NAME[:PORT]", arg)
		}
		return a.Unmap().String(), "", nil
	}
	if _, _, _, err := splitServiceName(arg); err != nil {
		return "", "", err
	}
	return "", arg, nil
}

// splitServiceName validates "ns/name" or "ns/name:port" the way the API
// server does: DNS labels for namespace and name, an IANA service name or
// a number for the port.
func splitServiceName(s string) (ns, name, port string, err error) {
	bad := func(why string) error {
		return errorf(ErrInvalid, "service name %q: %s (want NS/NAME or NS/NAME:PORT)", s, why)
	}
	ns, rest, _ := strings.Cut(s, "/")
	name, port, hasPort := strings.Cut(rest, ":")
	switch {
	case !isDNSLabel(ns, 63):
		return "", "", "", bad("the namespace must be a DNS label (a-z, 0-9, '-')")
	case !isDNSLabel(name, 63):
		return "", "", "", bad("the name must be a DNS label (a-z, 0-9, '-')")
	case hasPort && port == "":
		return "", "", "", bad("the port after ':' is empty")
	case hasPort && !isPortName(port):
		return "", "", "", bad("the port must be a port name (a-z, 0-9, '-', up to 15) or number")
	}
	return ns, name, port, nil
}

func isDNSLabel(s string, max int) bool {
	if s == "" || len(s) > max || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func isPortName(s string) bool {
	if n, err := strconv.Atoi(s); err == nil {
		return n > 0 && n <= 65535
	}
	return isDNSLabel(s, 15)
}

// serviceSelector applies the positional filters and remembers which
// matched something.
type serviceSelector struct {
	ips     []netip.Addr
	ipArgs  []string
	names   [][3]string // ns, name, port ("" = any port)
	nmArgs  []string
	matched map[string]bool
}

// newServiceSelector validates the filters; nil selects everything.
func newServiceSelector(ips, names []string) (*serviceSelector, error) {
	if len(ips) == 0 && len(names) == 0 {
		return nil, nil
	}
	s := &serviceSelector{matched: make(map[string]bool)}
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, errorf(ErrInvalid, "%q is not an IP address", ip)
		}
		s.ips = append(s.ips, a.Unmap())
		s.ipArgs = append(s.ipArgs, ip)
	}
	for _, n := range names {
		ns, name, port, err := splitServiceName(n)
		if err != nil {
			return nil, err
		}
		s.names = append(s.names, [3]string{ns, name, port})
		s.nmArgs = append(s.nmArgs, n)
	}
	return s, nil
}

// match reports whether svc is selected, recording which filters matched.
func (s *serviceSelector) match(svc *Service) bool { return s.test(svc, true) }

// peek is match without the record.
func (s *serviceSelector) peek(svc *Service) bool { return s.test(svc, false) }

func (s *serviceSelector) test(svc *Service, record bool) bool {
	if s == nil {
		return true
	}
	hit := false
	for i, a := range s.ips {
		if addrIs(svc.ClusterIP, a) || anyAddrIs(svc.ExternalIPs, a) || anyAddrIs(svc.LoadBalancerIPs, a) {
			if record {
				s.matched[s.ipArgs[i]] = true
			}
			hit = true
		}
	}
	for i, n := range s.names {
		if svc.Namespace != n[0] || svc.Name != n[1] {
			continue
		}
		if n[2] != "" && n[2] != svc.PortName && n[2] != strconv.Itoa(svc.Port) {
			continue
		}
		if record {
			s.matched[s.nmArgs[i]] = true
		}
		hit = true
	}
	return hit
}

// Unmatched lists the filters that selected nothing, in the order given.
func (s *serviceSelector) unmatched() []string {
	if s == nil {
		return nil
	}
	var out []string
	for _, a := range append(append([]string(nil), s.ipArgs...), s.nmArgs...) {
		if !s.matched[a] {
			out = append(out, a)
		}
	}
	return out
}

// addrOnly reports whether the filter selects by address alone.
func (s *serviceSelector) addrOnly() bool { return s != nil && len(s.names) == 0 }

func addrIs(s string, a netip.Addr) bool {
	b, err := netip.ParseAddr(s)
	return err == nil && b.Unmap() == a
}

func anyAddrIs(list []string, a netip.Addr) bool {
	for _, s := range list {
		if addrIs(s, a) {
			return true
		}
	}
	return false
}

// sortServices returns svcs in serviceOrder, moved once into a new slice.
func sortServices(svcs []Service) []Service {
	sorted := make([]Service, len(svcs))
	for i, k := range serviceOrder(len(svcs), func(i int) *Service { return &svcs[i] }) {
		sorted[i] = svcs[k]
	}
	return sorted
}

// serviceOrder returns the indexes of n services (at gives each) ordered by
// namespace, name, port name and protocol; services whose name is unknown
// (no comments) come last, by address. The keys are computed once: 10,000
// services make 140,000 comparisons. Each service's node ports are sorted
// on the way.
func serviceOrder(n int, at func(i int) *Service) []int {
	type key struct {
		unnamed bool
		addr    netip.Addr
		s       *Service
		i       int
	}
	keys := make([]key, n)
	for i := range n {
		s := at(i)
		a, _ := netip.ParseAddr(s.ClusterIP)
		keys[i] = key{unnamed: s.Name == "", addr: a, s: s, i: i}
		slices.Sort(s.NodePorts)
	}
	slices.SortFunc(keys, func(x, y key) int {
		a, b := x.s, y.s
		if x.unnamed != y.unnamed {
			if x.unnamed {
				return 1
			}
			return -1
		}
		// Compared one field at a time: cmp.Or would evaluate all of them
		// for every pair, and most pairs differ in the first or second.
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := strings.Compare(a.PortName, b.PortName); c != 0 {
			return c
		}
		if c := strings.Compare(a.Protocol, b.Protocol); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Family, b.Family); c != 0 {
			return c
		}
		if c := x.addr.Compare(y.addr); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(x.i, y.i))
	})
	order := make([]int, n)
	for i, k := range keys {
		order[i] = k.i
	}
	return order
}

// addServices adds one family's services to res and keeps res sorted; the
// first family's services are taken as they are, not copied, and not
// sorted again when they come sorted.
func addServices(res *ServicesResult, svcs []Service, sorted bool) {
	switch {
	case len(res.Services) == 0 && sorted:
		res.Services = svcs
	case len(res.Services) == 0:
		res.Services = sortServices(svcs)
	default:
		res.Services = sortServices(append(res.Services, svcs...))
	}
}
