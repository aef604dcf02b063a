package bridgeports

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlsock"
)

// podAddrWorkersMax bounds the extra sockets that read pod namespaces'
// addresses at once; podAddrsPerWorker is how many distinct namespaces
// justify opening one more.
const (
	podAddrWorkersMax = 4
	podAddrsPerWorker = 8
)

// The addresses of each pod are read with one RTM_GETADDR dump per pod
// namespace, addressed by netnsid (IFA_TARGET_NETNSID, Linux 4.20) from a
// socket of our own namespace: no setns, no namespace file needed, any
// namespace a veth reaches. The dumps are one round trip each, so they
// start while the link dump that finds the veth peers is still arriving
// (newAddrDumper, add) and run on up to podAddrWorkersMax extra sockets (no
// more than there are CPUs to run them); the caller's socket joins in once
// its link dump is done (finish).

// newAddrDumper returns a dumper whose queue holds expect namespaces;
// more (found while the caller's socket is busy) wait for the caller.
func newAddrDumper(c *netops.Client, expect int) *addrDumper {
	return &addrDumper{
		c:     c,
		todo:  make(chan int, expect+1),
		seen:  map[int]bool{},
		byNs:  map[int]map[int][]string{},
		limit: min(runtime.GOMAXPROCS(0), podAddrWorkersMax),
	}
}

// finish reads what is left on the caller's socket, waits for the pool
// and returns netnsid → (ifindex → addresses); a namespace whose dump
// failed is left out. With abandon (the link dump failed, maybe on a
// wedged socket) no more dumps start: their answers would be thrown away.
func (d *addrDumper) finish(abandon bool) map[int]map[int][]string {
	if abandon {
		d.stop.Store(true)
	}
	close(d.todo)
	d.work(d.c.RouteConn())
	for _, id := range d.overflow {
		d.dump(d.c.RouteConn(), id)
	}
	d.wg.Wait()
	return d.byNs
}

// addrDumper reads the addresses of each pod namespace once, on a pool of
// sockets that grows with the number of namespaces seen.
type addrDumper struct {
	c        *netops.Client
	todo     chan int // netnsids for the pool to read
	overflow []int    // netnsids that found todo full, read by the caller
	seen     map[int]bool
	limit    int // most extra sockets to open
	open     int // extra sockets opened so far
	stop     atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	byNs     map[int]map[int][]string
}

// add queues netnsid v.netnsID once, opening one more socket for every
// podAddrsPerWorker distinct namespaces, up to the limit. It never blocks:
// the pool may not have started yet, and the caller reads the queue only
// after its link dump.
func (d *addrDumper) add(v vethPeer) {
	if d.seen[v.netnsID] {
		return
	}
	d.seen[v.netnsID] = true
	select {
	case d.todo <- v.netnsID:
	default:
		d.overflow = append(d.overflow, v.netnsID)
	}
	if d.open < d.limit && len(d.seen) >= podAddrsPerWorker*(d.open+1) {
		conn, err := nlsock.OpenRoute(d.c.Target(), 16<<10)
		if err != nil {
			d.limit = d.open // cannot open more: the open ones and the caller's do the rest
			return
		}
		d.open++
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer conn.Close()
			d.work(conn)
		}()
	}
}

// work reads namespaces from todo on conn until it is closed and empty.
func (d *addrDumper) work(conn *nlsock.Conn) {
	for id := range d.todo {
		d.dump(conn, id)
	}
}

// dump reads one namespace's addresses on conn, unless stopped.
func (d *addrDumper) dump(conn *nlsock.Conn, id int) {
	if d.stop.Load() {
		return
	}
	addrs, err := dumpAddrs(conn, id)
	if err != nil {
		return // unknown here; the neighbour fallback may still tell
	}
	d.mu.Lock()
	d.byNs[id] = addrs
	d.mu.Unlock()
}
