package commands

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"
)

// metricsFile is the file written under --textfile.
const metricsFile = "hairpinctl.prom"

var metricsCommand = &cli.Command{
	Name:  "metrics",
	Usage: "write hairpin and doctor metrics for node_exporter",
	Description: `Runs the doctor checks (every Service, as "hairpinctl doctor" with no
arguments) and writes DIR/` + metricsFile + ` in the Prometheus text format,
atomically (a temporary file in DIR renamed over the old one), for
node_exporter's --collector.textfile.directory:

   hairpinctl_bridge_ports{bridge,hairpin="on"|"off"}
       ports of each bridge by hairpin state
   hairpinctl_doctor_check_status{check,status="pass"|"warn"|"fail"|"skip"}
       1 for each check's verdict, 0 for the other three

A systemd timer (hairpinctl-metrics.timer) runs it every minute. FAILs do
not change the exit status: they are what the metrics report.

EXAMPLES:
   hairpinctl metrics --textfile /var/lib/node_exporter/textfile_collector
   hairpinctl metrics --textfile /tmp/m --bridge cni0 --netns node1
   cat /tmp/m/` + metricsFile + `
   # alert: hairpinctl_doctor_check_status{status="fail"} == 1`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "textfile", Usage: "write " + metricsFile + " into `DIR`, node_exporter's textfile directory"},
		bridgeFlag("only bridge `BR` (repeatable; default: every bridge)"),
		cniConfDirFlag(),
		netnsFlag(),
	},
	Action: runMetrics,
}

func runMetrics(c *cli.Context) error {
	if c.Args().Present() {
		return usageErrorf("metrics: unexpected argument %q (see: hairpinctl metrics --help)", c.Args().First())
	}
	dir := c.String("textfile")
	if dir == "" {
		return usageErrorf("metrics: --textfile DIR is required (node_exporter's --collector.textfile.directory)")
	}
	if st, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return usageErrorf("metrics: --textfile %s does not exist: create it or name node_exporter's textfile directory", dir)
		}
		return fmt.Errorf("metrics: --textfile %s: %w", dir, err)
	} else if !st.IsDir() {
		return usageErrorf("metrics: --textfile %s is not a directory", dir)
	}
	o, err := doctorOptions(c, nil)
	if err != nil {
		return err
	}
	cl, err := openClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	rep, err := cl.Doctor(o)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	reg, err := metricsRegistry(rep)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	path := filepath.Join(dir, metricsFile)
	// WriteToTextfile writes a temporary file in dir and renames it over
	// path, so node_exporter never reads a partial file.
	if err := prometheus.WriteToTextfile(path, reg); err != nil {
		return fmt.Errorf("metrics: write %s: %w", path, err)
	}
	return nil
}

// metricsRegistry turns a doctor report into gauges on a registry of
// their own (no Go runtime metrics: node_exporter has the node's).
func metricsRegistry(rep *netops.DoctorReport) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	ports := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "hairpinctl_bridge_ports",
		Help: "Bridge ports by bridge and hairpin mode (on reflects a pod's traffic back to it).",
	}, []string{"bridge", "hairpin"})
	checks := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "hairpinctl_doctor_check_status",
		Help: "1 for the verdict of each hairpinctl doctor check, 0 for the others.",
	}, []string{"check", "status"})
	for _, col := range []prometheus.Collector{ports, checks} {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	for _, b := range rep.Bridges {
		// Both series exist for every bridge, so "off" reads 0 rather than
		// vanishing when all is well.
		ports.WithLabelValues(b, "on")
		ports.WithLabelValues(b, "off")
	}
	for _, p := range rep.Ports {
		state := "off"
		if p.Hairpin {
			state = "on"
		}
		ports.WithLabelValues(p.Bridge, state).Inc()
	}
	for _, ch := range rep.Checks {
		for _, s := range netops.CheckStatuses {
			v := 0.0
			if ch.Status == s {
				v = 1
			}
			checks.WithLabelValues(ch.ID, strings.ToLower(string(s))).Set(v)
		}
	}
	return reg, nil
}
