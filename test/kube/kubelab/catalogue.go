package kubelab

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// RemoteNode is the node the catalogue's remote endpoints claim to be on.
const RemoteNode = "kubelab-node-2"

// Catalogue is the Services and EndpointSlices the lab created.
type Catalogue struct {
	Services []*corev1.Service
	Slices   []*discoveryv1.EndpointSlice
}

// ep is one endpoint of the catalogue: a pod of the lab (pod > 0) or an
// address on the remote node (remote > 0).
type ep struct {
	pod, remote                 int
	ready, serving, terminating bool
}

func local(pod int) ep { return ep{pod: pod, ready: true, serving: true} }
func remote(n int) ep  { return ep{remote: n, ready: true, serving: true} }
func notReady(pod int) ep {
	return ep{pod: pod}
}
func terminating(pod int) ep { return ep{pod: pod, serving: true, terminating: true} }

type svcSpec struct {
	name     string
	ports    []corev1.ServicePort
	mutate   func(*corev1.Service)
	eps      []ep
	families []corev1.IPFamily // [IPv4]
	lbIP     string
}

func httpPort() []corev1.ServicePort {
	return []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(ServePort)}}
}

func nodePort(n int32) []corev1.ServicePort {
	p := httpPort()
	p[0].NodePort = n
	return p
}

// specs is every shape kube-proxy renders differently.
func specs() []svcSpec {
	bigEps := make([]ep, 0, 1000)
	for i := 1; i <= 1000; i++ {
		bigEps = append(bigEps, remote(100+i))
	}
	return []svcSpec{
		{name: "web", ports: httpPort(), eps: []ep{local(1), local(2)}},
		{name: "solo", ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(ServePort)}}, eps: []ep{local(3)}},
		{name: "trio", ports: httpPort(), eps: []ep{local(1), local(2), local(3)}},
		{name: "sticky", ports: httpPort(), eps: []ep{local(4), local(5)}, mutate: func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		}},
		{name: "np-cluster", ports: nodePort(30081), eps: []ep{local(1), remote(1)}, mutate: func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeNodePort
		}},
		{name: "np-local", ports: nodePort(30082), eps: []ep{local(2), remote(2)}, mutate: func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeNodePort
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}},
		{name: "itp-local", ports: httpPort(), eps: []ep{local(3), remote(3)}, mutate: func(s *corev1.Service) {
			l := corev1.ServiceInternalTrafficPolicyLocal
			s.Spec.InternalTrafficPolicy = &l
		}},
		{name: "ext-ip", ports: httpPort(), eps: []ep{local(4)}, mutate: func(s *corev1.Service) {
			s.Spec.ExternalIPs = []string{"10.250.0.10"}
		}},
		{name: "lb", ports: nodePort(30083), eps: []ep{local(5), remote(4)}, lbIP: "10.250.0.20", mutate: func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/24"}
		}},
		{name: "lb-local", ports: nodePort(30084), eps: []ep{local(6), remote(5)}, lbIP: "10.250.0.21", mutate: func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}},
		{name: "empty", ports: httpPort()},
		{name: "not-ready", ports: httpPort(), eps: []ep{local(1), notReady(6), terminating(2)}},
		{name: "terminating", ports: httpPort(), eps: []ep{terminating(3), notReady(4)}},
		{name: "dns", ports: []corev1.ServicePort{
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(ServePort)},
			{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(ServePort)},
		}, eps: []ep{local(5), local(6)}},
		{name: "named-target", ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString("serve")}}, eps: []ep{local(6)}},
		{name: "multi-port", ports: []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(ServePort)},
			{Name: "alt", Port: 81, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(ServePort)},
		}, eps: []ep{local(1), local(4)}},
		{name: "remote-only", ports: httpPort(), eps: []ep{remote(6), remote(7)}},
		{name: "dual", ports: httpPort(), eps: []ep{local(1), local(2)}, families: []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}},
		{name: "v6-only", ports: httpPort(), eps: []ep{local(3), remote(8)}, families: []corev1.IPFamily{corev1.IPv6Protocol}},
		// More than kube-proxy's large-cluster threshold (1000 endpoints in
		// all), where the iptables proxier stops writing comments.
		{name: "big", ports: httpPort(), eps: bigEps},
	}
}

func (e ep) addr(l *Lab, fam corev1.IPFamily) (ip, node string) {
	if e.pod > 0 {
		p := l.Pods[e.pod-1]
		if fam == corev1.IPv6Protocol {
			return p.IP6.String(), l.NodeName
		}
		return p.IP.String(), l.NodeName
	}
	if fam == corev1.IPv6Protocol {
		return fmt.Sprintf("fd00:10:244:1::%x", e.remote), RemoteNode
	}
	return fmt.Sprintf("10.244.%d.%d", 1+e.remote/250, e.remote%250+1), RemoteNode
}

