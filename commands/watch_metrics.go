package commands

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hairpinctl/hairpinctl/exporter"
	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/doctor"
	"github.com/hairpinctl/hairpinctl/netops/watch"
	"github.com/urfave/cli/v2"
)

// minDoctorEvery is the shortest --doctor-every taken: each run reads
// every kube-proxy rule and the conntrack counters.
const minDoctorEvery = 10 * time.Second

// watchMetricsFlags are watch's flags for serving metrics.
func watchMetricsFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "metrics-listen", Usage: "serve Prometheus metrics on `ADDR` (host:port): /metrics, /readyz"},
		&cli.DurationFlag{Name: "doctor-every", Usage: "with --metrics-listen, run the doctor checks every `DURATION` (10s or more) for the metrics"},
		cniConfDirFlag(),
	}
}

// watchMetricsConfig is watch's validated metrics input.
type watchMetricsConfig struct {
	listen      string
	doctorEvery time.Duration
	doctor      doctor.Options
	bridges     []string
	anyPort     bool
}

// watchMetricsOptions validates the metrics flags; a zero listen means
// no metrics.
func watchMetricsOptions(c *cli.Context, brs []string) (watchMetricsConfig, error) {
	cfg := watchMetricsConfig{listen: c.String("metrics-listen"), doctorEvery: c.Duration("doctor-every"),
		bridges: brs, anyPort: c.Bool("any-port")}
	switch {
	case cfg.listen == "" && c.IsSet("metrics-listen"):
		return cfg, usageErrorf("watch: --metrics-listen is empty: give host:port, e.g. 127.0.0.1:9733")
	case cfg.listen == "" && cfg.doctorEvery != 0:
		return cfg, usageErrorf("watch: --doctor-every needs --metrics-listen ADDR: the verdicts are served as metrics")
	case cfg.doctorEvery < 0:
		return cfg, usageErrorf("watch: --doctor-every %s is negative", cfg.doctorEvery)
	case cfg.doctorEvery > 0 && cfg.doctorEvery < minDoctorEvery:
		return cfg, usageErrorf("watch: --doctor-every %s is below the floor of %s: use %s or more", cfg.doctorEvery, minDoctorEvery, minDoctorEvery)
	}
	if cfg.listen == "" {
		return cfg, nil
	}
	if _, _, err := net.SplitHostPort(cfg.listen); err != nil {
		return cfg, usageErrorf("watch: --metrics-listen %s: want host:port (e.g. :9733 or 127.0.0.1:9733)", cfg.listen)
	}
	if cfg.doctorEvery > 0 {
		o, err := doctorOptions(c, nil)
		if err != nil {
			return cfg, err
		}
		cfg.doctor = o
	}
	return cfg, nil
}

// watchMetrics serves a running watcher's metrics. Its nil value serves
// nothing, so watch calls its methods unconditionally.
type watchMetrics struct {
	cfg     watchMetricsConfig
	exp     *exporter.Watch
	srv     *http.Server
	served  chan error
	errw    func(error)
	startDr sync.Once
	doctors sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc

	// The scrapes and the doctor runs share a client of their own, apart
	// from the watcher's, one at a time.
	clMu sync.Mutex
	cl   *netops.Client
}

// start listens on cfg.listen and serves until stop. The listening
// socket is open when it returns, so a port in use fails watch at once;
// failing later, the server stops the watcher with cancelWatch.
func (cfg watchMetricsConfig) start(ctx context.Context, cancelWatch context.CancelFunc, c *cli.Context) (*watchMetrics, error) {
	if cfg.listen == "" {
		return nil, nil
	}
	cl, err := openClient(c)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("watch: --metrics-listen %s: %w (is another watch serving there?)", cfg.listen, err)
	}
	m := &watchMetrics{cfg: cfg, cl: cl, served: make(chan error, 1),
		errw: func(err error) { fmt.Fprintf(c.App.ErrWriter, "hairpinctl: watch: %v\n", err) }}
	m.ctx, m.cancel = context.WithCancel(ctx)
	m.exp = exporter.NewWatch(c.App.Version, m.listPorts, cfg.doctorEvery > 0)
	m.srv = &http.Server{Handler: m.exp.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		err := m.srv.Serve(ln)
		if !errors.Is(err, http.ErrServerClosed) {
			cancelWatch()
		}
		m.served <- err
	}()
	return m, nil
}

// listPorts returns the ports watch keeps on: those of the selected
// bridges (every bridge with --all), pods' ports only without --any-port.
func (m *watchMetrics) listPorts() ([]string, []bridgeports.Port, error) {
	m.clMu.Lock()
	ports, err := bridgeports.List(m.cl, bridgeports.ListOptions{Kinds: !m.cfg.anyPort})
	m.clMu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	kept := []bridgeports.Port{}
	for _, p := range ports {
		if len(m.cfg.bridges) > 0 && !slices.Contains(m.cfg.bridges, p.Bridge) {
			continue
		}
		if !m.cfg.anyPort && bridgeports.NotPodPort(p) != "" {
			continue
		}
		kept = append(kept, p)
	}
	return m.cfg.bridges, kept, nil
}

// observe counts ev; the first ready event starts the doctor runs, so
// their first verdict sees the ports watch has just turned on.
func (m *watchMetrics) observe(ev watch.Event) {
	if m == nil {
		return
	}
	m.exp.Observe(ev)
	if ev.Kind == watch.KindReady && m.cfg.doctorEvery > 0 {
		m.startDr.Do(func() {
			m.doctors.Add(1)
			go m.doctorLoop()
		})
	}
}

func (m *watchMetrics) doctorLoop() {
	defer m.doctors.Done()
	t := time.NewTicker(m.cfg.doctorEvery)
	defer t.Stop()
	for {
		m.clMu.Lock()
		rep, err := doctor.Run(m.cl, m.cfg.doctor)
		m.clMu.Unlock()
		if err != nil {
			m.errw(fmt.Errorf("doctor: %w", err))
		} else {
			m.exp.SetDoctor(rep, time.Now())
		}
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stop shuts the server down (letting a scrape under way finish) and
// returns an error if it had failed while serving.
func (m *watchMetrics) stop() error {
	if m == nil {
		return nil
	}
	m.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
	m.doctors.Wait()
	m.cl.Close()
	if err := <-m.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("watch: metrics server: %w", err)
	}
	return nil
}
