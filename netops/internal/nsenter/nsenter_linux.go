// Package nsenter is hairpinctl's one way into a network namespace: a
// function run on an OS thread that has entered it. netops' Client and the
// test lab both enter through Do, so production --netns and the tests share
// the code path.
package nsenter

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on an OS thread that has entered ns, for work that follows the
// calling thread's namespace: exec of iptables or nft (a child inherits its
// parent thread's namespace), /proc/sys and /proc/thread-self reads, and
// sockets created inside fn. setns(2) moves one thread, not the process, so
// fn runs on a fresh goroutine locked to its thread. The thread is restored
// afterwards; when it cannot be, it stays locked and the runtime retires it
// with the goroutine, so no other goroutine ever runs in the wrong namespace.
func Do(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