// createCatalogue creates every Service and its EndpointSlices.
func createCatalogue(ctx context.Context, l *Lab) (*Catalogue, error) {
	cat := &Catalogue{}
	for _, s := range specs() {
		fams := s.families
		if len(fams) == 0 {
			fams = []corev1.IPFamily{corev1.IPv4Protocol}
		}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: "default"},
			Spec:       corev1.ServiceSpec{Ports: s.ports, Type: corev1.ServiceTypeClusterIP, IPFamilies: fams},
		}
		pol := corev1.IPFamilyPolicySingleStack
		if len(fams) == 2 {
			pol = corev1.IPFamilyPolicyRequireDualStack
		}
		svc.Spec.IPFamilyPolicy = &pol
		if s.mutate != nil {
			s.mutate(svc)
		}
		created, err := l.Client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create Service %s: %w", s.name, err)
		}
		if s.lbIP != "" {
			created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: s.lbIP}}
			if created, err = l.Client.CoreV1().Services("default").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				return nil, fmt.Errorf("status of Service %s: %w", s.name, err)
			}
		}
		cat.Services = append(cat.Services, created)
		if len(s.eps) == 0 {
			continue
		}
		for _, fam := range fams {
			for start := 0; start < len(s.eps); start += 100 {
				end := min(start+100, len(s.eps))
				sl, err := l.createSlice(ctx, created, fam, s.eps[start:end], start/100)
				if err != nil {
					return nil, err
				}
				cat.Slices = append(cat.Slices, sl)
			}
		}
	}
	return cat, nil
}

func (l *Lab) createSlice(ctx context.Context, svc *corev1.Service, fam corev1.IPFamily, eps []ep, n int) (*discoveryv1.EndpointSlice, error) {
	at := discoveryv1.AddressTypeIPv4
	if fam == corev1.IPv6Protocol {
		at = discoveryv1.AddressTypeIPv6
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s-%s-%d", svc.Name, string(at)[2:], n),
			Namespace: svc.Namespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: svc.Name,
				discoveryv1.LabelManagedBy:   "kubelab",
			},
		},
		AddressType: at,
	}
	for _, sp := range svc.Spec.Ports {
		name, proto := sp.Name, sp.Protocol
		port := int32(ServePort)
		pname := name
		if sp.TargetPort.Type == intstr.String {
			// A named targetPort resolves to the pod's container port
			// of that name: the pods serve on ServePort.
			pname = name
		}
		sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{Name: &pname, Port: &port, Protocol: &proto})
	}
	for _, e := range eps {
		ip, node := e.addr(l, fam)
		ready, serving, term := e.ready, e.serving, e.terminating
		nodeName := node
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term},
			NodeName:   &nodeName,
		})
	}
	created, err := l.Client.DiscoveryV1().EndpointSlices(svc.Namespace).Create(ctx, sl, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create EndpointSlice %s: %w", sl.Name, err)
	}
	return created, nil
}

// Truth is what a correct reading of kube-proxy's rules must find, computed
// from the API objects alone.
type Truth struct {
	Release  string `json:"release"`
	Mode     string `json:"mode"`
	NodeName string `json:"nodeName"`
	// Services is one entry per Service port and IP family.
	Services []TruthService `json:"services"`
}

// TruthService is one Service port in one IP family.
type TruthService struct {
	Namespace             string   `json:"namespace"`
	Name                  string   `json:"name"`
	PortName              string   `json:"portName"`
	Protocol              string   `json:"protocol"`
	Family                string   `json:"family"`
	ClusterIP             string   `json:"clusterIP"`
	Port                  int      `json:"port"`
	NodePort              int      `json:"nodePort,omitempty"`
	ExternalIPs           []string `json:"externalIPs,omitempty"`
	LoadBalancerIPs       []string `json:"loadBalancerIPs,omitempty"`
	SessionAffinity       bool     `json:"sessionAffinity"`
	ExternalTrafficPolicy string   `json:"externalTrafficPolicy,omitempty"`
	InternalTrafficPolicy string   `json:"internalTrafficPolicy,omitempty"`
	// Endpoints is every address the slices list for this port.
	Endpoints []TruthEndpoint `json:"endpoints"`
	// ClusterEndpoints are the "ip:port" that ClusterIP traffic is sent to,
	// by kube-proxy's rules: ready endpoints (only this node's with
	// internalTrafficPolicy Local), else serving terminating ones.
	ClusterEndpoints []string `json:"clusterEndpoints"`
	// HairpinEndpoints are the ClusterEndpoints on this node: a pod behind
	// one of them reaching the Service can be sent to itself, and that
	// connection needs the hairpin masquerade.
	HairpinEndpoints []string `json:"hairpinEndpoints"`
}

// TruthEndpoint is one endpoint address as the slice states it.
type TruthEndpoint struct {
	IP          string `json:"ip"`
	Port        int    `json:"port"`
	Ready       bool   `json:"ready"`
	Serving     bool   `json:"serving"`
	Terminating bool   `json:"terminating"`
	NodeName    string `json:"nodeName,omitempty"`
	Local       bool   `json:"local"`
}

