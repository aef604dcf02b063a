package pods

import (
	"bytes"
	"encoding/json"
	"testing"
)

// realEntry is what libcni writes for a pod the bridge plugin attached
// (containerd, a bridge network with host-local IPAM).
const realEntry = `{"kind":"cniCacheV1","containerId":"5d1e8f0c0b3a4e6f9a2b7c1d0e3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5","config":"eyJjbmlWZXJzaW9uIjoiMS4wLjAiLCJuYW1lIjoiY2JyMCIsInBsdWdpbnMiOlt7ImJyaWRnZSI6ImNuaTAiLCJoYWlycGluTW9kZSI6dHJ1ZSwiaXBhbSI6eyJyYW5nZXMiOltbeyJzdWJuZXQiOiIxMC4yNDQuMC4wLzI0In1dXSwidHlwZSI6Imhvc3QtbG9jYWwifSwiaXNHYXRld2F5Ijp0cnVlLCJ0eXBlIjoiYnJpZGdlIn1dfQ==","ifName":"eth0","networkName":"cbr0","netns":"/var/run/netns/cni-2f4b6c1e-9a0d-4e3f-8b7a-6c5d4e3f2a1b","cniArgs":[["IgnoreUnknown","1"],["K8S_POD_NAMESPACE","default"],["K8S_POD_NAME","web-7d9f6c-x2kq"],["K8S_POD_INFRA_CONTAINER_ID","5d1e8f0c0b3a4e6f9a2b7c1d0e3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5"],["K8S_POD_UID","6f1c2a9e-0b7d-4c1e-9a55-3d2f8e7b1c40"]],"capabilityArgs":{"io.kubernetes.cri.pod-annotations":{"kubernetes.io/config.seen":"2026-12-06T10:00:00Z"},"portMappings":[]},"result":{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"6a:3e:1f:00:aa:01"},{"name":"vethab12cd34","mac":"d2:1c:8e:4f:90:2b"},{"name":"eth0","mac":"5e:77:21:3c:00:0c","sandbox":"/var/run/netns/cni-2f4b6c1e-9a0d-4e3f-8b7a-6c5d4e3f2a1b"}],"ips":[{"interface":2,"address":"10.244.0.12/24","gateway":"10.244.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.0.1"}],"dns":{}}}`

// The scanner reads what libcni writes as encoding/json does.
func TestScanCachedInfoRealEntry(t *testing.T) {
	var ci cachedInfo
	if !scanCachedInfo([]byte(realEntry), &ci, nil, nil) {
		t.Fatal("a real cache entry was left to encoding/json")
	}
	var want cachedInfo
	if err := json.Unmarshal([]byte(realEntry), &want); err != nil {
		t.Fatal(err)
	}
	if !sameCachedInfo(&ci, &want) {
		t.Errorf("scanned %+v, want %+v", ci, want)
	}
	e, err := parseEntry([]byte(realEntry))
	if err != nil {
		t.Fatal(err)
	}
	if e.pod.Name != "web-7d9f6c-x2kq" || e.pod.Namespace != "default" || len(e.hosts) != 2 || e.hosts[1].name != "vethab12cd34" || len(e.ips) != 1 || e.ips[0].String() != "10.244.0.12" {
		t.Errorf("entry %+v", e)
	}
}

