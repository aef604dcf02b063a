package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/vishvananda/netlink"
)

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// scrape reads /metrics the way Prometheus does and parses it.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: HTTP %d, %v:\n%s", resp.StatusCode, err, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, b)
	}
	return fams
}

// value is the value of the series of name with exactly labels (label
// pairs "k", "v", ...); ok is false when there is no such series.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf := fams[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		for _, lp := range m.GetLabel() {
			found := false
			for i := 0; i < len(labels); i += 2 {
				if labels[i] == lp.GetName() && labels[i+1] == lp.GetValue() {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// waitMetric scrapes until the series reads want.
func waitMetric(t *testing.T, p *proc, addr string, want float64, name string, labels ...string) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		fams := scrape(t, addr)
		got, ok := value(fams, name, labels...)
		if ok && got == want {
			return fams
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v (present %v), want %v; stdout:\n%s\nstderr:\n%s", name, labels, got, ok, want, p.stdout.String(), p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watch --metrics-listen: what a scrape reads matches the ports the test
// made and what it did to them, the doctor verdicts come with
// --doctor-every, and SIGTERM and SIGHUP stop it cleanly.
func TestE2EWatchMetrics(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 3, Restore: lab.RestoreNFTables})
	// Not a pod's port: a veth whose peer stays in the node. watch leaves
	// it off, and the metrics count only the ports watch keeps on.
	br, err := l.Handle().LinkByName("cni0")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Handle().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink0", MasterIndex: br.Attrs().Index}, PeerName: "uplink0p"}); err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"veth1", "veth2", "veth3"} {
		if hairpinOf(t, l, port) {
			t.Fatalf("%s starts with hairpin on", port)
		}
	}
	addr := freeAddr(t)
	ready := filepath.Join(t.TempDir(), "ready")
	p := startBin(t, nil, nil, bin, "watch", "--bridge", "cni0", "--netns", l.Node, "--ready-file", ready, "-o", "json",
		"--metrics-listen", addr, "--resync", "1s", "--doctor-every", "10s", "--cni-conf-dir", t.TempDir())
	waitFile(t, p, ready)

	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz once ready: %v %v", resp, err)
	}
	resp.Body.Close()

	fams := scrape(t, addr)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"hairpinctl_bridge_ports", []string{"bridge", "cni0", "hairpin", "on"}, 3},
		{"hairpinctl_bridge_ports", []string{"bridge", "cni0", "hairpin", "off"}, 0},
		{"hairpinctl_watch_fixes_total", []string{"bridge", "cni0", "cause", "start"}, 3},
		{"hairpinctl_watch_ready", nil, 1},
		{"hairpinctl_up", nil, 1},
		{"hairpinctl_watch_resyncs_total", []string{"cause", "overflow"}, 0},
		{"hairpinctl_watch_failures_total", []string{"bridge", "cni0"}, 0},
	} {
		got, ok := value(fams, c.name, c.labels...)
		if c.name == "hairpinctl_watch_failures_total" {
			if ok {
				t.Errorf("%s%v = %v: no attempt failed", c.name, c.labels, got)
			}
			continue
		}
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := value(fams, "hairpinctl_build_info", "version", "dev"); !ok {
		t.Errorf("no hairpinctl_build_info{version=\"dev\"}")
	}

	// A pod's port joins; another is turned off behind watch's back.
	if err := l.Handle().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vnew", MasterIndex: br.Attrs().Index}, PeerName: "vnewp", PeerNamespace: netlink.NsFd(int(l.Pod(1).Ns))}); err != nil {
		t.Fatal(err)
	}
	waitHairpin(t, l, "vnew", true)
	v2, _ := l.Handle().LinkByName("veth2")
	if err := l.Handle().LinkSetHairpin(v2, false); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, p, addr, 1, "hairpinctl_watch_fixes_total", "bridge", "cni0", "cause", "joined")
	waitMetric(t, p, addr, 1, "hairpinctl_watch_fixes_total", "bridge", "cni0", "cause", "turned-off")
	fams = waitMetric(t, p, addr, 4, "hairpinctl_bridge_ports", "bridge", "cni0", "hairpin", "on")
	if got, _ := value(fams, "hairpinctl_bridge_ports", "bridge", "cni0", "hairpin", "off"); got != 0 {
		t.Errorf("ports off = %v, want 0 (uplink0 is not a pod's port)", got)
	}
	if hairpinOf(t, l, "uplink0") {
		t.Error("watch turned hairpin on for uplink0, not a pod's port")
	}
	// --resync 1s: periodic re-lists are counted.
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, _ := value(scrape(t, addr), "hairpinctl_watch_resyncs_total", "cause", "periodic")
		if got >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no periodic resync counted in 20s with --resync 1s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The doctor's verdicts: every port is on, so bridge-hairpin passes;
	// each check has exactly one verdict.
	fams = waitMetric(t, p, addr, 1, "hairpinctl_doctor_check_status", "check", "bridge-hairpin", "status", "pass")
	perCheck := map[string]float64{}
	for _, m := range fams["hairpinctl_doctor_check_status"].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "check" {
				perCheck[lp.GetValue()] += m.GetGauge().GetValue()
			}
		}
	}
	if _, ok := perCheck["kube-proxy"]; !ok {
		t.Errorf("no kube-proxy check among %v", perCheck)
	}
	for c, n := range perCheck {
		if n != 1 {
			t.Errorf("check %s has %v verdicts set, want 1", c, n)
		}
	}
	if got, ok := value(fams, "hairpinctl_last_success_timestamp_seconds"); !ok || got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("hairpinctl_last_success_timestamp_seconds = %v (present %v)", got, ok)
	}

	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0; stderr: %s", code, p.stderr.String())
	}
	if !strings.HasSuffix(p.stdout.String(), `"kind":"stopped","cause":"SIGTERM"}`+"\n") {
		t.Errorf("no stopped line:\n%s", p.stdout.String())
	}
	if p.stderr.String() != "" {
		t.Errorf("stderr: %q", p.stderr.String())
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Error("/metrics still served after exit")
	}

	// SIGHUP: the same clean stop; the address is free again at once.
	p = startBin(t, nil, nil, bin, "watch", "--bridge", "cni0", "--netns", l.Node, "--ready-file", ready, "--metrics-listen", addr)
	waitFile(t, p, ready)
	scrape(t, addr)
	if code := p.stop(t, syscall.SIGHUP); code != 0 {
		t.Errorf("exit %d after SIGHUP, want 0; stderr: %s", code, p.stderr.String())
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("%s not released after SIGHUP: %v", addr, err)
	} else {
		ln.Close()
	}
}

func TestE2EWatchMetricsBadInput(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 1, Restore: "none"})
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	w := []string{"watch", "--bridge", "cni0", "--netns", l.Node}
	tests := []badInput{
		{"doctor without metrics", nil, append(w, "--doctor-every", "1m"), 2, "--doctor-every needs --metrics-listen ADDR"},
		{"doctor too often", nil, append(w, "--metrics-listen", "127.0.0.1:0", "--doctor-every", "1s"), 2, "--doctor-every 1s is below the floor of 10s"},
		{"not host:port", nil, append(w, "--metrics-listen", "9733"), 2, "--metrics-listen 9733: want host:port"},
		{"empty", nil, append(w, "--metrics-listen", ""), 2, "--metrics-listen is empty"},
		{"no such CNI directory", nil, append(w, "--metrics-listen", "127.0.0.1:0", "--doctor-every", "1m", "--cni-conf-dir", "/nonexistent"), 2, "--cni-conf-dir /nonexistent is not a directory"},
		{"address in use", nil, append(w, "--metrics-listen", busy.Addr().String()), 1, fmt.Sprintf("watch: --metrics-listen %s: listen tcp %s: bind: address already in use", busy.Addr(), busy.Addr())},
	}
	checkBadInput(t, tests)
}
