package commands

import (
	"context"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

// stopSignals end a run cleanly: Ctrl-C, a service manager's stop, and
// SIGHUP, which an SSH session that drops sends to what it ran. Each is
// caught so that cleanup (selftest's namespaces, watch's ready file) runs.
var stopSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// signalContext returns a context that the first of stopSignals
// cancels, a function naming the signal that did (nil if none), and stop,
// which releases the signals (defer it). Unlike signal.NotifyContext it
// tells which signal it was, for the one-line "stopped on SIGTERM".
func signalContext() (ctx context.Context, caught func() os.Signal, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, stopSignals...)
	var got atomic.Value
	go func() {
		select {
		case s := <-sigs:
			got.Store(s)
			cancel()
		case <-ctx.Done():
		}
	}()
	caught = func() os.Signal {
		s, _ := got.Load().(os.Signal)
		return s
	}
	stop = func() {
		signal.Stop(sigs)
		cancel()
	}
	return ctx, caught, stop
}