// What the scanner does not handle as encoding/json would, it leaves to
// encoding/json.
func TestScanCachedInfoDeclines(t *testing.T) {
	for _, in := range []string{
		`{"kind":"cniCacheV1","Kind":"x"}`,                         // a key twice, folded
		`{"kind":"cniCacheV1","KIND":"x"}`,                         // another case of a wanted key
		`{"\u006bind":"cniCacheV1"}`,                               // an escaped key
		"{\"\u212aind\":\"cniCacheV1\"}",                           // a key encoding/json folds with Unicode
		`{"kind":"cni\u0043acheV1"}`,                               // an escaped value
		`{"kind":5}`,                                               // another type
		`{"cniArgs":[["a","b","c"]]}`,                              // not a pair
		`{"result":{"ips":[{"interface":1.0}]}}`,                   // not an int
		`{"result":{"interfaces":[null]}}`,                         // null element
		`{"kind":"cniCacheV1"} x`,                                  // trailing text
		`{"kind":"cniCacheV1",}`,                                   // malformed
		"{\"kind\":\"\xff\"}",                                      // invalid UTF-8
		`{"result":{"interfaces":[{"name":"a"}],"interfaces":[]}}`, // a repeated array
	} {
		var ci cachedInfo
		if scanCachedInfo([]byte(in), &ci, nil, nil) {
			t.Errorf("scanned %s: %+v", in, ci)
		}
	}
}

// sameCachedInfo compares as the callers read: nil and empty lists alike.
func sameCachedInfo(a, b *cachedInfo) bool {
	if a.Kind != b.Kind || a.ContainerID != b.ContainerID || a.IfName != b.IfName || a.NetworkName != b.NetworkName || a.NetNS != b.NetNS || len(a.CniArgs) != len(b.CniArgs) {
		return false
	}
	for i := range a.CniArgs {
		if !bytes.Equal(a.CniArgs[i][0], b.CniArgs[i][0]) || !bytes.Equal(a.CniArgs[i][1], b.CniArgs[i][1]) {
			return false
		}
	}
	if (a.Result == nil) != (b.Result == nil) {
		return false
	}
	if a.Result == nil {
		return true
	}
	ra, rb := a.Result, b.Result
	if ra.CNIVersion != rb.CNIVersion || len(ra.Interfaces) != len(rb.Interfaces) || len(ra.IPs) != len(rb.IPs) {
		return false
	}
	for i := range ra.Interfaces {
		x, y := ra.Interfaces[i], rb.Interfaces[i]
		if x.Name != y.Name || x.Mac != y.Mac || x.Sandbox != y.Sandbox {
			return false
		}
	}
	for i := range ra.IPs {
		x, y := ra.IPs[i], rb.IPs[i]
		if x.Address != y.Address || (x.Interface == nil) != (y.Interface == nil) || (x.Interface != nil && *x.Interface != *y.Interface) {
			return false
		}
	}
	return true
}

// Whatever the scanner takes, encoding/json takes too, and reads the
// same: the fast path never names a pod the schema's decoder would not.
func FuzzScanCachedInfo(f *testing.F) {
	f.Add([]byte(realEntry))
	f.Add([]byte(`{"kind":"cniCacheV1","containerId":"c","ifName":"eth0","cniArgs":null,"result":null}`))
	f.Add([]byte(`{"kind":"cniCacheV1","result":{"cniVersion":"0.4.0","interfaces":[{"name":"v","mtu":1500,"socketPath":"","pciID":""}],"ips":[{"version":"4","interface":0,"address":"10.0.0.2/24"}]}}`))
	f.Add([]byte(`{"kind":"cniCacheV1","result":{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}}`))
	f.Add([]byte(` {"a":[1,-2.5e+3,true,false,null,{"b":"\u00e9\n"}],"kind":"k"} `))
	// Fields read only for their types: encoding/json rejects a wrong one.
	f.Add([]byte(`{"result":{"interfaces":[{"mtu":1500,"socketPath":null,"pciID":"0000:00:01.0"}]}}`))
	f.Add([]byte(`{"result":{"interfaces":[{"mtu":1.5}]}}`))
	f.Add([]byte(`{"result":{"interfaces":[{"socketPath":1}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var got cachedInfo
		if !scanCachedInfo(data, &got, nil, map[string]string{}) {
			return
		}
		var want cachedInfo
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatalf("scanned what encoding/json rejects (%v): %q", err, data)
		}
		if !sameCachedInfo(&got, &want) {
			t.Fatalf("scanned %+v, encoding/json %+v: %q", got, want, data)
		}
	})
}
