package bridgeports

import (
	"fmt"
	"os"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/vishvananda/netlink"
)

// benchNs opens the namespace named by HAIRPINCTL_BENCH_NETNS, a scratch
// node with many ports built by bench/ports.sh, or skips.
func benchNs(b *testing.B) *netops.Client {
	b.Helper()
	ns := os.Getenv("HAIRPINCTL_BENCH_NETNS")
	if ns == "" {
		b.Skip("set HAIRPINCTL_BENCH_NETNS to a namespace with bridge ports (see bench/ports.sh)")
	}
	c, err := netops.Open(ns)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

func BenchmarkDumpBridgePorts(b *testing.B) {
	c := benchNs(b)
	for b.Loop() {
		if _, err := Dump(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkListPortsPodIPs(b *testing.B) {
	c := benchNs(b)
	for b.Loop() {
		if _, err := List(c, ListOptions{PodIPs: true}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLinkList(b *testing.B) {
	c := benchNs(b)
	for b.Loop() {
		if _, err := c.Handle().LinkList(); err != nil {
			b.Fatal(err)
		}
	}
}

var _ = fmt.Sprint
var _ = netlink.FAMILY_ALL

func BenchmarkSetHairpinToggle(b *testing.B) {
	c := benchNs(b)
	on := true
	for b.Loop() {
		ports, err := List(c, ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if r := SetHairpin(c, ports, on, false); len(r.Failed) > 0 {
			b.Fatal(r.Failed[0].Error)
		}
		on = !on
	}
}
