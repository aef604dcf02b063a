package probe

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/hairpinctl/hairpinctl/netops"
	"golang.org/x/sys/unix"
)

// tablePrefix starts the name of the probe's bridge table; the PID
// namespace's inode and the process ID follow ("hairpinctl-probe-
// 4026531836-4242"), so a table left by a probe killed with SIGKILL is
// known as stale by the next probe in the same PID namespace and removed.
// A table of another PID namespace (a probe in a container without the
// host's PIDs) is never taken for stale: its PID means nothing here.
const tablePrefix = "hairpinctl-probe-"

// tableName is this process's table name.
func tableName() string {
	return tablePrefix + pidNamespace() + "-" + strconv.Itoa(os.Getpid())
}

// pidNamespace is the inode of this process's PID namespace, or "0" when
// it cannot be read (then no table is ever judged stale).
func pidNamespace() string {
	l, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return "0"
	}
	ino, ok := strings.CutPrefix(l, "pid:[")
	if ino, ok2 := strings.CutSuffix(ino, "]"); ok && ok2 {
		return ino
	}
	return "0"
}

// trace is a temporary nf_tables table of family bridge in the node
// namespace that records which of the probe's source ports the bridge
// received from the pod's port, which came out of the IP prerouting hooks
// br_netfilter runs inside the bridge's prerouting (priority 0: a chain at
// priority 1 sees the address kube-proxy's DNAT wrote) and to which
// address, which the bridge forwarded (and to which port), and which it
// passed up to the node. A frame the bridge drops because it would leave
// by the port it came in on (hairpin off) comes out of prerouting
// addressed to the pod itself and never reaches forward or input: the
// sets show the drop itself, not a symptom. A frame a firewall drops in
// IP prerouting never comes out of it: that is not the hairpin.
// Each set is a dynamic set of source ports the rules add to (dynset): a
// SYN sent again from the same port adds nothing new, so a port balanced
// to the pod itself and never sent back out of its port was dropped at
// least once, whatever its resent SYN did.
type trace struct {
	conn  *nftables.Conn
	table *nftables.Table
	sets  map[string]*nftables.Set
}

// Sets of the trace: the probe's source ports, and what the bridge did.
const (
	setProbe     = "probe"
	setEntered   = "entered"
	setBalanced  = "balanced"
	setSelf      = "self"
	setForwarded = "forwarded"
	setHairpin   = "hairpinned"
	setDelivered = "delivered"
)

// startTrace adds the table. Everything it adds is one table: removing
// the table removes it all.
func startTrace(c *netops.Client, port string, src netip.Addr, proto uint8, sports []uint16) (*trace, error) {
	// The socket is bound to the node namespace by its handle, the
	// caller's own included: one code path for --netns and without.
	conn, err := nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(int(c.Netns())))
	if err != nil {
		return nil, fmt.Errorf("nf_tables netlink socket: %w", err)
	}
	t := &trace{conn: conn, sets: map[string]*nftables.Set{}}
	removeStale(conn)
	t.table = conn.AddTable(&nftables.Table{Family: nftables.TableFamilyBridge, Name: tableName()})
	probe := &nftables.Set{Table: t.table, Name: setProbe, KeyType: nftables.TypeInetService, Constant: true}
	var elems []nftables.SetElement
	for _, p := range sports {
		elems = append(elems, nftables.SetElement{Key: binary.BigEndian.AppendUint16(nil, p)})
	}
	if err := conn.AddSet(probe, elems); err != nil {
		t.close()
		return nil, fmt.Errorf("trace set: %w", err)
	}
	t.sets[setProbe] = probe
	for _, name := range []string{setEntered, setBalanced, setSelf, setForwarded, setHairpin, setDelivered} {
		s := &nftables.Set{Table: t.table, Name: name, KeyType: nftables.TypeInetService, Dynamic: true}
		if err := conn.AddSet(s, nil); err != nil {
			t.close()
			return nil, fmt.Errorf("trace set: %w", err)
		}
		t.sets[name] = s
	}
	filter := nftables.ChainTypeFilter
	prio := nftables.ChainPriority(-200)
	zero := nftables.ChainPriority(0)
	one := nftables.ChainPriority(1)
	pre := conn.AddChain(&nftables.Chain{Table: t.table, Name: "entered", Type: filter, Hooknum: nftables.ChainHookPrerouting, Priority: &prio})
	bal := conn.AddChain(&nftables.Chain{Table: t.table, Name: "balanced", Type: filter, Hooknum: nftables.ChainHookPrerouting, Priority: &one})
	fwd := conn.AddChain(&nftables.Chain{Table: t.table, Name: "forwarded", Type: filter, Hooknum: nftables.ChainHookForward, Priority: &zero})
	in := conn.AddChain(&nftables.Chain{Table: t.table, Name: "delivered", Type: filter, Hooknum: nftables.ChainHookInput, Priority: &zero})
	match := probeMatch(port, src, proto)
	rule := func(ch *nftables.Chain, set string, extra ...expr.Any) {
		ex := append(append([]expr.Any{}, match...), extra...)
		ex = append(ex,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: setProbe, SetID: probe.ID},
			&expr.Dynset{SrcRegKey: 1, SetName: set, SetID: t.sets[set].ID, Operation: unix.NFT_DYNSET_OP_ADD},
		)
		conn.AddRule(&nftables.Rule{Table: t.table, Chain: ch, Exprs: ex})
	}
	rule(pre, setEntered)
	rule(bal, setBalanced)
	rule(bal, setSelf, daddrIs(src)...)
	rule(fwd, setForwarded)
	rule(fwd, setHairpin, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(port)})
	rule(in, setDelivered)
	if err := conn.Flush(); err != nil {
		t.close()
		return nil, fmt.Errorf("add bridge table %s: %w", t.table.Name, err)
	}
	return t, nil
}

