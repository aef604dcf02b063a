// Package exporter defines hairpinctl's Prometheus metrics once, for the
// two ways they leave a node: a file node_exporter reads (hairpinctl
// metrics) and an HTTP endpoint Prometheus scrapes from the long-running
// watcher (hairpinctl watch --metrics-listen). It turns netops' data into
// series and never touches the kernel itself.
//
// It writes the text exposition format itself rather than through
// prometheus/client_golang: Go runs every linked package's init for every
// command, and client_golang's (its default registry's Go and process
// collectors, procfs, and the protobuf types of client_model) was most of
// hairpinctl's start-up.
package exporter

import (
	"strings"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/doctor"
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

// newBridgePorts returns the gauge of ports by bridge and hairpin state
// ("on" or "off").
func newBridgePorts() *vec {
	return newVec(BridgePorts, "Bridge ports by bridge and hairpin mode (on reflects a pod's traffic back to it).",
		gauge, "bridge", "hairpin")
}

// newDoctorCheckStatus returns the gauge of doctor verdicts by check and
// status ("pass", "warn", "fail", "skip").
func newDoctorCheckStatus() *vec {
	return newVec(DoctorCheckStatus, "1 for the verdict of each hairpinctl doctor check, 0 for the others.",
		gauge, "check", "status")
}

// newLastSuccess returns hairpinctl_last_success_timestamp_seconds.
func newLastSuccess() *vec {
	return newVec(LastSuccess, "Unix time of the last complete run of the hairpinctl doctor checks.", gauge)
}

// setPorts fills v with the ports of each bridge by hairpin state. Both
// series exist for every bridge in bridges, so "off" reads 0 rather than
// vanishing when all is well.
func setPorts(v *vec, bridges []string, ports []bridgeports.Port) {
	for _, b := range bridges {
		v.Touch(b, "on")
		v.Touch(b, "off")
	}
	for _, p := range ports {
		state := "off"
		if p.Hairpin {
			state = "on"
		}
		v.Add(1, p.Bridge, state)
	}
}

// setChecks fills v with one series per check and verdict: 1 for the
// check's verdict, 0 for the other three.
func setChecks(v *vec, checks []doctor.Check) {
	for _, ch := range checks {
		for _, s := range doctor.CheckStatuses {
			val := 0.0
			if ch.Status == s {
				val = 1
			}
			v.Set(val, ch.ID, strings.ToLower(string(s)))
		}
	}
}

// UpFamilies holds hairpinctl_up alone.
func UpFamilies(up float64) []Family {
	return []Family{{Name: Up, Kind: gauge, Series: []Series{{Value: up}},
		Help: "1 when hairpinctl could run every check, 0 when it lacked the privileges to."}}
}

// DoctorFamilies turns a doctor report made at now into gauges (no Go
// runtime metrics: node_exporter has the node's).
func DoctorFamilies(rep *doctor.Report, now time.Time) []Family {
	last := newLastSuccess()
	last.Set(unixSeconds(now))
	ports := newBridgePorts()
	setPorts(ports, rep.Bridges, rep.Ports)
	checks := newDoctorCheckStatus()
	setChecks(checks, rep.Checks)
	return append(UpFamilies(1), last.Family(), ports.Family(), checks.Family())
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
