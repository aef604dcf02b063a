package kubeproxy

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops"
)

func TestParseServiceArg(t *testing.T) {
	tests := []struct{ arg, ip, name string }{
		{"10.96.0.10", "10.96.0.10", ""},
		{"::ffff:10.96.0.10", "10.96.0.10", ""},
		{"10.96.0.10:80", "10.96.0.10:80", ""},
		{"10.96.0.10:http", "10.96.0.10:http", ""},
		{"fd00::10", "fd00::10", ""},
		{"[fd00::10]", "fd00::10", ""},
		{"[::1]:80", "[::1]:80", ""},
		{"[fd00:0::10]:dns-tcp", "[fd00::10]:dns-tcp", ""},
		{"default/web", "", "default/web"},
		{"default/web:80", "", "default/web:80"},
		{"default/web:http", "", "default/web:http"},
	}
	for _, tt := range tests {
		ip, name, err := ParseServiceArg(tt.arg)
		if err != nil || ip != tt.ip || name != tt.name {
			t.Errorf("%q: ip %q name %q err %v; want %q %q", tt.arg, ip, name, err, tt.ip, tt.name)
		}
	}
	for _, bad := range []string{"", "web", "10.96.0", "10.96.0.10:", "10.96.0.10:0", "10.96.0.10:65536", "10.96.0.10:Http",
		"[::1", "::1]", "[::1]:", "fe80::1%eth0", "default/", "default/web:", "a/b/c", "default/web:http:x"} {
		if _, _, err := ParseServiceArg(bad); !errors.Is(err, netops.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
}

// Every selector form selects the service ports it names (doctor selects
// through the same ServiceArg).
func TestServiceSelector(t *testing.T) {
	web := Service{Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP", ClusterIP: "10.96.0.10", Port: 80,
		Endpoints: []Endpoint{{IP: "10.244.0.11", Port: 8080, HairpinMasq: true}}}
	web6 := web
	web6.ClusterIP, web6.Family = "fd00::10", 6
	dns := Service{Namespace: "kube-system", Name: "kube-dns", PortName: "dns-tcp", Protocol: "TCP", ClusterIP: "10.96.0.53", Port: 53,
		ExternalIPs: []string{"192.0.2.53"}, Endpoints: []Endpoint{{IP: "10.244.0.13", Port: 53, HairpinMasq: true}}}
	metrics := dns
	metrics.PortName, metrics.Port = "metrics", 9153
	all := []Service{web, web6, dns, metrics}
	label := func(s Service) string {
		return fmt.Sprintf("%s/%s:%s@%s", s.Namespace, s.Name, s.PortName, s.ClusterIP)
	}
	tests := []struct {
		sel  string
		want []Service
	}{
		{"10.96.0.10", []Service{web}},
		{"10.96.0.10:80", []Service{web}},
		{"10.96.0.10:http", []Service{web}},
		{"10.96.0.10:81", nil},
		{"[fd00::10]:80", []Service{web6}},
		{"fd00::10", []Service{web6}},
		{"default/web:80", []Service{web, web6}},
		{"default/web:http", []Service{web, web6}},
		{"default/web", []Service{web, web6}},
		{"10.96.0.53", []Service{dns, metrics}},
		{"192.0.2.53:9153", []Service{metrics}},
		{"kube-system/kube-dns:9153", []Service{metrics}},
		{"kube-system/kube-dns:dns-tcp", []Service{dns}},
		{"kube-system/kube-dns:53", []Service{dns}},
		{"default/nope", nil},
	}
	for _, tt := range tests {
		var want []string
		for _, s := range tt.want {
			want = append(want, label(s))
		}
		ip, name, err := ParseServiceArg(tt.sel)
		if err != nil {
			t.Fatalf("%s: %v", tt.sel, err)
		}
		sel, err := newServiceSelector(slices.DeleteFunc([]string{ip}, func(s string) bool { return s == "" }), slices.DeleteFunc([]string{name}, func(s string) bool { return s == "" }))
		if err != nil {
			t.Fatalf("%s: %v", tt.sel, err)
		}
		var got []string
		for _, s := range all {
			if sel.match(&s) {
				got = append(got, label(s))
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("services %s selects %v, want %v", tt.sel, got, want)
		}
		if un := sel.unmatched(); (len(want) == 0) != (len(un) == 1) {
			t.Errorf("services %s: unmatched %v", tt.sel, un)
		}
	}
}
