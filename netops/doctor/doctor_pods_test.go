package doctor

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/pods"
)

// With the pods asked for, every port and endpoint a finding speaks of
// carries its pod, "pod unknown" when nothing names it, in the text and
// in the check's pods; another node's endpoint gets no pod.
func TestDoctorNamesPods(t *testing.T) {
	f := healthyFacts()
	f.podsNamed = true
	web := &pods.Pod{Namespace: "default", Name: "web-7d9f6c-x2kq", UID: "u1", ContainerID: "c1", Network: "lab", Interface: "eth0", Source: pods.SourceCache}
	ports := f.bridges[0].Ports
	ports[0].Hairpin, ports[0].Pod = false, web
	ports[1].Hairpin = false // nothing names it
	rep := diagnose(f)

	byID := map[string]Check{}
	for _, c := range rep.Checks {
		byID[c.ID] = c
	}
	bh := byID[CheckBridgeHairpin]
	if want := "2 of 3 pod ports of cni0 have hairpin off: veth1 (pod default/web-7d9f6c-x2kq), veth2 (pod unknown)"; bh.Finding != want {
		t.Errorf("bridge-hairpin finding %q, want %q", bh.Finding, want)
	}
	if len(bh.Pods) != 2 || bh.Pods[0].Port != "veth1" || bh.Pods[0].Pod == nil || *bh.Pods[0].Pod != *web || bh.Pods[1].Port != "veth2" || bh.Pods[1].Pod != nil {
		t.Errorf("bridge-hairpin pods %+v", bh.Pods)
	}

	svc := byID[CheckServices]
	const head = "default/web:http 10.96.0.10:80 → endpoint 10.244.0.11:8080 (pod default/web-7d9f6c-x2kq) sits behind veth1 on cni0 with hairpin off"
	if !strings.HasPrefix(svc.Finding, head) {
		t.Errorf("services finding %q, want it to start %q", svc.Finding, head)
	}
	details := strings.Join(svc.Details, "\n")
	if want := "endpoint 10.244.0.12:8080 (pod unknown) sits behind veth2 on cni0 with hairpin off"; !strings.Contains(details, want) {
		t.Errorf("services details lack %q:\n%s", want, details)
	}
	if len(svc.Pods) != 2 || svc.Pods[0].Endpoint != "10.244.0.11:8080" || svc.Pods[0].Pod != web || svc.Pods[1].Endpoint != "10.244.0.12:8080" || svc.Pods[1].Pod != nil {
		t.Errorf("services pods %+v", svc.Pods)
	}

	// JSON: a pod object with its source, none for the unknown one, []
	// for a check about no port.
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Checks []struct {
			ID   string
			Pods []map[string]any
		}
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for _, c := range back.Checks {
		switch c.ID {
		case CheckServices:
			p, _ := c.Pods[0]["pod"].(map[string]any)
			if _, has := c.Pods[1]["pod"]; p["name"] != "web-7d9f6c-x2kq" || p["source"] != "cache" || has {
				t.Errorf("services pods in JSON: %v", c.Pods)
			}
		case CheckIPForward:
			if c.Pods == nil || len(c.Pods) != 0 {
				t.Errorf("ip-forward pods in JSON: %v, want []", c.Pods)
			}
		}
	}

	// A named Service's check has a line per endpoint.
	f.selectors = []string{"default/web"}
	one := checkServices(f)[0]
	details = strings.Join(one.Details, "\n")
	for _, want := range []string{
		"10.244.0.11:8080 (pod default/web-7d9f6c-x2kq): masquerade rule yes; behind veth1 on cni0, hairpin off",
		"10.244.1.7:8080: masquerade rule yes; not behind a bridge port of this node",
	} {
		if !strings.Contains(details, want) {
			t.Errorf("service:default/web:http details lack %q:\n%s", want, details)
		}
	}
	if len(one.Pods) != 2 {
		t.Errorf("service:default/web:http pods %+v", one.Pods)
	}
	f.selectors = nil

	// Without the names asked for, the text is as before.
	f.podsNamed = false
	for _, c := range diagnose(f).Checks {
		if strings.Contains(c.Finding, "(pod ") || len(c.Pods) != 0 {
			t.Errorf("%s without names asked: %q %+v", c.ID, c.Finding, c.Pods)
		}
	}
}

// An endpoint of several Services is one pod in the check's pods.
func TestDoctorPodsOncePerEndpoint(t *testing.T) {
	f := healthyFacts()
	f.podsNamed = true
	other := webService()
	other.Name, other.ClusterIP = "web2", "10.96.0.11"
	f.services.Services = append(f.services.Services, other)
	var svc Check
	for _, c := range diagnose(f).Checks {
		if c.ID == CheckServices {
			svc = c
		}
	}
	if len(svc.Pods) != 2 { // 10.244.0.11 and .12 behind veth1, veth2; .7 is elsewhere
		t.Errorf("pods %+v, want the two local endpoints once", svc.Pods)
	}
}

func TestPodsByIP(t *testing.T) {
	a := &pods.Pod{Namespace: "ns", Name: "a", ContainerID: "ca"}
	b := &pods.Pod{Namespace: "ns", Name: "b", ContainerID: "cb"}
	ports := []bridgeports.Port{
		{Name: "v1", PodIPs: []string{"10.0.0.1", "fd00::1"}, Pod: a},
		{Name: "v2", PodIPs: []string{"10.0.0.2"}},         // nothing names it
		{Name: "v3", PodIPs: []string{"10.0.0.3"}, Pod: b}, // and a port of another pod claims its IP
		{Name: "v4", PodIPs: []string{"10.0.0.3"}, Pod: a},
		{Name: "v5", PodIPs: []string{"::ffff:10.0.0.5"}, Pod: b},
	}
	m := bridgeports.PodsByIP(ports)
	want := map[string]*pods.Pod{"10.0.0.1": a, "fd00::1": a, "10.0.0.5": b}
	if len(m) != len(want) {
		t.Errorf("PodsByIP = %v, want %v", m, want)
	}
	for ip, p := range want {
		if got := m[mustAddr(t, ip)]; got != p {
			t.Errorf("%s: %v, want %v", ip, got, p)
		}
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
