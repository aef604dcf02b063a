package kubelab

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// run runs a command and returns its combined output, or an error that
// carries the output.
func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// in runs fn on an OS thread that has entered the named namespace; the
// thread is thrown away afterwards, so no other goroutine ever runs in it.
// Sockets made and processes started from fn belong to that namespace.
func in(nsName string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Not unlocked: the thread dies with the goroutine rather than
		// returning to the pool in the wrong namespace.
		h, err := netns.GetFromName(nsName)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", nsName, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", nsName, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// dialIn returns a DialContext that makes its sockets in the named
// namespace: the lab's API clients reach the apiserver from the node
// namespace, as kube-proxy does, while the caller stays in its own.
func dialIn(nsName string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := in(nsName, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// sysctl writes a sysctl inside the namespace.
func sysctl(nsName, key, value string) error {
	_, err := run("ip", "netns", "exec", nsName, "sysctl", "-qw", key+"="+value)
	return err
}

// In runs fn on a thread inside the named namespace (a pod's, say).
func In(nsName string, fn func() error) error { return in(nsName, fn) }
