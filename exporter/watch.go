package exporter

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/doctor"
	"github.com/hairpinctl/hairpinctl/netops/watch"
)

// Names of the series only the watcher has.
const (
	// WatchFixes counts ports whose hairpin the watcher turned on, by
	// bridge and cause (start, joined, turned-off, resync).
	WatchFixes = "hairpinctl_watch_fixes_total"
	// WatchFailures counts failed attempts to turn a port's hairpin on.
	WatchFailures = "hairpinctl_watch_failures_total"
	// WatchResyncs counts re-lists of every port, by cause (overflow: the
	// kernel dropped notifications; subscription-error; periodic).
	WatchResyncs = "hairpinctl_watch_resyncs_total"
	// WatchErrors counts transient errors the watcher recovered from.
	WatchErrors = "hairpinctl_watch_errors_total"
	// WatchReady is 1 once the initial pass is done and notifications are
	// followed.
	WatchReady = "hairpinctl_watch_ready"
	// BuildInfo is 1, labelled with the running version.
	BuildInfo = "hairpinctl_build_info"
)

// PortLister returns, at scrape time, the bridges the watcher looks after
// and the ports it keeps on.
type PortLister func() (bridges []string, ports []bridgeports.Port, err error)

// Watch holds the metrics of a running watcher: counters fed with its
// events (Observe), the ports read from the kernel at each scrape through
// a PortLister, and the last doctor verdicts (SetDoctor).
type Watch struct {
	list     PortLister
	fixes    *vec
	failures *vec
	resyncs  *vec
	errors   *vec
	ready    *vec
	info     *vec
	isReady  atomic.Bool

	mu     sync.Mutex // one scrape's listing at a time
	checks *vec
	last   *vec
}

// NewWatch builds the watcher's series. With doctor, the doctor verdict
// series are served too (filled by SetDoctor).
func NewWatch(version string, list PortLister, doctor bool) *Watch {
	w := &Watch{
		list: list,
		fixes: newVec(WatchFixes, "Ports whose hairpin mode watch turned on, by bridge and cause (start, joined, turned-off, resync).",
			counter, "bridge", "cause"),
		failures: newVec(WatchFailures, "Failed attempts to turn a port's hairpin mode on, by bridge.", counter, "bridge"),
		resyncs: newVec(WatchResyncs, "Re-lists of every port, by cause (overflow: the kernel dropped notifications; subscription-error; periodic).",
			counter, "cause"),
		errors: newVec(WatchErrors, "Transient errors watch recovered from (a failed resubscribe or re-list).", counter),
		ready:  newVec(WatchReady, "1 once watch's initial pass is done and link notifications are followed.", gauge),
		info:   newVec(BuildInfo, "1, labelled with the version of hairpinctl running.", gauge, "version"),
	}
	w.errors.Touch()
	w.ready.Touch()
	w.info.Set(1, version)
	// Every cause exists from the start, so rate() and increase() see the
	// first overflow as a change from 0.
	for _, c := range []string{watch.ResyncOverflow, watch.ResyncSubscription, watch.ResyncPeriodic} {
		w.resyncs.Touch(c)
	}
	if doctor {
		w.checks = newDoctorCheckStatus()
		w.last = newLastSuccess()
		w.last.Touch()
	}
	return w
}

// Observe counts one watch event.
func (w *Watch) Observe(ev watch.Event) {
	switch ev.Kind {
	case watch.KindReady:
		w.ready.Set(1)
		w.isReady.Store(true)
	case watch.KindEnabled:
		w.fixes.Add(1, ev.Bridge, ev.Cause)
	case watch.KindFailed:
		w.failures.Add(1, ev.Bridge)
	case watch.KindResync:
		w.resyncs.Add(1, ev.Cause)
	case watch.KindError:
		w.errors.Add(1)
	}
}

// Ready reports whether a ready event was observed.
func (w *Watch) Ready() bool { return w.isReady.Load() }

// SetDoctor replaces the doctor verdicts with rep's, made at now. Checks
// that are gone (a Service deleted) leave the metrics with it.
func (w *Watch) SetDoctor(rep *doctor.Report, now time.Time) {
	if w.checks == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.checks.Reset()
	setChecks(w.checks, rep.Checks)
	w.last.Set(unixSeconds(now))
}

// Handler serves /metrics (the Prometheus text format, which every
// Prometheus accepts whatever it asks for first) and /readyz (200 once
// ready, 503 before).
func (w *Watch) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_ = WriteText(rw, w.families())
	})
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !w.Ready() {
			rw.WriteHeader(http.StatusServiceUnavailable)
			_, _ = rw.Write([]byte("not ready: the initial pass is not done\n"))
			return
		}
		_, _ = rw.Write([]byte("ready\n"))
	})
	return mux
}

// families is one scrape: the ports are read from the kernel at each
// scrape, since a gauge kept up to date from events would drift from what
// the kernel holds the moment anything else changes a port. A failed
// listing reads hairpinctl_up 0, without port series, and leaves the rest.
func (w *Watch) families() []Family {
	w.mu.Lock()
	defer w.mu.Unlock()
	up := Family{Name: Up, Help: "1 when the bridge ports could be read at this scrape, 0 when not.", Kind: gauge,
		Series: []Series{{Value: 1}}}
	fams := []Family{w.fixes.Family(), w.failures.Family(), w.resyncs.Family(), w.errors.Family(),
		w.ready.Family(), w.info.Family()}
	if bridges, ports, err := w.list(); err != nil {
		up.Series[0].Value = 0
	} else {
		pv := newBridgePorts()
		setPorts(pv, bridges, ports)
		fams = append(fams, pv.Family())
	}
	fams = append(fams, up)
	if w.checks != nil {
		fams = append(fams, w.checks.Family(), w.last.Family())
	}
	return append(fams, processFamilies()...)
}
