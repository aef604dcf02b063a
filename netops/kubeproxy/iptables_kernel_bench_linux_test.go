package kubeproxy

import (
	"sync/atomic"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlsock"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// iptBareDump is the floor of readIPTablesNFTKernel: the generation id
// twice, the chain list, and every nat chain's rules dumped chain by chain
// on as many sockets as the read uses (iptNFTReaders), nothing decoded but
// the chain names. It returns the bytes the kernel sent.
func iptBareDump(c *netops.Client, family int) (int, error) {
	conns := make([]*nlsock.Conn, iptNFTReaders)
	for i := range conns {
		conn, err := openNetfilterConn(c.Target())
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		conns[i] = conn
	}
	if _, err := nftGenID(conns[0]); err != nil {
		return 0, err
	}
	chains, err := iptNFTChains(conns[0], family, "nat")
	if err != nil {
		return 0, err
	}
	var total atomic.Int64
	var next atomic.Int64
	errs := make(chan error, len(conns))
	for _, conn := range conns {
		go func() {
			var err error
			for i := int(next.Add(1)) - 1; i < len(chains) && err == nil; i = int(next.Add(1)) - 1 {
				err = nftDump(conn, unix.NFT_MSG_GETRULE, byte(nftFamily(family)), []*nl.RtAttr{
					nl.NewRtAttr(unix.NFTA_RULE_TABLE, nl.ZeroTerminated("nat")),
					nl.NewRtAttr(unix.NFTA_RULE_CHAIN, nl.ZeroTerminated(chains[i].name)),
				}, func(attrs []byte) { total.Add(int64(len(attrs))) })
			}
			errs <- err
		}()
	}
	for range conns {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return 0, err
	}
	_, err = nftGenID(conns[0])
	return int(total.Load()), err
}

// BenchmarkIPTablesNFTKernel compares the netlink read of iptables-nft's
// nat table (dump, render, parse, link) of IPT_BENCH_SERVICES (10,000)
// Services × 5 endpoints with the bare chain-by-chain dump on as many
// sockets, its floor:
//
//	go test -run '^$' -bench IPTablesNFTKernel -benchtime 5x ./netops
func BenchmarkIPTablesNFTKernel(b *testing.B) {
	benchNetlinkRead(b, "IPT_BENCH_SERVICES", "hpiptb",
		func(l *lab.Lab, n int) error {
			_, err := l.Exec(kubeProxyText(n, 5, 0), "iptables-nft-restore")
			return err
		},
		func(c *netops.Client) (int, error) { return iptBareDump(c, 4) },
		func(c *netops.Client) (*Result, error) {
			p, err := readIPTablesNFTKernel(c, 4, false)
			if err != nil {
				return nil, err
			}
			res := newServicesResult(BackendIPTablesNFT)
			p.into(res, nil)
			return res, nil
		})
}
