package exporter

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// WriteText writes what client_golang's registry writes for the same
// series, byte for byte: families and series in the same order, the same
// escapes and number spelling. client_golang is the reference here and is
// linked into this test only.
func TestWriteTextMatchesClientGolang(t *testing.T) {
	type sample struct {
		lv []string
		v  float64
	}
	cases := []struct {
		name, help, kind string
		labels           []string
		samples          []sample
	}{
		{"b_ports", "Ports by \\bridge\nand state.", gauge, []string{"bridge", "hairpin"}, []sample{
			{[]string{"cni0", "on"}, 3}, {[]string{"cni0", "off"}, 0}, {[]string{"br\"x\\\n", "on"}, 1},
			{[]string{"a", "off"}, -1}, {[]string{"a", "on"}, 1765000000.5},
		}},
		{"a_total", "Counted.", counter, []string{"cause"}, []sample{
			{[]string{"z"}, 2}, {[]string{"m"}, 1e-9}, {[]string{""}, 123456789012},
		}},
		{"c_up", "Up.", gauge, nil, []sample{{nil, 1}}},
		{"d_odd", "Odd values.", gauge, []string{"k"}, []sample{
			{[]string{"inf"}, math.Inf(1)}, {[]string{"neginf"}, math.Inf(-1)}, {[]string{"nan"}, math.NaN()},
		}},
		{"e_empty", "No series.", gauge, []string{"k"}, nil},
	}
	reg := prometheus.NewRegistry()
	var fams []Family
	for _, c := range cases {
		v := newVec(c.name, c.help, c.kind, c.labels...)
		if c.kind == counter {
			cv := prometheus.NewCounterVec(prometheus.CounterOpts{Name: c.name, Help: c.help}, c.labels)
			reg.MustRegister(cv)
			for _, s := range c.samples {
				cv.WithLabelValues(s.lv...).Add(s.v)
				v.Add(s.v, s.lv...)
			}
		} else {
			gv := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: c.name, Help: c.help}, c.labels)
			reg.MustRegister(gv)
			for _, s := range c.samples {
				gv.WithLabelValues(s.lv...).Set(s.v)
				v.Set(s.v, s.lv...)
			}
		}
		fams = append(fams, v.Family())
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var want, got bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&want, mf); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteText(&got, fams); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Errorf("WriteText:\n%s\nclient_golang:\n%s", got.String(), want.String())
	}
	if !strings.Contains(got.String(), `b_ports{bridge="br\"x\\\n",hairpin="on"} 1`) {
		t.Errorf("label value not escaped:\n%s", got.String())
	}
}

// A scrape of the watcher's endpoint parses as the text format, with the
// process series Prometheus dashboards expect.
func TestWatchScrapeParses(t *testing.T) {
	w := NewWatch("v1", func() ([]string, []bridgeports.Port, error) { return nil, nil, nil }, false)
	_, body := get(t, w.Handler(), "/metrics")
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "process_resident_memory_bytes",
		"process_start_time_seconds", "process_open_fds", "hairpinctl_up", "hairpinctl_watch_ready"} {
		if fams[name] == nil {
			t.Errorf("no %s in /metrics:\n%s", name, body)
		}
	}
	if rss := fams["process_resident_memory_bytes"].GetMetric()[0].GetGauge().GetValue(); rss < 1<<20 {
		t.Errorf("process_resident_memory_bytes %v: less than 1 MiB", rss)
	}
}