// probeMatch matches the probe's packets from the pod: in by its port,
// from its address, of its protocol.
func probeMatch(port string, src netip.Addr, proto uint8) []expr.Any {
	ethType, off := []byte{0x08, 0x00}, uint32(12)
	if src.Is6() {
		ethType, off = []byte{0x86, 0xdd}, 8
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(port)},
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ethType},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(src.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// daddrIs matches packets addressed to a (the IP header's destination).
func daddrIs(a netip.Addr) []expr.Any {
	off := uint32(16)
	if a.Is6() {
		off = 24
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(a.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
	}
}

// ifname is an interface name as nf_tables compares it: NUL-padded to
// IFNAMSIZ.
func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

// removeStale deletes probe tables of this PID namespace whose process is
// gone: a probe killed by SIGKILL cannot remove its own.
func removeStale(conn *nftables.Conn) {
	ns := pidNamespace()
	if ns == "0" {
		return
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return
	}
	n := 0
	for _, t := range tables {
		pid, ok := strings.CutPrefix(t.Name, tablePrefix+ns+"-")
		if !ok {
			continue
		}
		if _, err := strconv.Atoi(pid); err != nil {
			continue
		}
		if _, err := os.Stat("/proc/" + pid); err == nil {
			continue
		}
		conn.DelTable(t)
		n++
	}
	if n > 0 {
		_ = conn.Flush()
	}
}

// portVerdict is what the bridge did with one source port's frames.
type portVerdict struct {
	verdict string
	self    bool
}

// read returns what the bridge did with each source port's frames, and
// which ports it sent back out of the pod's own port.
func (t *trace) read() (map[uint16]portVerdict, map[uint16]bool, error) {
	get := func(name string) (map[uint16]bool, error) {
		els, err := t.conn.GetSetElements(t.sets[name])
		if err != nil {
			return nil, fmt.Errorf("read trace set %s: %w", name, err)
		}
		m := map[uint16]bool{}
		for _, e := range els {
			if len(e.Key) >= 2 {
				m[binary.BigEndian.Uint16(e.Key)] = true
			}
		}
		return m, nil
	}
	sets := map[string]map[uint16]bool{}
	for _, n := range []string{setEntered, setBalanced, setSelf, setForwarded, setHairpin, setDelivered} {
		m, err := get(n)
		if err != nil {
			return nil, nil, err
		}
		sets[n] = m
	}
	out := map[uint16]portVerdict{}
	for p := range sets[setEntered] {
		out[p] = portVerdict{verdict: judge(p, sets), self: sets[setSelf][p]}
	}
	return out, sets[setHairpin], nil
}

// judge says what the bridge did with one port's frames. A frame balanced
// to the pod itself can leave only by the pod's own port: when none did,
// one was dropped, whatever a resent SYN did after it.
func judge(p uint16, sets map[string]map[uint16]bool) string {
	switch {
	case sets[setSelf][p] && !sets[setHairpin][p] && !sets[setDelivered][p]:
		return BridgeDropped
	case sets[setForwarded][p]:
		return BridgeForwarded
	case sets[setDelivered][p]:
		return BridgeDelivered
	case !sets[setBalanced][p]:
		return BridgeDroppedEarly
	}
	return BridgeLost
}

// record reads what the bridge did with each connection of r into it
// (port is the pod's), then removes the table. A trace that cannot be read
// leaves r untraced, with the reason.
func (t *trace) record(r *Report, port string) error {
	verdicts, hairpinned, err := t.read()
	if err != nil {
		r.Facts.Traced = false
		r.Facts.TraceError = err.Error()
	} else {
		for i := range r.Connections {
			cn := &r.Connections[i]
			v := verdicts[cn.SrcPort]
			cn.Bridge, cn.BalancedToSelf = v.verdict, v.self
			if cn.Bridge == "" {
				cn.Bridge = BridgeUnseen
			}
			if hairpinned[cn.SrcPort] {
				cn.OutPort = port
			}
		}
	}
	return t.close()
}

// close removes the table and closes the socket; later calls do nothing.
func (t *trace) close() error {
	if t.conn == nil {
		return nil
	}
	var err error
	if t.table != nil {
		t.conn.DelTable(t.table)
		if ferr := t.conn.Flush(); ferr != nil && !strings.Contains(ferr.Error(), unix.ENOENT.Error()) {
			err = fmt.Errorf("remove bridge table %s: %w", t.table.Name, ferr)
		}
		t.table = nil
	}
	_ = t.conn.CloseLasting()
	t.conn = nil
	return err
}
