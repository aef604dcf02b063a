package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/google/renameio/v2"
	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/pods"
	"github.com/hairpinctl/hairpinctl/netops/watch"
	"github.com/urfave/cli/v2"
)

var watchCommand = &cli.Command{
	Name:  "watch",
	Usage: "keep hairpin mode on as pods come and go (a long-running reconciler)",
	Description: `Turns hairpin mode on for every port of --bridge BR (or of every bridge with
--all), then follows the kernel's link notifications: each port is set on as
it joins and again whenever something turns it off. Bridges that do not exist
yet, or are deleted and re-created, are waited for. If the kernel drops
notifications (a burst of thousands of pods), watch re-lists every port, so
none is missed. Host side only: it never enters a pod.

One line per action on stdout (JSON Lines with -o json), without timestamps
under journald, naming the pod behind the port as ports does ("pod
unknown" when nothing names it). A port joins the bridge before the
runtime records its pod, so its line waits up to 2s for the name; the
port itself is set on at once.

With --ready-file, the file is written once the initial pass is done and
notifications are followed, and removed on exit. SIGTERM, SIGINT or SIGHUP
stops it with exit 0.

With --metrics-listen ADDR it serves Prometheus metrics at /metrics and
200 at /readyz once ready (503 before): hairpinctl_bridge_ports{bridge,
hairpin} (the ports it keeps on, read at each scrape),
hairpinctl_watch_fixes_total{bridge,cause},
hairpinctl_watch_failures_total{bridge},
hairpinctl_watch_resyncs_total{cause="overflow"|"periodic"|...},
hairpinctl_watch_ready, hairpinctl_build_info{version}; with --doctor-every
D also hairpinctl_doctor_check_status{check,status} as "hairpinctl metrics"
writes it, refreshed every D.

EXAMPLES:
   hairpinctl watch --bridge cni0
   hairpinctl watch --all -o json | jq -c 'select(.kind == "enabled")'
   # as systemd and the DaemonSet run it:
   hairpinctl watch --bridge cni0 --ready-file /run/hairpinctl/ready
   hairpinctl watch --bridge cni0 --netns node1
   # as the image's DaemonSet runs it (deploy/daemonset.yaml):
   hairpinctl watch --bridge cni0 --metrics-listen :9733 --doctor-every 1m`,
	Flags: append([]cli.Flag{
		bridgeFlag("keep hairpin on for the pods' ports of bridge `BR` (repeatable)"),
		&cli.BoolFlag{Name: "all", Usage: "keep hairpin on for the pods' ports of every bridge"},
		anyPortFlag(),
		&cli.StringFlag{Name: "ready-file", Usage: "write `PATH` once watching (for a readiness probe); removed on exit"},
		&cli.DurationFlag{Name: "resync", Value: 5 * time.Minute, Usage: "also re-list every port every `DURATION` (1s or more) as a safety net; 0 never"},
		cniCacheFlag(),
		criEndpointFlag(),
		outputFlag(),
		netnsFlag(),
	}, watchMetricsFlags()...),
	Action: runWatch,
}

// minResync is the shortest --resync taken.
const minResync = time.Second

// watchStopped is the kind of the line watch prints when a signal stops it.
const watchStopped = "stopped"

func runWatch(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	brs, err := bridges(c)
	if err != nil {
		return err
	}
	all := c.Bool("all")
	resync := c.Duration("resync")
	if err := checkWatchArgs(c, brs, all, resync); err != nil {
		return err
	}
	mcfg, err := watchMetricsOptions(c, brs)
	if err != nil {
		return err
	}
	if !netops.HasNetAdmin() {
		return netops.Errorf(netops.ErrPermission, "watch needs CAP_NET_ADMIN: run as root")
	}
	readyFile := c.String("ready-file")
	if err := removeStaleReadyFile(readyFile); err != nil {
		return err
	}
	cl, err := openClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()

	sigCtx, stoppedBy, stop := signalContext()
	defer stop()
	ctx, cancel := context.WithCancel(sigCtx)
	defer cancel()
	m, err := mcfg.start(ctx, cancel, c)
	if err != nil {
		return err
	}

	p := newWatchPrinter(c.App.Writer, format, cl.NetnsLabel())
	named := newLivePods(c, ctx.Done())
	defer named.Close()
	lines := startWatchLines(p, named)
	var readyErr error
	err = watch.Watch(ctx, cl, watch.Options{Bridges: brs, All: all, Resync: resync, AnyPort: c.Bool("any-port")}, func(ev watch.Event) {
		lines.send(ev)
		m.observe(ev)
		if ev.Kind == watch.KindReady && readyFile != "" {
			if err := writeReadyFile(readyFile); err != nil {
				readyErr = err
				cancel()
			}
		}
	})
	lines.stop()
	if readyFile != "" {
		if rerr := os.Remove(readyFile); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && readyErr == nil {
			fmt.Fprintf(c.App.ErrWriter, "hairpinctl: watch: remove ready file: %v\n", rerr)
		}
	}
	merr := m.stop()
	switch {
	case err != nil:
		return fmt.Errorf("watch: %w", err)
	case readyErr != nil:
		return readyErr
	case merr != nil:
		return merr
	}
	p.print(watch.Event{Time: time.Now(), Kind: watchStopped, Cause: signalName(stoppedBy(), "interrupted")}, nil)
	return nil
}

