package netops

import (
	"os"
	"strconv"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
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
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("IPT_BENCH_SERVICES")); err == nil {
		n = v
	}
	l := labtest.New(b, lab.Options{Pods: 1, Restore: "none", Prefix: "hpiptb"})
	if _, err := l.Exec(kubeProxyText(n, 5, 0), "iptables-nft-restore"); err != nil {
		b.Fatal(err)
	}
	c, err := Open(l.Node)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	b.Run("bare-dump", func(b *testing.B) {
		for b.Loop() {
			bytes, err := iptBareDump(c, 4)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(bytes)/1e6, "MB/op")
		}
	})
	b.Run("services", func(b *testing.B) {
		for b.Loop() {
			p, err := c.readIPTablesNFTKernel(4, false)
			if err != nil {
				b.Fatal(err)
			}
			res := newServicesResult(BackendIPTablesNFT)
			p.into(res, nil)
			if len(res.Services) != n || res.Unparsed != 0 {
				b.Fatalf("%d services, %d unparsed", len(res.Services), res.Unparsed)
			}
		}
	})
}
