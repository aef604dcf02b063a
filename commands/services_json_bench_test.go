package commands

import (
	"fmt"
	"io"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
)

// tableOf returns n services of e endpoints each, shaped as a kube-proxy
// table reads back.
func tableOf(n, e int) []kubeproxy.Service {
	svcs := make([]kubeproxy.Service, n)
	for i := range svcs {
		s := &svcs[i]
		*s = kubeproxy.Service{Namespace: fmt.Sprintf("ns%d", i%100), Name: fmt.Sprintf("svc%d", i), PortName: "http",
			Protocol: "TCP", ClusterIP: fmt.Sprintf("10.96.%d.%d", i/250, i%250+1), Port: 80,
			Chain: fmt.Sprintf("KUBE-SVC-%016X", i), Backend: kubeproxy.BackendIPTablesLegacy, Family: 4}
		for j := range e {
			p := 1.0
			if j < e-1 {
				p = 1 / float64(e-j)
			}
			s.Endpoints = append(s.Endpoints, kubeproxy.Endpoint{IP: fmt.Sprintf("10.244.%d.%d", (i*e+j)/250, (i*e+j)%250+1),
				Port: 8080, Probability: p, Chain: fmt.Sprintf("KUBE-SEP-%016X", i*e+j), HairpinMasq: true, Share: 1 / float64(e)})
		}
	}
	return svcs
}

// The JSON of 10,000 services of five endpoints, as `services -o json`
// writes it after a full read.
func BenchmarkServicesJSON(b *testing.B) {
	svcs := tableOf(10000, 5)
	b.ReportAllocs()
	for b.Loop() {
		if err := writeServicesJSON(io.Discard, svcs); err != nil {
			b.Fatal(err)
		}
	}
}

// The same through encoding/json (writeJSON), which writeServicesJSON
// stands in for: it holds the whole document, then indents it.
func BenchmarkServicesEncodingJSON(b *testing.B) {
	svcs := tableOf(10000, 5)
	b.ReportAllocs()
	for b.Loop() {
		if err := writeJSON(io.Discard, svcs); err != nil {
			b.Fatal(err)
		}
	}
}
