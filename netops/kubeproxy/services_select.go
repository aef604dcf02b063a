package kubeproxy

import (
	"cmp"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops"
)

// ParseServiceArg reads one positional filter of `hairpinctl services`
// and `hairpinctl doctor`: an IP address (a ClusterIP, external or
// load-balancer IP), IP:PORT ([IPv6]:PORT), NS/NAME or NS/NAME:PORT, PORT
// being the port's name or number. It returns the normalised selector as
// ip (the address forms) or name; a malformed one is ErrInvalid.
func ParseServiceArg(arg string) (ip, name string, err error) {
	a, err := NewServiceArg(arg)
	if err != nil {
		return "", "", err
	}
	if a.addr.IsValid() {
		return a.arg, "", nil
	}
	return "", a.arg, nil
}

// ValidateServiceSelector reports whether s can select a Service, as
// ParseServiceArg reads it.
func ValidateServiceSelector(s string) error {
	_, err := NewServiceArg(s)
	return err
}

// ServiceArg is one selector, as services and doctor take it: by address
// (addr valid) or by ns/name, and by port (name or number; "" = any).
type ServiceArg struct {
	// arg is the selector, normalised, as reported when it matches nothing.
	arg      string
	addr     netip.Addr
	ns, name string
	port     string
}

// NewServiceArg reads IP, IP:PORT, [IPv6]:PORT, NS/NAME or NS/NAME:PORT.
// A bare IPv6 address is an address even when it ends in ":digits"
// ("::1:80"): a port needs the brackets, as in a URL.
func NewServiceArg(arg string) (ServiceArg, error) {
	if strings.Contains(arg, "/") {
		ns, name, port, err := splitServiceName(arg)
		if err != nil {
			return ServiceArg{}, err
		}
		return ServiceArg{arg: arg, ns: ns, name: name, port: port}, nil
	}
	bad := netops.Errorf(netops.ErrInvalid, "%q is neither an IP address, IP:PORT, NS/NAME nor NS/NAME:PORT", arg)
	host, port := strings.TrimSuffix(strings.TrimPrefix(arg, "["), "]"), ""
	if _, err := netip.ParseAddr(host); err != nil || strings.HasPrefix(arg, "[") != strings.HasSuffix(arg, "]") {
		h, p, err := net.SplitHostPort(arg)
		if err != nil {
			return ServiceArg{}, bad
		}
		if !isPortName(p) {
			return ServiceArg{}, netops.Errorf(netops.ErrInvalid, "%q: the port must be a port name (a-z, 0-9, '-', up to 15) or a number from 1 to 65535", arg)
		}
		host, port = h, p
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return ServiceArg{}, bad
	}
	a = a.Unmap()
	norm := a.String()
	if port != "" {
		norm = net.JoinHostPort(norm, port)
	}
	return ServiceArg{arg: norm, addr: a, port: port}, nil
}

// Matches reports whether svc is selected: by any of its addresses or by
// its namespace and name, and then by its port's name or number.
func (a *ServiceArg) Matches(svc *Service) bool {
	if a.addr.IsValid() {
		if !addrIs(svc.ClusterIP, a.addr) && !anyAddrIs(svc.ExternalIPs, a.addr) && !anyAddrIs(svc.LoadBalancerIPs, a.addr) {
			return false
		}
	} else if svc.Namespace != a.ns || svc.Name != a.name {
		return false
	}
	return a.port == "" || a.port == svc.PortName || a.port == strconv.Itoa(svc.Port)
}

// splitServiceName validates "ns/name" or "ns/name:port" the way the API
// server does: DNS labels for namespace and name, an IANA service name or
// a number for the port.
func splitServiceName(s string) (ns, name, port string, err error) {
	bad := func(why string) error {
		return netops.Errorf(netops.ErrInvalid, "service name %q: %s (want NS/NAME or NS/NAME:PORT)", s, why)
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
	// ips are the addresses of the address selectors, for the lookups
	// that narrow a read by address before selecting.
	ips     []netip.Addr
	args    []ServiceArg
	hasName bool
	matched map[string]bool
}

// newServiceSelector validates the filters (each list may hold any form
// ParseServiceArg reads); nil selects everything.
func newServiceSelector(ips, names []string) (*serviceSelector, error) {
	if len(ips) == 0 && len(names) == 0 {
		return nil, nil
	}
	s := &serviceSelector{matched: make(map[string]bool)}
	for _, v := range append(append([]string(nil), ips...), names...) {
		a, err := NewServiceArg(v)
		if err != nil {
			return nil, err
		}
		if a.addr.IsValid() {
			s.ips = append(s.ips, a.addr)
		} else {
			s.hasName = true
		}
		s.args = append(s.args, a)
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
	for i := range s.args {
		if s.args[i].Matches(svc) {
			if record {
				s.matched[s.args[i].arg] = true
			}
			hit = true
		}
	}
	return hit
}

// Unmatched lists the filters that selected nothing, in the order given.
func (s *serviceSelector) unmatched() []string {
	if s == nil {
		return nil
	}
	var out []string
	for _, a := range s.args {
		if !s.matched[a.arg] {
			out = append(out, a.arg)
		}
	}
	return out
}

// addrOnly reports whether the filter selects by address alone (a port
// may narrow it further).
func (s *serviceSelector) addrOnly() bool { return s != nil && !s.hasName }

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
func addServices(res *Result, svcs []Service, sorted bool) {
	switch {
	case len(res.Services) == 0 && sorted:
		res.Services = svcs
	case len(res.Services) == 0:
		res.Services = sortServices(svcs)
	default:
		res.Services = sortServices(append(res.Services, svcs...))
	}
}
