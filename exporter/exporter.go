// Package exporter defines hairpinctl's Prometheus metrics once, for the
// two ways they leave a node: a file node_exporter reads (hairpinctl
// metrics) and an HTTP endpoint Prometheus scrapes from the long-running
// watcher (hairpinctl watch --metrics-listen). It turns netops' data into
// series and never touches the kernel itself.
package exporter

import (
	"strings"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names, stable: dashboards and alerts key on them.
const (
	// BridgePorts counts bridge ports by bridge and hairpin state.
	BridgePorts = "hairpinctl_bridge_ports"
	// DoctorCheckStatus is 1 for each check's verdict, 0 for the others.
	DoctorCheckStatus = "hairpinctl_doctor_check_status"
	// Up is 1 when every check could run.
	Up = "hairpinctl_up"
	// LastSuccess is when the doctor checks last ran to the end.
	LastSuccess = "hairpinctl_last_success_timestamp_seconds"
)

// NewBridgePorts returns the gauge of ports by bridge and hairpin state
// ("on" or "off").
func NewBridgePorts() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: BridgePorts,
		Help: "Bridge ports by bridge and hairpin mode (on reflects a pod's traffic back to it).",
	}, []string{"bridge", "hairpin"})
}

// NewDoctorCheckStatus returns the gauge of doctor verdicts by check and
// status ("pass", "warn", "fail", "skip").
func NewDoctorCheckStatus() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: DoctorCheckStatus,
		Help: "1 for the verdict of each hairpinctl doctor check, 0 for the others.",
	}, []string{"check", "status"})
}

// NewUp returns hairpinctl_up.
func NewUp() prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{
		Name: Up,
		Help: "1 when hairpinctl could run every check, 0 when it lacked the privileges to.",
	})
}

// NewLastSuccess returns hairpinctl_last_success_timestamp_seconds.
func NewLastSuccess() prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{
		Name: LastSuccess,
		Help: "Unix time of the last complete run of the hairpinctl doctor checks.",
	})
}

// SetPorts fills v with the ports of each bridge by hairpin state. Both
// series exist for every bridge in bridges, so "off" reads 0 rather than
// vanishing when all is well.
func SetPorts(v *prometheus.GaugeVec, bridges []string, ports []netops.Port) {
	for _, b := range bridges {
		v.WithLabelValues(b, "on")
		v.WithLabelValues(b, "off")
	}
	for _, p := range ports {
		state := "off"
		if p.Hairpin {
			state = "on"
		}
		v.WithLabelValues(p.Bridge, state).Inc()
	}
}

// SetChecks fills v with one series per check and verdict: 1 for the
// check's verdict, 0 for the other three.
func SetChecks(v *prometheus.GaugeVec, checks []netops.Check) {
	for _, ch := range checks {
		for _, s := range netops.CheckStatuses {
			val := 0.0
			if ch.Status == s {
				val = 1
			}
			v.WithLabelValues(ch.ID, strings.ToLower(string(s))).Set(val)
		}
	}
}

// UpRegistry holds hairpinctl_up alone.
func UpRegistry(up float64) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	g := NewUp()
	g.Set(up)
	reg.MustRegister(g)
	return reg
}

// DoctorRegistry turns a doctor report made at now into gauges on a
// registry of their own (no Go runtime metrics: node_exporter has the
// node's).
func DoctorRegistry(rep *netops.DoctorReport, now time.Time) (*prometheus.Registry, error) {
	reg := UpRegistry(1)
	last := NewLastSuccess()
	last.Set(unixSeconds(now))
	ports := NewBridgePorts()
	checks := NewDoctorCheckStatus()
	for _, col := range []prometheus.Collector{last, ports, checks} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	SetPorts(ports, rep.Bridges, rep.Ports)
	SetChecks(checks, rep.Checks)
	return reg, nil
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