// ComputeTruth reads every Service and EndpointSlice back from the API and
// says what kube-proxy must have programmed on node nodeName.
func ComputeTruth(ctx context.Context, l *Lab) (*Truth, error) {
	svcs, err := l.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	slices, err := l.Client.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	t := &Truth{Release: l.opts.Release, Mode: l.opts.Mode, NodeName: l.NodeName, Services: []TruthService{}}
	for _, svc := range svcs.Items {
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		for _, cip := range svc.Spec.ClusterIPs {
			fam := "ipv4"
			at := discoveryv1.AddressTypeIPv4
			if net.ParseIP(cip).To4() == nil {
				fam, at = "ipv6", discoveryv1.AddressTypeIPv6
			}
			for _, sp := range svc.Spec.Ports {
				ts := TruthService{
					Namespace: svc.Namespace, Name: svc.Name, PortName: sp.Name,
					Protocol: string(sp.Protocol), Family: fam, ClusterIP: cip, Port: int(sp.Port),
					NodePort: int(sp.NodePort), SessionAffinity: svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP,
					Endpoints: []TruthEndpoint{}, ClusterEndpoints: []string{}, HairpinEndpoints: []string{},
				}
				for _, ip := range svc.Spec.ExternalIPs {
					if (net.ParseIP(ip).To4() == nil) == (fam == "ipv6") {
						ts.ExternalIPs = append(ts.ExternalIPs, ip)
					}
				}
				for _, in := range svc.Status.LoadBalancer.Ingress {
					if in.IP != "" && (net.ParseIP(in.IP).To4() == nil) == (fam == "ipv6") {
						ts.LoadBalancerIPs = append(ts.LoadBalancerIPs, in.IP)
					}
				}
				if svc.Spec.ExternalTrafficPolicy != "" {
					ts.ExternalTrafficPolicy = string(svc.Spec.ExternalTrafficPolicy)
				}
				if svc.Spec.InternalTrafficPolicy != nil {
					ts.InternalTrafficPolicy = string(*svc.Spec.InternalTrafficPolicy)
				}
				for _, sl := range slices.Items {
					if sl.Namespace != svc.Namespace || sl.Labels[discoveryv1.LabelServiceName] != svc.Name || sl.AddressType != at {
						continue
					}
					for _, p := range sl.Ports {
						if p.Port == nil || (p.Name != nil && *p.Name != sp.Name) || (p.Name == nil && sp.Name != "") ||
							(p.Protocol != nil && *p.Protocol != sp.Protocol) {
							continue
						}
						for _, e := range sl.Endpoints {
							te := TruthEndpoint{IP: e.Addresses[0], Port: int(*p.Port),
								Ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
								Serving:     e.Conditions.Serving != nil && *e.Conditions.Serving,
								Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating}
							if e.NodeName != nil {
								te.NodeName = *e.NodeName
								te.Local = *e.NodeName == l.NodeName
							}
							if e.Conditions.Serving == nil {
								te.Serving = te.Ready
							}
							ts.Endpoints = append(ts.Endpoints, te)
						}
					}
				}
				ts.ClusterEndpoints, ts.HairpinEndpoints = clusterEndpoints(ts)
				t.Services = append(t.Services, ts)
			}
		}
	}
	sort.Slice(t.Services, func(i, j int) bool {
		a, b := t.Services[i], t.Services[j]
		if a.Namespace+"/"+a.Name != b.Namespace+"/"+b.Name {
			return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
		}
		if a.Family != b.Family {
			return a.Family < b.Family
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.Protocol < b.Protocol
	})
	return t, nil
}

// clusterEndpoints follows kube-proxy's topology.CategorizeEndpoints for
// ClusterIP traffic (no topology hints in the catalogue).
func clusterEndpoints(ts TruthService) (cluster, hairpin []string) {
	pick := func(f func(TruthEndpoint) bool) []TruthEndpoint {
		var out []TruthEndpoint
		for _, e := range ts.Endpoints {
			if ts.InternalTrafficPolicy == "Local" && !e.Local {
				continue
			}
			if f(e) {
				out = append(out, e)
			}
		}
		return out
	}
	eps := pick(func(e TruthEndpoint) bool { return e.Ready })
	if len(eps) == 0 {
		eps = pick(func(e TruthEndpoint) bool { return e.Serving && e.Terminating })
	}
	cluster, hairpin = []string{}, []string{}
	for _, e := range eps {
		hp := net.JoinHostPort(e.IP, strconv.Itoa(e.Port))
		cluster = append(cluster, hp)
		if e.Local {
			hairpin = append(hairpin, hp)
		}
	}
	sort.Strings(cluster)
	sort.Strings(hairpin)
	return cluster, hairpin
}
