package netops

import (
	"runtime"
	"sync"
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
// joins in once its veth dump is done. maxPeers bounds the namespaces that
// can be found (one per port). It returns port ifindex → peer and netnsid
// → (ifindex → addresses); a namespace whose dump failed is left out.
func (c *Client) podAddrs(bridges map[int]bool, maxPeers int) (map[int]vethPeer, map[int]map[int][]string, error) {
	d := &addrDumper{
		c:     c,
		todo:  make(chan int, maxPeers+1),
		seen:  map[int]bool{},
		byNs:  map[int]map[int][]string{},
		limit: min(runtime.GOMAXPROCS(0), podAddrWorkersMax),
	}
	peers := map[int]vethPeer{}
	var err error
	for br := range bridges {
		if err = c.dumpVethPeersOf(br, peers, d.add); err != nil {
			break
		}
	}
	close(d.todo)
	d.work(c.raw) // the caller's socket helps with what is left
	d.wg.Wait()
	if err != nil {
		return nil, nil, err
	}
	return peers, d.byNs, nil
}

// addrDumper reads the addresses of each pod namespace once, on a pool of
// sockets that grows with the number of namespaces seen.
type addrDumper struct {
	c     *Client
	todo  chan int // netnsids to read; sized so that sending never blocks
	seen  map[int]bool
	limit int // most extra sockets to open
	open  int // extra sockets opened so far
	wg    sync.WaitGroup
	mu    sync.Mutex
	byNs  map[int]map[int][]string
}

// add queues netnsid v.netnsID once, opening one more socket for every
// podAddrsPerWorker distinct namespaces, up to the limit.
func (d *addrDumper) add(v vethPeer) {
	if d.seen[v.netnsID] {
		return
	}
	d.seen[v.netnsID] = true
	d.todo <- v.netnsID
	if d.open < d.limit && len(d.seen) >= podAddrsPerWorker*(d.open+1) {
		conn, err := openRawConn(d.c.target(), 16<<10)
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
func (d *addrDumper) work(conn *rawConn) {
	for id := range d.todo {
		addrs, err := dumpAddrs(conn, id)
		if err != nil {
			continue // unknown here; the neighbour fallback may still tell
		}
		d.mu.Lock()
		d.byNs[id] = addrs
		d.mu.Unlock()
	}
}
