package netops

import (
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// iptBareDump is the floor of readIPTablesNFTKernel: the generation id
// twice, the chain list and every nat chain's rules dumped chain by chain,
// nothing decoded but the chain names. It returns the bytes the kernel
// sent.
func iptBareDump(c *Client, family int) (int, error) {
	conn, err := openNetfilterConn(c.target())
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if _, err := nftGenID(conn); err != nil {
		return 0, err
	}
	chains, err := iptNFTChains(conn, family, "nat")
	if err != nil {
		return 0, err
	}
	total := 0
	for _, ch := range chains {
		err := nftDump(conn, unix.NFT_MSG_GETRULE, byte(nftFamily(family)), []*nl.RtAttr{
			nl.NewRtAttr(unix.NFTA_RULE_TABLE, nl.ZeroTerminated("nat")),
			nl.NewRtAttr(unix.NFTA_RULE_CHAIN, nl.ZeroTerminated(ch.name)),
		}, func(attrs []byte) { total += len(attrs) })
		if err != nil {
			return 0, err
		}
	}
	_, err = nftGenID(conn)
	return total, err
}

// BenchmarkIPTablesNFTKernel compares the netlink read of iptables-nft's
// nat table (dump, render, parse, link) of IPT_BENCH_SERVICES (10,000)
// Services × 5 endpoints with the bare chain-by-chain dump, its floor:
//
//	go test -run '^$' -bench IPTablesNFTKernel -benchtime 5x ./netops
func BenchmarkIPTablesNFTKernel(b *testing.B) {
	benchNetlinkRead(b, "IPT_BENCH_SERVICES", "hpiptb",
		func(l *lab.Lab, n int) error {
			_, err := l.Exec(kubeProxyText(n, 5, 0), "iptables-nft-restore")
			return err
		},
		func(c *Client) (int, error) { return iptBareDump(c, 4) },
		func(c *Client) (*ServicesResult, error) {
			p, err := c.readIPTablesNFTKernel(4, false)
			if err != nil {
				return nil, err
			}
			res := newServicesResult(BackendIPTablesNFT)
			p.into(res, nil)
			return res, nil
		})
}
