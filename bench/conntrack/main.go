// Command conntrack is bench/conntrack.sh's helper: it builds the lab node
// (netops/lab, the one the tests use) and makes the connection storm.
//
//	conntrack lab               build a lab, print its namespaces, wait for stdin to close
//	conntrack storm ADDR DUR N  from the current netns: N workers make short
//	                            TCP connections to ADDR for DUR, print the count
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/lab"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "lab":
		err = runLab()
	case "storm":
		if len(os.Args) != 5 {
			usage()
		}
		err = storm(os.Args[2], os.Args[3], os.Args[4])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "conntrack bench: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: conntrack lab | conntrack storm ADDR DURATION WORKERS")
	os.Exit(2)
}

// runLab builds a two-pod lab whose Service is backed by pod 1, prints
// "node NAME", "pod1 NAME", "pod2 NAME", and removes it when stdin closes
// or on SIGTERM/SIGINT.
func runLab() error {
	l, err := lab.New(lab.Options{Pods: 2, Endpoints: []int{1}, Hairpin: true, Prefix: "hpct"})
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Printf("node %s\npod1 %s\npod2 %s\n", l.Node, l.Pod(1).Name, l.Pod(2).Name)
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-done:
	case <-sig:
	}
	return nil
}

// storm connects to addr as fast as workers goroutines can for d, each
// connection reading the server's line and closing.
func storm(addr, dur, workers string) error {
	d, err := time.ParseDuration(dur)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(workers)
	if err != nil || n < 1 {
		return fmt.Errorf("workers %q: want a positive number", workers)
	}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	buf := make([][]byte, n)
	for i := range n {
		buf[i] = make([]byte, 256)
		wg.Add(1)
		go func(b []byte) {
			defer wg.Done()
			for time.Now().Before(deadline) {
				c, err := net.DialTimeout("tcp4", addr, time.Second)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				_ = c.SetDeadline(time.Now().Add(time.Second))
				for {
					if _, err := c.Read(b); err != nil {
						break
					}
				}
				c.Close()
				ok.Add(1)
			}
		}(buf[i])
	}
	wg.Wait()
	fmt.Printf("connections %d failed %d seconds %.1f\n", ok.Load(), failed.Load(), d.Seconds())
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "first failure: %s\n", e)
	}
	return nil
}
