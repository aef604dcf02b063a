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

// podAddrs finds the pod behind every veth port of bridges and reads its
// addresses: one veth dump per bridge gives each peer's netnsid, and one
// RTM_GETADDR dump per pod namespace, addressed by netnsid
// (IFA_TARGET_NETNSID, Linux 4.20) from a socket of our own namespace, gives
// its addresses: no setns, no namespace file needed, any namespace the veth
// reaches. The address dumps are one round trip each, so they start while
// the veth dump is still arriving and run on up to podAddrWorkersMax extra
// sockets (no more than there are CPUs to run them); the caller's socket
// joins in once its veth dump is done. expect is how many namespaces
// there probably are (one per port listed); more (pods started meanwhile)
// are read too. It returns port ifindex → peer and netnsid → (ifindex →
// addresses); a namespace whose dump failed is left out.
func podAddrs(c *netops.Client, bridges map[int]bool, expect int) (map[int]vethPeer, map[int]map[int][]string, error) {
	d := &addrDumper{
		c:     c,
		todo:  make(chan int, expect+1),
		seen:  map[int]bool{},
		byNs:  map[int]map[int][]string{},
		limit: min(runtime.GOMAXPROCS(0), podAddrWorkersMax),
	}
	peers := map[int]vethPeer{}
	var err error
	for br := range bridges {
		if err = dumpVethPeersOf(c, br, peers, d.add); err != nil {
			break
		}
	}
	if err != nil {
		// The veth dump failed, maybe on a wedged socket: do not start
		// more dumps whose answers would be thrown away.
		d.stop.Store(true)
	}
	close(d.todo)
	d.work(c.RouteConn()) // the caller's socket helps with what is left
	for _, id := range d.overflow {
		d.dump(c.RouteConn(), id)
	}
	d.wg.Wait()
	if err != nil {
		return nil, nil, err
	}
	return peers, d.byNs, nil
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
// after its veth dump.
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
