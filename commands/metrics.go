package commands

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"
	"github.com/hairpinctl/hairpinctl/exporter"
	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/doctor"
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
   hairpinctl_up
       1 when every check could run; 0 (and nothing else) without
       CAP_NET_ADMIN, when the rules and conntrack cannot be read
   hairpinctl_last_success_timestamp_seconds
       when this file was last written with hairpinctl_up 1

--textfile - writes the same text to stdout. A systemd timer
(hairpinctl-metrics.timer) runs it every minute. FAILs do not change the
exit status: they are what the metrics report. Without CAP_NET_ADMIN it
writes hairpinctl_up 0, says so on stderr and exits 1.

EXAMPLES:
   hairpinctl metrics --textfile /var/lib/node_exporter/textfile_collector
   hairpinctl metrics --textfile /tmp/m --bridge cni0 --netns node1
   cat /tmp/m/` + metricsFile + `
   hairpinctl metrics --textfile - --netns node1
   # alert: hairpinctl_doctor_check_status{status="fail"} == 1`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "textfile", Usage: "write " + metricsFile + " into `DIR`, node_exporter's textfile directory; - for stdout"},
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
	switch {
	case dir == "":
		return usageErrorf("metrics: --textfile DIR is required (node_exporter's --collector.textfile.directory, or - for stdout)")
	case dir == "-":
	default:
		if err := checkTextfileDir(dir); err != nil {
			return err
		}
	}
	o, err := doctorOptions(c, nil)
	if err != nil {
		return err
	}
	write := func(fams []exporter.Family) error {
		if dir == "-" {
			return writeMetrics(c.App.Writer, fams)
		}
		var buf bytes.Buffer
		if err := writeMetrics(&buf, fams); err != nil {
			return err
		}
		// A temporary file in dir renamed over path, so node_exporter never
		// reads a partial file; 0644 whatever the umask, as node_exporter
		// runs as another user.
		path := filepath.Join(dir, metricsFile)
		if err := renameio.WriteFile(path, buf.Bytes(), 0o644, renameio.WithStaticPermissions(0o644)); err != nil {
			return fmt.Errorf("metrics: write %s: %w", path, err)
		}
		return nil
	}
	// Without CAP_NET_ADMIN half the checks SKIP: a file of SKIPs would
	// read as "nothing to report". Say it is down instead, and fail.
	if !netops.HasNetAdmin() {
		if err := write(exporter.UpFamilies(0)); err != nil {
			return err
		}
		return netops.Errorf(netops.ErrPermission, "metrics needs CAP_NET_ADMIN to read kube-proxy's rules and conntrack: run as root (wrote hairpinctl_up 0 only)")
	}
	cl, err := openClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	rep, err := doctor.Run(cl, o)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return write(exporter.DoctorFamilies(rep, time.Now()))
}

// checkTextfileDir validates --textfile DIR.
func checkTextfileDir(dir string) error {
	if st, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return usageErrorf("metrics: --textfile %s does not exist: create it or name node_exporter's textfile directory", dir)
		}
		return fmt.Errorf("metrics: --textfile %s: %w", dir, err)
	} else if !st.IsDir() {
		return usageErrorf("metrics: --textfile %s is not a directory", dir)
	}
	return nil
}

// writeMetrics writes fams in the text format node_exporter reads.
func writeMetrics(w io.Writer, fams []exporter.Family) error {
	if err := exporter.WriteText(w, fams); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