// checkWatchArgs refuses arguments, a missing or doubled choice of
// bridges, and a --resync below its floor.
func checkWatchArgs(c *cli.Context, brs []string, all bool, resync time.Duration) error {
	switch {
	case c.Args().Present():
		return usageErrorf("watch: takes no arguments, got %q: use --bridge BR or --all", c.Args().First())
	case len(brs) == 0 && !all:
		return usageErrorf("watch: name the bridges with --bridge BR, or use --all (see: hairpinctl watch --help)")
	case len(brs) > 0 && all:
		return usageErrorf("watch: give --bridge or --all, not both")
	case resync < 0:
		return usageErrorf("watch: --resync %s is negative", resync)
	case resync > 0 && resync < minResync:
		// Each resync re-lists every port of every bridge: at 1ms that
		// is a busy loop, not a safety net.
		return usageErrorf("watch: --resync %s is below the floor of %s: use %s or more, or 0 for never", resync, minResync, minResync)
	}
	return nil
}

// removeStaleReadyFile removes the ready file a previous run left, if one
// is asked for: it must not make this run look ready.
func removeStaleReadyFile(path string) error {
	if path == "" {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("watch: remove stale ready file %s: %w", path, err)
	}
	return nil
}

// writeReadyFile writes watch's pid to the ready file, whole or not at
// all (a file renamed into place): a probe that finds it never reads it
// empty.
func writeReadyFile(path string) error {
	if err := renameio.WriteFile(path, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		return fmt.Errorf("watch: write ready file: %w (is its directory there and writable?)", err)
	}
	return nil
}

// watchNameWait is how long after a port joined its line waits for the
// runtime to record the port's pod.
const watchNameWait = 2 * time.Second

// watchLines prints watch's events in order from a goroutine of its own,
// with the pod behind each port acted on: a port joins the bridge while
// the CNI plugin runs, before the runtime records the pod, so the line of
// a joined port waits for its name until watchNameWait after the event.
// The watcher waits for no line, only for room in the queue when 4096
// lines are waiting.
type watchLines struct {
	ch    chan watch.Event
	hurry chan struct{}
	done  chan struct{}
}

func startWatchLines(p *watchPrinter, named *livePods) *watchLines {
	named.retry = 200 * time.Millisecond // while a line waits for it
	w := &watchLines{ch: make(chan watch.Event, 4096), hurry: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ev := range w.ch {
			var pod *pods.Pod
			if (ev.Kind == watch.KindEnabled || ev.Kind == watch.KindFailed) && ev.Index > 0 {
				pod = named.port(ev.Index)
				wait := time.Until(ev.Time.Add(watchNameWait))
				for pod == nil && ev.Cause == watch.CauseJoined && wait > 0 {
					select {
					case <-w.hurry:
						wait = 0
						continue
					case <-time.After(min(wait, 100*time.Millisecond)):
					}
					pod = named.port(ev.Index)
					wait = time.Until(ev.Time.Add(watchNameWait))
				}
			}
			p.print(ev, pod)
		}
	}()
	return w
}

func (w *watchLines) send(ev watch.Event) { w.ch <- ev }

// stop prints what is queued, without waiting for names, and returns
// when it is printed.
func (w *watchLines) stop() {
	close(w.hurry)
	close(w.ch)
	<-w.done
}

// signalName names the signal that stopped a run, other when it was no
// signal.
func signalName(sig os.Signal, other string) string {
	if s, ok := sig.(syscall.Signal); ok {
		return unixSignalName(s)
	}
	return other
}

