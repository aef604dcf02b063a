package kubeproxy

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlattr"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// kube137Table is kube-proxy 1.37's nftables table for n Services of e
// endpoints each, all on this node, in the shape of the lab's goldens:
// one service chain per Service DNATing through an anonymous numgen map,
// the hairpin-connections set, cluster-ips, service-ips.
func kube137Table(n, e int) string {
	var b strings.Builder
	T := "ip kube-proxy"
	fmt.Fprintf(&b, "add table %s { comment \"rules for kube-proxy\" ; }\n", T)
	fmt.Fprintf(&b, "add set %s hairpin-connections { type ipv4_addr . ipv4_addr . inet_proto . inet_service ; }\n", T)
	fmt.Fprintf(&b, "add set %s cluster-ips { type ipv4_addr ; }\n", T)
	fmt.Fprintf(&b, "add map %s service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }\n", T)
	for _, c := range []string{"nat-prerouting { type nat hook prerouting priority dstnat ; }", "nat-output { type nat hook output priority -100 ; }",
		"nat-postrouting { type nat hook postrouting priority srcnat ; }", "services", "masquerading"} {
		fmt.Fprintf(&b, "add chain %s %s\n", T, c)
	}
	for _, r := range []string{"nat-prerouting jump services", "nat-output jump services", "nat-postrouting jump masquerading",
		"services ip daddr @cluster-ips ip saddr != 10.244.0.0/16 meta mark set meta mark | 0x4000",
		"services ip daddr . meta l4proto . th dport vmap @service-ips",
		"masquerading meta mark & 0x4000 != 0 meta mark set meta mark ^ 0x4000 masquerade fully-random",
		"masquerading ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections masquerade fully-random"} {
		fmt.Fprintf(&b, "add rule %s %s\n", T, r)
	}
	for i := range n {
		ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
		chain := fmt.Sprintf("service-%08X-ns%d/svc%d/tcp/http", i, i%100, i)
		chain = strings.NewReplacer("0", "A", "1", "B", "8", "C", "9", "D").Replace(chain[:16]) + chain[16:]
		var m []string
		for j := range e {
			k := i*e + j
			ep := fmt.Sprintf("10.%d.%d.%d", 128+k/62500, k/250%250, k%250+1)
			m = append(m, fmt.Sprintf("%d : %s . 8080", j, ep))
			fmt.Fprintf(&b, "add element %s hairpin-connections { %s . %s . tcp . 8080 }\n", T, ep, ep)
		}
		fmt.Fprintf(&b, "add chain %s %s\n", T, chain)
		fmt.Fprintf(&b, "add rule %s %s meta l4proto tcp dnat ip to numgen random mod %d map { %s }\n", T, chain, e, strings.Join(m, ", "))
		fmt.Fprintf(&b, "add element %s cluster-ips { %s }\n", T, ip)
		fmt.Fprintf(&b, "add element %s service-ips { %s . tcp . 80 : goto %s }\n", T, ip, chain)
	}
	return b.String()
}

// nftBareDump is the floor a netlink reader of the table cannot beat: the
// generation id twice, and the dumps of chains, sets, the elements of the
// sets readNFTKernel reads, and rules, with nothing decoded but the set
// names. It returns the bytes the kernel sent.
func nftBareDump(c *netops.Client, family int, table string) (int, error) {
	conn, err := openNetfilterConn(c.Target())
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	fam := byte(nftFamily(family))
	total := 0
	dump := func(msg uint16, attrs []*nl.RtAttr, fn func([]byte)) error {
		req := conn.NewRequest(unix.NFNL_SUBSYS_NFTABLES<<8|int(msg), unix.NLM_F_DUMP)
		req.AddData(&nl.Nfgenmsg{NfgenFamily: fam, Version: unix.NFNETLINK_V0})
		for _, a := range attrs {
			req.AddData(a)
		}
		return req.Stream(unix.NFNL_SUBSYS_NFTABLES<<8|(msg-1), func(p []byte) {
			total += len(p)
			if fn != nil {
				fn(p)
			}
		})
	}
	if _, err := nftGenID(conn); err != nil {
		return 0, err
	}
	if err := dump(unix.NFT_MSG_GETCHAIN, nil, nil); err != nil {
		return 0, err
	}
	var sets []string
	if err := dump(unix.NFT_MSG_GETSET, []*nl.RtAttr{nl.NewRtAttr(unix.NFTA_SET_TABLE, nl.ZeroTerminated(table))}, func(p []byte) {
		var name string
		var flags uint32
		nlattr.ForEach(p[nl.SizeofNfgenmsg:], func(typ uint16, v []byte) {
			switch typ {
			case unix.NFTA_SET_NAME:
				name = nlString(v)
			case unix.NFTA_SET_FLAGS:
				flags = uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
			}
		})
		if flags&unix.NFT_SET_ANONYMOUS != 0 || nftParsedSets[name] {
			sets = append(sets, name)
		}
	}); err != nil {
		return 0, err
	}
	for _, s := range sets {
		if err := dump(unix.NFT_MSG_GETSETELEM, []*nl.RtAttr{
			nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_TABLE, nl.ZeroTerminated(table)),
			nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_SET, nl.ZeroTerminated(s)),
		}, nil); err != nil {
			return 0, err
		}
	}
	if err := dump(unix.NFT_MSG_GETRULE, []*nl.RtAttr{nl.NewRtAttr(unix.NFTA_RULE_TABLE, nl.ZeroTerminated(table))}, nil); err != nil {
		return 0, err
	}
	_, err = nftGenID(conn)
	return total, err
}

// BenchmarkNFTKernel compares the whole netlink read (dump, render, parse,
// link) of kube-proxy 1.37's table of NFT_BENCH_SERVICES (10,000)
// Services × 5 endpoints with the bare dump, its floor:
//
//	go test -run '^$' -bench NFTKernel -benchtime 20x ./netops
func BenchmarkNFTKernel(b *testing.B) {
	benchNetlinkRead(b, "NFT_BENCH_SERVICES", "hpnftb",
		func(l *lab.Lab, n int) error { _, err := l.Exec(kube137Table(n, 5), "nft", "-f", "-"); return err },
		func(c *netops.Client) (int, error) { return nftBareDump(c, 4, "kube-proxy") },
		func(c *netops.Client) (*Result, error) {
			p, err := readNFTKernel(c, 4, false)
			if err != nil {
				return nil, err
			}
			res := newServicesResult(BackendNFTables)
			p.into(res, nil)
			return res, nil
		})
}

// benchNetlinkRead loads a table of N (env, default 10,000) Services × 5
// endpoints into a lab node and benchmarks a whole read against bare, the
// dump without decoding that is its floor.
func benchNetlinkRead(b *testing.B, env, prefix string, load func(*lab.Lab, int) error,
	bare func(*netops.Client) (int, error), read func(*netops.Client) (*Result, error)) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv(env)); err == nil {
		n = v
	}
	l := labtest.New(b, lab.Options{Pods: 1, Restore: "none", Prefix: prefix})
	if err := load(l, n); err != nil {
		b.Fatal(err)
	}
	c, err := netops.Open(l.Node)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	b.Run("bare-dump", func(b *testing.B) {
		for b.Loop() {
			bytes, err := bare(c)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(bytes)/1e6, "MB/op")
		}
	})
	b.Run("services", func(b *testing.B) {
		for b.Loop() {
			res, err := read(c)
			if err != nil {
				b.Fatal(err)
			}
			if len(res.Services) != n || res.Unparsed != 0 {
				b.Fatalf("%d services, %d unparsed", len(res.Services), res.Unparsed)
			}
		}
	})
}
