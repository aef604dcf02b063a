// Command watchlat measures how long `hairpinctl watch` takes to turn
// hairpin on for a port that joins a bridge. In a scratch namespace where
// watch runs, it creates veth pairs and joins one end to a bridge the way
// the CNI bridge plugin does (RTM_SETLINK with IFLA_MASTER), and sees
// hairpin go on from the bridge's AF_BRIDGE notifications on a
// subscription of its own. Each span runs from just before the joining
// call to that notification, so it is an upper bound: it includes the
// call itself and the benchmark's own wake-up. (The join notification is
// not used as the start: notifications read in one batch share a
// timestamp.) It prints one markdown table row. Used by bench/watch.sh;
// needs root.
//
// Modes: seq joins one port and waits for hairpin on before the next (the
// reaction time); burst joins them all back to back (reaction under load:
// queueing included). The veth pairs are created beforehand, untimed.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

type portTimes struct {
	on   time.Time
	onCh chan struct{}
}

type tracker struct {
	mu     sync.Mutex
	bridge int
	ports  map[string]*portTimes
	err    error
}

func (t *tracker) port(name string) *portTimes {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.ports[name]
	if !ok {
		p = &portTimes{onCh: make(chan struct{})}
		t.ports[name] = p
	}
	return p
}

// read timestamps AF_BRIDGE notifications of the bridge's ports.
func (t *tracker) read(s *nl.NetlinkSocket) {
	for {
		msgs, _, err := s.Receive()
		now := time.Now()
		if err != nil {
			t.mu.Lock()
			t.err = err
			t.mu.Unlock()
			return
		}
		for _, m := range msgs {
			if m.Header.Type != unix.RTM_NEWLINK || len(m.Data) < unix.SizeofIfInfomsg {
				continue
			}
			ifi := nl.DeserializeIfInfomsg(m.Data)
			if ifi.Family != unix.AF_BRIDGE {
				continue
			}
			attrs, err := nl.ParseRouteAttr(m.Data[unix.SizeofIfInfomsg:])
			if err != nil {
				continue
			}
			name, master, hairpin, port := "", 0, false, false
			for _, a := range attrs {
				switch a.Attr.Type &^ unix.NLA_F_NESTED {
				case unix.IFLA_IFNAME:
					name = nl.BytesToString(a.Value)
				case unix.IFLA_MASTER:
					master = int(nl.NativeEndian().Uint32(a.Value))
				case unix.IFLA_PROTINFO:
					port = true
					nested, _ := nl.ParseRouteAttr(a.Value)
					for _, n := range nested {
						if n.Attr.Type&^unix.NLA_F_NESTED == nl.IFLA_BRPORT_MODE && len(n.Value) > 0 {
							hairpin = n.Value[0] != 0
						}
					}
				}
			}
			if !port || master != t.bridge {
				continue
			}
			if !hairpin {
				continue
			}
			p := t.port(name)
			t.mu.Lock()
			if p.on.IsZero() {
				p.on = now
				close(p.onCh)
			}
			t.mu.Unlock()
		}
	}
}

func main() {
	nsName := flag.String("netns", "", "scratch namespace (under /run/netns) where watch runs")
	brName := flag.String("bridge", "cni0", "bridge to add ports to")
	n := flag.Int("n", 1000, "ports to add")
	mode := flag.String("mode", "seq", "seq or burst")
	prefix := flag.String("prefix", "wl", "port name prefix")
	flag.Parse()
	if err := run(*nsName, *brName, *n, *mode, *prefix); err != nil {
		fmt.Fprintln(os.Stderr, "watchlat:", err)
		os.Exit(1)
	}
}

func run(nsName, brName string, n int, mode, prefix string) error {
	ns, err := netns.GetFromName(nsName)
	if err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	br, err := h.LinkByName(brName)
	if err != nil {
		return err
	}
	t, err := track(ns, br.Attrs().Index)
	if err != nil {
		return err
	}
	names, links, err := addVeths(h, t, n, prefix)
	if err != nil {
		return err
	}
	joined := make([]time.Time, n)
	wait := func(i int) error {
		select {
		case <-t.port(names[i]).onCh:
			return nil
		case <-time.After(5 * time.Second):
			return fmt.Errorf("%s: hairpin not on within 5s", names[i])
		}
	}
	add := func(i int) error {
		joined[i] = time.Now()
		return h.LinkSetMasterByIndex(links[i], br.Attrs().Index)
	}
	start := time.Now()
	switch mode {
	case "seq":
		for i := range n {
			if err := add(i); err != nil {
				return err
			}
			if err := wait(i); err != nil {
				return err
			}
		}
	case "burst":
		for i := range n {
			if err := add(i); err != nil {
				return err
			}
		}
		for i := range n {
			if err := wait(i); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("mode %q: use seq or burst", mode)
	}
	total := time.Since(start)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return fmt.Errorf("subscription: %w", t.err)
	}
	lat := make([]time.Duration, n)
	for i, name := range names {
		lat[i] = t.ports[name].on.Sub(joined[i])
	}
	// | mode | joins | p50 | p90 | p99 | max | wall time |
	fmt.Printf("| %s | %d | %s | %s | %s | %s | %s |\n", mode, n,
		ms(pct(lat, 50)), ms(pct(lat, 90)), ms(pct(lat, 99)), ms(pct(lat, 100)), ms(total))
	return nil
}

// track follows the bridge's ports from a subscription of its own, with a
// receive buffer large enough for a burst.
func track(ns netns.NsHandle, bridge int) (*tracker, error) {
	s, err := nl.SubscribeAt(ns, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
	if err != nil {
		return nil, err
	}
	if err := s.SetReceiveBufferSize(64<<20, true); err != nil {
		return nil, err
	}
	t := &tracker{bridge: bridge, ports: map[string]*portTimes{}}
	go t.read(s)
	return t, nil
}

// addVeths creates the n veth pairs beforehand, untimed, and has t follow
// their bridge ends.
func addVeths(h *netlink.Handle, t *tracker, n int, prefix string) ([]string, []netlink.Link, error) {
	names := make([]string, n)
	links := make([]netlink.Link, n)
	for i := range n {
		names[i] = fmt.Sprintf("%s%d", prefix, i)
		t.port(names[i])
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: names[i]}, PeerName: names[i] + "p"}
		if err := h.LinkAdd(v); err != nil {
			return nil, nil, err
		}
		links[i] = v
	}
	return names, links, nil
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.3f ms", float64(d.Microseconds())/1000)
}
