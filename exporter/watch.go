package exporter

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
type PortLister func() (bridges []string, ports []netops.Port, err error)

// Watch holds the metrics of a running watcher: counters fed with its
// events (Observe), the ports read from the kernel at each scrape through
// a PortLister, and the last doctor verdicts (SetDoctor).
type Watch struct {
	reg      *prometheus.Registry
	list     PortLister
	ports    *prometheus.GaugeVec
	up       prometheus.Gauge
	fixes    *prometheus.CounterVec
	failures *prometheus.CounterVec
	resyncs  *prometheus.CounterVec
	errors   prometheus.Counter
	ready    prometheus.Gauge
	isReady  atomic.Bool

	mu     sync.Mutex // one scrape's listing at a time
	checks *prometheus.GaugeVec
	last   prometheus.Gauge
}

// NewWatch builds the watcher's registry. With doctor, the doctor
// verdict series are registered too (filled by SetDoctor).
func NewWatch(version string, list PortLister, doctor bool) *Watch {
	w := &Watch{
		reg:   prometheus.NewRegistry(),
		list:  list,
		ports: NewBridgePorts(),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: Up,
			Help: "1 when the bridge ports could be read at this scrape, 0 when not.",
		}),
		fixes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: WatchFixes,
			Help: "Ports whose hairpin mode watch turned on, by bridge and cause (start, joined, turned-off, resync).",
		}, []string{"bridge", "cause"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: WatchFailures,
			Help: "Failed attempts to turn a port's hairpin mode on, by bridge.",
		}, []string{"bridge"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: WatchResyncs,
			Help: "Re-lists of every port, by cause (overflow: the kernel dropped notifications; subscription-error; periodic).",
		}, []string{"cause"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: WatchErrors,
			Help: "Transient errors watch recovered from (a failed resubscribe or re-list).",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: WatchReady,
			Help: "1 once watch's initial pass is done and link notifications are followed.",
		}),
	}
	// Every cause exists from the start, so rate() and increase() see the
	// first overflow as a change from 0.
	for _, c := range []string{netops.ResyncOverflow, netops.ResyncSubscription, netops.ResyncPeriodic} {
		w.resyncs.WithLabelValues(c)
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        BuildInfo,
		Help:        "1, labelled with the version of hairpinctl running.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	info.Set(1)
	w.reg.MustRegister(portsCollector{w}, w.fixes, w.failures, w.resyncs, w.errors, w.ready, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if doctor {
		w.checks = NewDoctorCheckStatus()
		w.last = NewLastSuccess()
		w.reg.MustRegister(w.checks, w.last)
	}
	return w
}

// Observe counts one watch event.
func (w *Watch) Observe(ev netops.WatchEvent) {
	switch ev.Kind {
	case netops.WatchReady:
		w.ready.Set(1)
		w.isReady.Store(true)
	case netops.WatchEnabled:
		w.fixes.WithLabelValues(ev.Bridge, ev.Cause).Inc()
	case netops.WatchFailed:
		w.failures.WithLabelValues(ev.Bridge).Inc()
	case netops.WatchResync:
		w.resyncs.WithLabelValues(ev.Cause).Inc()
	case netops.WatchError:
		w.errors.Inc()
	}
}

// Ready reports whether a ready event was observed.
func (w *Watch) Ready() bool { return w.isReady.Load() }

// SetDoctor replaces the doctor verdicts with rep's, made at now. Checks
// that are gone (a Service deleted) leave the metrics with it.
func (w *Watch) SetDoctor(rep *netops.DoctorReport, now time.Time) {
	if w.checks == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.checks.Reset()
	SetChecks(w.checks, rep.Checks)
	w.last.Set(unixSeconds(now))
}

// Handler serves /metrics (the Prometheus formats) and /readyz (200 once
// ready, 503 before).
func (w *Watch) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.InstrumentMetricHandler(w.reg,
		promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})))
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

// portsCollector reads the ports from the kernel at each scrape: a gauge
// kept up to date from events would drift from what the kernel holds the
// moment anything else changes a port.
type portsCollector struct{ w *Watch }

func (c portsCollector) Describe(ch chan<- *prometheus.Desc) {
	c.w.ports.Describe(ch)
	c.w.up.Describe(ch)
}

func (c portsCollector) Collect(ch chan<- prometheus.Metric) {
	w := c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ports.Reset()
	bridges, ports, err := w.list()
	if err != nil {
		w.up.Set(0)
		w.up.Collect(ch)
		ch <- prometheus.NewInvalidMetric(prometheus.NewDesc(BridgePorts, "", nil, nil), err)
		return
	}
	w.up.Set(1)
	SetPorts(w.ports, bridges, ports)
	w.ports.Collect(ch)
	w.up.Collect(ch)
}
