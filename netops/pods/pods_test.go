package pods

import (
	"encoding/json"
	"net"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/libcni"
	types020 "github.com/containernetworking/cni/pkg/types/020"
)

// A single-plugin network of spec 0.2.0 (before interfaces) gets a
// result with ip4 only; the CNI library converts it, and the pod is
// named by its IP once the netns is confirmed, never by the IP alone.
func TestParseEntrySpec020(t *testing.T) {
	_, ipn, _ := net.ParseCIDR("10.244.0.7/24")
	ipn.IP = net.ParseIP("10.244.0.7").To4()
	res, err := json.Marshal(&types020.Result{CNIVersion: "0.2.0", IP4: &types020.IPConfig{IP: *ipn}})
	if err != nil {
		t.Fatal(err)
	}
	// libcni's envelope (its unexported cachedInfo) around it.
	data, err := json.Marshal(map[string]any{
		"kind": libcni.CNICacheV1, "containerId": "c0ffee", "ifName": "eth0", "networkName": "old",
		"netns":   "/run/netns/old-pod",
		"cniArgs": [][2]string{{"K8S_POD_NAMESPACE", "kube-system"}, {"K8S_POD_NAME", "dns-0"}, {"K8S_POD_UID", "u1"}},
		"result":  json.RawMessage(res),
	})
	if err != nil {
		t.Fatal(err)
	}
	e, err := parseEntry(data)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cache{byHost: map[string][]*entry{}, byIP: map[netip.Addr][]*entry{}}
	c.add(e)
	port := Port{Name: "vethx", MAC: "02:00:00:00:00:01", IPs: []string{"10.244.0.7"}}
	if p := c.Lookup(port, func(string) bool { return false }); p != nil {
		t.Errorf("named by the IP alone: %+v", p)
	}
	want := Pod{Namespace: "kube-system", Name: "dns-0", UID: "u1", ContainerID: "c0ffee", Network: "old", Interface: "eth0", Source: SourceCache}
	p := c.Lookup(port, func(path string) bool { return path == "/run/netns/old-pod" })
	if p == nil || *p != want {
		t.Errorf("Lookup = %+v, want %+v", p, want)
	}
}

func TestParseEntryNotCache(t *testing.T) {
	for _, in := range []string{`{"cniVersion":"0.4.0","ips":[]}`, `{"kind":"cniCacheV1","containerId":"","ifName":"eth0"}`, `{"kind":`} {
		if _, err := parseEntry([]byte(in)); err == nil {
			t.Errorf("parseEntry(%s) accepted", in)
		}
	}
}
