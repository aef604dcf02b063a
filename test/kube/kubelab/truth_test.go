package kubelab

import (
	"slices"
	"testing"
)

// The truth follows kube-proxy's topology rules for ClusterIP traffic:
// ready endpoints; only this node's with internalTrafficPolicy Local;
// serving terminating ones when none is ready; the hairpin set is the
// chosen ones on this node.
func TestClusterEndpoints(t *testing.T) {
	ep := func(ip string, ready, serving, term, local bool) TruthEndpoint {
		return TruthEndpoint{IP: ip, Port: 8080, Ready: ready, Serving: serving, Terminating: term, Local: local}
	}
	for _, tt := range []struct {
		name             string
		itp              string
		eps              []TruthEndpoint
		cluster, hairpin []string
	}{
		{"ready only", "", []TruthEndpoint{ep("10.0.0.1", true, true, false, true), ep("10.0.0.2", false, false, false, true), ep("10.0.1.1", true, true, false, false)},
			[]string{"10.0.0.1:8080", "10.0.1.1:8080"}, []string{"10.0.0.1:8080"}},
		{"terminating when none ready", "", []TruthEndpoint{ep("10.0.0.3", false, true, true, true), ep("10.0.0.4", false, false, true, true)},
			[]string{"10.0.0.3:8080"}, []string{"10.0.0.3:8080"}},
		{"terminating ignored beside a ready one", "", []TruthEndpoint{ep("10.0.0.3", false, true, true, true), ep("10.0.1.5", true, true, false, false)},
			[]string{"10.0.1.5:8080"}, []string{}},
		{"internalTrafficPolicy Local", "Local", []TruthEndpoint{ep("10.0.0.1", true, true, false, true), ep("10.0.1.1", true, true, false, false)},
			[]string{"10.0.0.1:8080"}, []string{"10.0.0.1:8080"}},
		{"Local without a local endpoint", "Local", []TruthEndpoint{ep("10.0.1.1", true, true, false, false)},
			[]string{}, []string{}},
		{"IPv6", "", []TruthEndpoint{ep("fd00::2", true, true, false, true)}, []string{"[fd00::2]:8080"}, []string{"[fd00::2]:8080"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, h := clusterEndpoints(TruthService{InternalTrafficPolicy: tt.itp, Endpoints: tt.eps})
			if !slices.Equal(c, tt.cluster) || !slices.Equal(h, tt.hairpin) {
				t.Errorf("cluster %v hairpin %v, want %v %v", c, h, tt.cluster, tt.hairpin)
			}
		})
	}
}
