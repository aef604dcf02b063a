package commands

import (
	"bytes"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/exporter"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/doctor"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The registry holds one series per bridge and hairpin state, zeros
// included, and one per check and verdict, exactly one of them 1.
func TestMetricsRegistry(t *testing.T) {
	rep := &doctor.Report{
		Checks: []doctor.Check{
			{ID: "bridge-hairpin", Status: doctor.StatusFail},
			{ID: "service:default/web:http", Status: doctor.StatusPass},
		},
		Bridges: []string{"cni0", "empty0"},
		Ports: []bridgeports.Port{
			{Bridge: "cni0", Name: "veth1", Hairpin: false},
			{Bridge: "cni0", Name: "veth2", Hairpin: true},
			{Bridge: "cni0", Name: "veth3", Hairpin: false},
		},
	}
	now := time.Unix(1765000000, 500_000_000)
	var text bytes.Buffer
	if err := writeMetrics(&text, exporter.DoctorFamilies(rep, now)); err != nil {
		t.Fatal(err)
	}
	// Legacy names: what every node_exporter accepts.
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(&text)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, text.String())
	}
	ports := series(fams["hairpinctl_bridge_ports"], "bridge", "hairpin")
	for k, want := range map[string]float64{"cni0/on": 1, "cni0/off": 2, "empty0/on": 0, "empty0/off": 0} {
		if got, ok := ports[k]; !ok || got != want {
			t.Errorf("hairpinctl_bridge_ports{%s} = %v (present %t), want %v", k, got, ok, want)
		}
	}
	if len(ports) != 4 {
		t.Errorf("ports series %v", ports)
	}
	checks := series(fams["hairpinctl_doctor_check_status"], "check", "status")
	for k, want := range map[string]float64{
		"bridge-hairpin/fail": 1, "bridge-hairpin/pass": 0, "bridge-hairpin/warn": 0, "bridge-hairpin/skip": 0,
		"service:default/web:http/pass": 1, "service:default/web:http/fail": 0,
	} {
		if got, ok := checks[k]; !ok || got != want {
			t.Errorf("hairpinctl_doctor_check_status{%s} = %v (present %t), want %v", k, got, ok, want)
		}
	}
	if len(checks) != 8 {
		t.Errorf("%d check series, want 2 checks × 4 verdicts", len(checks))
	}
	if got := fams["hairpinctl_up"].GetMetric()[0].GetGauge().GetValue(); got != 1 {
		t.Errorf("hairpinctl_up = %v, want 1", got)
	}
	if got := fams["hairpinctl_last_success_timestamp_seconds"].GetMetric()[0].GetGauge().GetValue(); got != 1765000000.5 {
		t.Errorf("hairpinctl_last_success_timestamp_seconds = %v, want 1765000000.5", got)
	}
}

// series maps "label1/label2" to each gauge's value.
func series(mf *dto.MetricFamily, l1, l2 string) map[string]float64 {
	out := map[string]float64{}
	if mf == nil {
		return out
	}
	for _, m := range mf.GetMetric() {
		var a, b string
		for _, lp := range m.GetLabel() {
			switch lp.GetName() {
			case l1:
				a = lp.GetValue()
			case l2:
				b = lp.GetValue()
			}
		}
		out[a+"/"+b] = m.GetGauge().GetValue()
	}
	return out
}
