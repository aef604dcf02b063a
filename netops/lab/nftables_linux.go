package lab

import (
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// RestoreNFTables is the Options.Restore value that programs the Service
// the way kube-proxy's nftables mode (1.36 and later) does, over netlink:
// no iptables or nft binary is needed, so the lab works on any Linux with
// nf_tables.
const RestoreNFTables = "nftables"

// ipsDstNAT is the conntrack status bit IPS_DST_NAT: the connection was
// DNATed (nft's "ct status dnat").
const ipsDstNAT = 1 << 5

// programNFTables writes, in the node namespace, what kube-proxy 1.37's
// nftables mode writes for one ClusterIP Service with one endpoint:
//
//	table ip kube-proxy {
//	  set cluster-ips { type ipv4_addr; elements = { SVC } }
//	  set hairpin-connections { type ipv4_addr . ipv4_addr . inet_proto . inet_service; elements = { EP . EP . tcp . PORT } }
//	  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; elements = { SVC . tcp . 80 : goto service-… } }
//	  chain nat-prerouting { type nat hook prerouting priority dstnat; jump services }
//	  chain nat-output { type nat hook output priority -100; jump services }
//	  chain nat-postrouting { type nat hook postrouting priority srcnat; jump masquerading }
//	  chain services { ip daddr . meta l4proto . th dport vmap @service-ips }
//	  chain masquerading { ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections masquerade fully-random }
//	  chain service-… { meta l4proto tcp dnat to EP:PORT }
//	}
//
// The hairpin masquerade is the set: a pod's connection to itself through
// the Service is masqueraded, so the reply comes back through the node.
// It is long because it builds the table above object by object, in one
// netlink batch, the way the listing reads.
func (l *Lab) programNFTables() error {
	eps := l.endpointIPs()
	if len(eps) != 1 {
		return fmt.Errorf("lab: nftables mode over netlink programs one endpoint, not %d", len(eps))
	}
	ep := net.ParseIP(eps[0]).To4()
	svc := l.ServiceIP.To4()
	if ep == nil || svc == nil {
		return fmt.Errorf("lab: nftables mode over netlink is IPv4 only")
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(l.NodeNs)))
	if err != nil {
		return fmt.Errorf("lab: nf_tables in node: %w", err)
	}
	defer conn.CloseLasting()
	port := binaryutil.BigEndian.PutUint16(uint16(l.opts.ServicePort))
	target := binaryutil.BigEndian.PutUint16(uint16(l.opts.TargetPort))
	pad := func(b []byte) []byte { return append(b, make([]byte, 4-len(b)%4)[:(4-len(b)%4)%4]...) }
	tcp := pad([]byte{unix.IPPROTO_TCP})

	t := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "kube-proxy"})
	clusterIPs := &nftables.Set{Table: t, Name: "cluster-ips", KeyType: nftables.TypeIPAddr}
	if err := conn.AddSet(clusterIPs, []nftables.SetElement{{Key: svc}}); err != nil {
		return fmt.Errorf("lab: cluster-ips: %w", err)
	}
	hairpin := &nftables.Set{Table: t, Name: "hairpin-connections", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)}
	hpKey := append(append(append(append([]byte{}, ep...), ep...), tcp...), pad(target)...)
	if err := conn.AddSet(hairpin, []nftables.SetElement{{Key: hpKey}}); err != nil {
		return fmt.Errorf("lab: hairpin-connections: %w", err)
	}
	svcChainName := "service-" + chainHash(l.ServiceName + "tcp")[:8] + "-default/web/tcp/http"
	svcChain := conn.AddChain(&nftables.Chain{Table: t, Name: svcChainName})
	serviceIPs := &nftables.Set{Table: t, Name: "service-ips", IsMap: true, Concatenation: true,
		KeyType:  nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService),
		DataType: nftables.TypeVerdict}
	svcKey := append(append(append([]byte{}, svc...), tcp...), pad(port)...)
	if err := conn.AddSet(serviceIPs, []nftables.SetElement{{Key: svcKey,
		VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: svcChainName}}}); err != nil {
		return fmt.Errorf("lab: service-ips: %w", err)
	}
	services := conn.AddChain(&nftables.Chain{Table: t, Name: "services"})
	masquerading := conn.AddChain(&nftables.Chain{Table: t, Name: "masquerading"})
	outputPrio := nftables.ChainPriority(-100)
	for _, h := range []struct {
		name   string
		hook   *nftables.ChainHook
		prio   *nftables.ChainPriority
		jumpTo string
	}{
		{"nat-prerouting", nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest, "services"},
		{"nat-output", nftables.ChainHookOutput, &outputPrio, "services"},
		{"nat-postrouting", nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, "masquerading"},
	} {
		c := conn.AddChain(&nftables.Chain{Table: t, Name: h.name, Type: nftables.ChainTypeNAT, Hooknum: h.hook, Priority: h.prio})
		conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: h.jumpTo}}})
	}
	// ip daddr . meta l4proto . th dport vmap @service-ips
	conn.AddRule(&nftables.Rule{Table: t, Chain: services, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: serviceIPs.Name, SetID: serviceIPs.ID, IsDestRegSet: true, DestRegister: 0},
	}})
	// ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections masquerade fully-random
	conn.AddRule(&nftables.Rule{Table: t, Chain: masquerading, Exprs: []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 10},
		&expr.Payload{DestRegister: 11, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: hairpin.Name, SetID: hairpin.ID},
		&expr.Masq{FullyRandom: true},
	}})
	// meta l4proto tcp dnat to EP:PORT
	conn.AddRule(&nftables.Rule{Table: t, Chain: svcChain, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Immediate{Register: 1, Data: ep},
		&expr.Immediate{Register: 2, Data: target},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("lab: program nftables-mode rules: %w", err)
	}
	return nil
}
