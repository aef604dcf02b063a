package commands

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/pods"
	"github.com/urfave/cli/v2"
)

// livePodsRetry is how long a long-running command waits before it lists
// the ports again for a port or address whose pod it does not know: a new
// pod's port joins the bridge before the runtime records the pod.
const livePodsRetry = time.Second

// livePodsGrace is how long a pod IP of a port that nothing names is
// asked about again (every livePodsRetry): the time a runtime takes to
// record a pod after its port joined. After it the IP stays unnamed until
// a link changes, so a node whose pods nothing names (no libcni cache, no
// runtime) is not listed again every second for as long as it runs.
const livePodsGrace = 5 * time.Second

// livePods names pods for a long-running command (watch, conntrack): the
// bridge ports are listed with their pods once, then again only when a
// link was added or removed since (netops.LinkChanges: a pod gone, its IP
// free for the next) or when a line needs a port or pod IP whose pod is
// not known (at most once every livePodsRetry), not on every line. A port
// the runtime did not name is not asked about again, and a runtime that
// failed is not asked again: a silent socket costs its timeout once. Each
// warning is said once.
type livePods struct {
	c       *cli.Context
	cl      *netops.Client
	changed <-chan struct{}
	// retry is the least time between two listings for a name not known.
	retry time.Duration
	// dirty: a link changed since the last listing.
	dirty bool
	// listedAt is when the ports were last listed (zero: never).
	listedAt time.Time
	byIndex  map[int]*pods.Pod
	byIP     map[netip.Addr]*pods.Pod
	// ipPort holds the pod IPs of the last listing's ports: an address
	// that is none of them is no pod of this node's bridges until a link
	// changes.
	ipPort map[netip.Addr]bool
	// unnamedSince is when each of ipPort's addresses was first looked
	// up without a name since the last link change.
	unnamedSince map[netip.Addr]time.Time
	asked        map[int]bool
	noCRI        bool
	warned       map[string]bool
}

// newLivePods follows the namespace's links until done is closed. When
// it cannot, every look that needs a name lists again (at most once every
// livePodsRetry). It lists the ports on a client of its own: a netlink
// handle answers one request at a time, and the command's own client is
// busy in another goroutine (watch's). Close releases it.
func newLivePods(c *cli.Context, done <-chan struct{}) *livePods {
	p := &livePods{c: c, retry: livePodsRetry, asked: map[int]bool{}, warned: map[string]bool{}, unnamedSince: map[netip.Addr]time.Time{}}
	cl, err := openClient(c)
	if err != nil {
		p.warn(fmt.Sprintf("%v: pod names unknown", err))
		return p
	}
	p.cl = cl
	ch, err := cl.LinkChanges(done)
	if err != nil {
		p.warn(fmt.Sprintf("follow link changes: %v: pod names are looked up again every %s", err, livePodsRetry))
	}
	p.changed = ch
	return p
}

// Close releases the client.
func (p *livePods) Close() {
	if p.cl != nil {
		p.cl.Close()
	}
}

func (p *livePods) warn(msg string) {
	if p.warned[msg] {
		return
	}
	p.warned[msg] = true
	fmt.Fprintf(p.c.App.ErrWriter, "hairpinctl: %s: %s\n", p.c.Command.Name, termSafeText(msg))
}

// look says whether the ports must be listed again before a lookup whose
// pod is known (named) or not. A name by address is looked up again
// after any link change (the address may be another pod's now); a name
// by ifindex is not: an ifindex is not given again while the kernel runs
// for long, and a port's pod does not change.
func (p *livePods) look(named, byIndex bool) bool {
	if p.changed == nil {
		p.dirty = true
	} else {
		select {
		case _, ok := <-p.changed:
			p.dirty = true
			if !ok {
				p.changed = nil
			}
		default:
		}
	}
	switch {
	case p.listedAt.IsZero():
		return true
	case byIndex:
		return !named && time.Since(p.listedAt) >= p.retry
	case p.dirty && (p.changed != nil || time.Since(p.listedAt) >= p.retry):
		return true
	case !named:
		return time.Since(p.listedAt) >= p.retry
	}
	return false
}

// relist lists the ports with their pods, asking the runtime about the
// ports it was not asked about before.
func (p *livePods) relist() {
	if p.dirty {
		// A new port: its pod IP, or an old one's, may be named soon.
		clear(p.unnamedSince)
	}
	p.dirty = false
	p.listedAt = time.Now()
	if p.cl == nil {
		return
	}
	o := podOptions(p.c)
	o.Warn = p.warn
	o.Unnamed = func(ports []bridgeports.Port) {
		if p.noCRI {
			return
		}
		var fresh []bridgeports.Port
		var at []int
		for i, pt := range ports {
			if !p.asked[pt.Index] {
				fresh = append(fresh, pt)
				at = append(at, i)
			}
		}
		if err := askRuntime(p.c, p.cl, fresh); err != nil {
			p.noCRI = true
			p.warn(err.Error() + " (not asked again)")
			return
		}
		for j, i := range at {
			// A port without its pod's IPs yet (a pod coming up) was
			// not asked about: the runtime names a pod by its IP.
			if len(fresh[j].PodIPs) > 0 {
				p.asked[fresh[j].Index] = true
			}
			ports[i].Pod = fresh[j].Pod
		}
	}
	ports, err := bridgeports.List(p.cl, bridgeports.ListOptions{Pods: o})
	if err != nil {
		p.warn(fmt.Sprintf("list bridge ports: %v: pod names unknown until it works", err))
		return
	}
	p.byIndex = make(map[int]*pods.Pod, len(ports))
	p.ipPort = map[netip.Addr]bool{}
	for _, pt := range ports {
		p.byIndex[pt.Index] = pt.Pod
		for _, s := range pt.PodIPs {
			if a, err := netip.ParseAddr(s); err == nil {
				p.ipPort[a.Unmap()] = true
			}
		}
	}
	p.byIP = bridgeports.PodsByIP(ports)
}

// port is the pod behind the port with ifindex idx, nil when not known.
func (p *livePods) port(idx int) *pods.Pod {
	pod := p.byIndex[idx]
	if p.look(pod != nil, true) {
		p.relist()
		pod = p.byIndex[idx]
	}
	return pod
}

// ip is the pod holding address a on this node, nil when not known.
func (p *livePods) ip(a netip.Addr) *pods.Pod {
	a = a.Unmap()
	pod := p.byIP[a]
	// An address of no port stays no pod's until a link changes, and so
	// does a port's address nothing named within livePodsGrace.
	known := pod != nil || (!p.listedAt.IsZero() && !p.ipPort[a])
	if !known && !p.listedAt.IsZero() {
		if first, ok := p.unnamedSince[a]; !ok {
			p.unnamedSince[a] = time.Now()
		} else if time.Since(first) >= livePodsGrace {
			known = true
		}
	}
	if p.look(known, false) {
		p.relist()
		pod = p.byIP[a]
	}
	return pod
}