// unixSignalName names the signals watch and selftest stop on.
func unixSignalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGHUP:
		return "SIGHUP"
	}
	return s.String()
}

// watchPrinter writes one line per event: text or JSON Lines.
type watchPrinter struct {
	w      io.Writer
	json   bool
	pal    palette
	stamps bool
	netns  string
}

func newWatchPrinter(w io.Writer, format, netns string) *watchPrinter {
	// journald stamps every line itself and sets JOURNAL_STREAM for the
	// services whose output it collects.
	_, journald := os.LookupEnv("JOURNAL_STREAM")
	return &watchPrinter{w: w, json: format == "json", pal: colours(w), stamps: !journald, netns: netns}
}

// watchLine is an event as -o json prints it: the event's fields and,
// for a port acted on, the pod behind it.
type watchLine struct {
	watch.Event
	// Pod is the pod behind Port, absent when nothing names it.
	Pod *pods.Pod `json:"pod,omitempty"`
}

func (p *watchPrinter) print(ev watch.Event, pod *pods.Pod) {
	if p.json {
		b, err := json.Marshal(watchLine{ev, pod})
		if err == nil {
			b = append(b, '\n')
			_, _ = p.w.Write(b)
		}
		return
	}
	line := p.text(ev, pod)
	if line == "" {
		return
	}
	if p.stamps {
		line = ev.Time.Format("2006-01-02T15:04:05.000Z07:00") + " " + line
	}
	_, _ = io.WriteString(p.w, line+"\n")
}

var enabledCause = map[string]string{
	watch.CauseStart:     "found off at start",
	watch.CauseJoined:    "joined the bridge",
	watch.CauseTurnedOff: "was turned off",
	watch.CauseResync:    "found off by re-listing",
}

// text is the plain line for ev, "" for events not worth a line.
func (p *watchPrinter) text(ev watch.Event, pod *pods.Pod) string {
	where := termSafe(ev.Bridge) + ", pod unknown"
	if n := pod.FullName(); n != "" {
		where = termSafe(ev.Bridge) + ", pod " + termSafe(n)
	}
	switch ev.Kind {
	case watch.KindReady:
		what := "bridge " + ev.Bridge
		if strings.Contains(ev.Bridge, ",") {
			what = "bridges " + ev.Bridge
		}
		if ev.Bridge == "" {
			what = "every bridge"
		}
		unit := "ports"
		if ev.Ports == 1 {
			unit = "port"
		}
		return fmt.Sprintf("%s %s in netns %s: %d %s", p.pal.good("watching"), what, p.netns, ev.Ports, unit)
	case watch.KindEnabled:
		cause := enabledCause[ev.Cause]
		if cause == "" {
			cause = ev.Cause
		}
		return fmt.Sprintf("%s %s (%s): %s", p.pal.good("hairpin on"), termSafe(ev.Port), where, cause)
	case watch.KindFailed:
		return fmt.Sprintf("%s %s (%s): %s", p.pal.bad("failed"), termSafe(ev.Port), where, termSafeText(ev.Error))
	case watch.KindSkipped:
		return fmt.Sprintf("%s %s (%s): %s (use --any-port to keep it on too)", p.pal.dim("skipped"), termSafe(ev.Port), termSafe(ev.Bridge), ev.Error)
	case watch.KindBridgeAdded:
		return fmt.Sprintf("bridge %s appeared (ifindex %d)", termSafe(ev.Bridge), ev.Index)
	case watch.KindBridgeRemoved:
		return fmt.Sprintf("%s %s removed: waiting for it to come back", p.pal.warn("bridge"), termSafe(ev.Bridge))
	case watch.KindBridgeMissing:
		return fmt.Sprintf("%s %s does not exist yet: waiting for it", p.pal.warn("bridge"), termSafe(ev.Bridge))
	case watch.KindResync:
		switch ev.Cause {
		case watch.ResyncPeriodic:
			return "" // routine: its findings get their own lines
		case watch.ResyncOverflow:
			return fmt.Sprintf("%s every port: the kernel dropped notifications (%s)", p.pal.warn("re-listing"), ev.Error)
		}
		return fmt.Sprintf("%s every port: the subscription ended (%s)", p.pal.warn("re-listing"), ev.Error)
	case watch.KindError:
		return fmt.Sprintf("%s %s", p.pal.bad("error"), ev.Error)
	case watchStopped:
		return "stopped on " + ev.Cause
	}
	return fmt.Sprintf("%s %s %s", ev.Kind, ev.Port, ev.Error)
}
