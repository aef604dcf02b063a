package probe_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
	"github.com/hairpinctl/hairpinctl/netops/probe"
)

func open(t *testing.T, l *lab.Lab) *netops.Client {
	t.Helper()
	c, err := netops.Open(l.Node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// noProbeTable fails t when a probe table is left in the node.
func noProbeTable(t *testing.T, l *lab.Lab) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", l.Node, "nft", "list", "tables", "bridge").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	if strings.Contains(string(out), "hairpinctl-probe") {
		t.Errorf("probe table left behind:\n%s", out)
	}
}

func finding(r *probe.Report, id string) *probe.Finding {
	for i := range r.Findings {
		if r.Findings[i].ID == id {
			return &r.Findings[i]
		}
	}
	return nil
}

// The pod is the Service's only endpoint and its port has hairpin off:
// every connection is balanced to itself and the bridge drops it; the
// trace shows each drop; --fix turns hairpin on and then all succeed.
func TestProbeOnlyEndpointHairpinOff(t *testing.T) {
	l := labtest.New(t, lab.Options{Pods: 2, Endpoints: []int{1}})
	c := open(t, l)
	self := l.Pod(1)
	o := probe.Options{Pod: self.HostVeth, Service: l.ServiceName, Count: 20, Timeout: 500 * time.Millisecond}
	res, err := probe.RunFix(context.Background(), c, o)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Before
	if r.Results[probe.ResultTimedOut] != 20 {
		t.Fatalf("hairpin off, only endpoint: results %v, want 20 timed out", r.Results)
	}
	f := finding(r, probe.FindingHairpinOff)
	if f == nil || f.Connections != 20 || !strings.Contains(f.Finding, self.HostVeth) {
		t.Fatalf("findings %+v: want hairpin-off naming %s for 20 connections", r.Findings, self.HostVeth)
	}
	if !r.Facts.Traced {
		t.Fatalf("bridge not traced: %s", r.Facts.TraceError)
	}
	for _, cn := range r.Connections {
		if cn.Bridge != probe.BridgeDropped || cn.Conntrack {
			t.Errorf("connection from port %d: bridge %q, conntrack %v; want dropped, no entry", cn.SrcPort, cn.Bridge, cn.Conntrack)
		}
	}
	if res.Applied == "" || res.After == nil {
		t.Fatalf("fix not applied: %+v", res)
	}
	a := res.After
	if a.Results[probe.ResultSucceeded] != 20 || !a.OK || len(a.Findings) != 0 {
		t.Fatalf("after the fix: results %v, findings %+v; want 20 succeeded", a.Results, a.Findings)
	}
	want := fmt.Sprintf("%s:%d", self.IP, 8080)
	for _, cn := range a.Connections {
		if cn.Endpoint != want || !cn.SNAT || cn.Bridge != probe.BridgeForwarded || cn.OutPort != self.HostVeth {
			t.Errorf("after the fix, port %d: endpoint %q snat %v bridge %q out %q; want %s, masqueraded, forwarded back out %s",
				cn.SrcPort, cn.Endpoint, cn.SNAT, cn.Bridge, cn.OutPort, want, self.HostVeth)
		}
	}
	noProbeTable(t, l)
}
