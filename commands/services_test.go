package commands

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
)

// fill sets every field of v (a pointer to a struct) to a value derived
// from r, so that a field added to kubeproxy.Service later shows up here.
func fill(t *testing.T, v reflect.Value, r *rand.Rand, zeroes bool) {
	t.Helper()
	strs := []string{"ns1", "", `quote " back \ slash`, "<html>&", "tab\tnl\n", "ünïcode ✓", "\u2028\u2029", string([]byte{0xff, 'x'}), "fd00:10:96::41", "KUBE-SVC-XPGD46QRK7WJZT7O"}
	floats := []float64{0, 1, 0.5, 0.33333333349, 0.2, 1e-7, 0.999999}
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if !f.CanSet() {
			continue
		}
		if zeroes && r.IntN(3) == 0 {
			continue
		}
		switch f.Kind() {
		case reflect.String:
			f.SetString(strs[r.IntN(len(strs))])
		case reflect.Int:
			f.SetInt(int64(r.IntN(70000)))
		case reflect.Float64:
			f.SetFloat(floats[r.IntN(len(floats))])
		case reflect.Bool:
			f.SetBool(r.IntN(2) == 0)
		case reflect.Pointer:
			if f.Type().Elem().Kind() == reflect.Struct {
				if zeroes && r.IntN(2) == 0 {
					continue
				}
				e := reflect.New(f.Type().Elem())
				fill(t, e.Elem(), r, zeroes)
				f.Set(e)
				continue
			}
			if f.Type().Elem().Kind() != reflect.Bool {
				t.Fatalf("fill: pointer to %s", f.Type().Elem().Kind())
			}
			b := r.IntN(2) == 0
			f.Set(reflect.ValueOf(&b))
		case reflect.Slice:
			n := r.IntN(4)
			if zeroes && r.IntN(2) == 0 {
				n = 0
			}
			s := reflect.MakeSlice(f.Type(), n, n)
			for j := 0; j < n; j++ {
				e := s.Index(j)
				switch e.Kind() {
				case reflect.String:
					e.SetString(strs[r.IntN(len(strs))])
				case reflect.Int:
					e.SetInt(int64(r.IntN(65536)))
				case reflect.Struct:
					fill(t, e, r, zeroes)
				default:
					t.Fatalf("fill: slice of %s", e.Kind())
				}
			}
			f.Set(s)
		default:
			t.Fatalf("fill: field %s of kind %s: teach fill and appendServiceJSON about it", v.Type().Field(i).Name, f.Kind())
		}
	}
}

// The services encoder must print exactly what encoding/json prints,
// whatever the field values.
func TestServicesJSONMatchesEncodingJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 1200} {
		svcs := make([]kubeproxy.Service, n)
		for i := range svcs {
			fill(t, reflect.ValueOf(&svcs[i]).Elem(), r, i%2 == 1)
		}
		var want, got bytes.Buffer
		if err := writeJSON(&want, svcs); err != nil {
			t.Fatal(err)
		}
		if err := writeServicesJSON(&got, svcs); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			g, w := strings.Split(got.String(), "\n"), strings.Split(want.String(), "\n")
			for i := range min(len(g), len(w)) {
				if g[i] != w[i] {
					t.Fatalf("%d services: line %d differs:\n got %q\nwant %q", n, i+1, g[i], w[i])
				}
			}
			t.Fatalf("%d services: %d lines, want %d", n, len(g), len(w))
		}
	}
	// A service with every field set: nothing may be left out.
	var s kubeproxy.Service
	fill(t, reflect.ValueOf(&s).Elem(), rand.New(rand.NewPCG(3, 4)), false)
	s.NoEndpoints, s.LocalPolicy = true, true
	var want, got bytes.Buffer
	_ = writeJSON(&want, []kubeproxy.Service{s})
	_ = writeServicesJSON(&got, []kubeproxy.Service{s})
	if got.String() != want.String() {
		t.Fatalf("full service:\n got %s\nwant %s", got.String(), want.String())
	}
}

func TestServicesTable(t *testing.T) {
	svcs := []kubeproxy.Service{
		{Namespace: "default", Name: "web", PortName: "http", Protocol: "TCP", ClusterIP: "10.96.0.10", Port: 80,
			NodePorts: []int{30080}, ExternalIPs: []string{"192.168.99.1"}, LoadBalancerIPs: []string{"1.2.3.4"}, LocalPolicy: true,
			SessionAffinitySeconds: 10800,
			Endpoints: []kubeproxy.Endpoint{
				// iptables' conditional probabilities 1/3 then 1: shares 1/3 and 2/3.
				{IP: "10.244.0.11", Port: 8080, Probability: 0.33333333349, Share: 0.3333, HairpinMasq: true, SessionAffinity: true},
				{IP: "10.244.0.12", Port: 8080, Probability: 1, Share: 0.6667},
			}},
		{Namespace: "ns6", Name: "svc6", PortName: "p80", Protocol: "TCP", ClusterIP: "fd00:10:96::46", Port: 80, NoEndpoints: true, Endpoints: []kubeproxy.Endpoint{}},
		{Chain: "KUBE-SVC-XPGD46QRK7WJZT7O", Protocol: "UDP", ClusterIP: "10.96.0.11", Port: 53,
			Endpoints: []kubeproxy.Endpoint{{Probability: 1, Share: 1}}},
	}
	var b bytes.Buffer
	if err := printServicesTable(&b, svcs); err != nil {
		t.Fatal(err)
	}
	want := `SERVICE           ADDRESS                  SHARE   HAIRPIN-MASQ  AFFINITY
default/web:http  10.96.0.10:80/TCP                              10800s
  node port       *:30080/TCP
  external IP     192.168.99.1:80/TCP
  load balancer   1.2.3.4:80/TCP
  traffic policy  Local
  endpoint        10.244.0.11:8080         0.3333  yes           yes
  endpoint        10.244.0.12:8080         0.6667  no            -
ns6/svc6:p80      [fd00:10:96::46]:80/TCP                        -
  no endpoints    kube-proxy rejects it
(unnamed)         10.96.0.11:53/UDP                              -
  endpoint        ?                        1       no            -
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	for _, l := range strings.Split(b.String(), "\n") {
		if len(l) > 80 {
			t.Errorf("line over 80 columns: %q", l)
		}
	}
}
