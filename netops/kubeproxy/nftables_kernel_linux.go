package kubeproxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/google/nftables/expr"
	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlattr"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlsock"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// kube-proxy's nftables mode is read from nf_tables over netlink, not from
// `nft list table`: the node's host and hairpinctl's image often have no
// nft, and nft needs seconds and over 100 MB for a table of 10,000
// Services that netlink dumps in tens of milliseconds. The dump is turned
// into the text nft would print, rule by rule and element by element (see
// nftables_render_linux.go), and fed to the same nftParser the text path
// uses: one reader of kube-proxy's shapes, one linker, and --raw in nft's
// own syntax.

// nftReadAttempts bounds the reads of a table kube-proxy keeps rewriting.
const nftReadAttempts = 3

// errNFTChanged: the ruleset's generation moved during a read.
var errNFTChanged = errors.New("nf_tables ruleset changed during the read")

// readNFTKernel reads table family kube-proxy from the kernel into a new
// parser. The ruleset's generation id (NFT_MSG_GETGEN) is read before and
// after: kube-proxy commits each sync as one transaction that bumps it,
// so an unchanged id means every dump saw the same ruleset. A read that
// straddles a commit is retried, and after nftReadAttempts reported, never
// linked: a half-written Service would look broken.
func readNFTKernel(c *netops.Client, family int, keepRaw bool) (*nftParser, error) {
	conn, err := openNetfilterConn(c.Target())
	if err != nil {
		return nil, nftError("open nf_tables netlink socket", err)
	}
	defer conn.Close()
	t, err := consistentSnapshot(conn, "nf_tables table "+nftFamilyName(family)+" kube-proxy", func() (*nftTableDump, error) {
		return dumpNFTTable(conn, family, "kube-proxy", true)
	})
	if err != nil {
		return nil, err
	}
	p := newNFTParser(family, keepRaw)
	if t != nil {
		t.feed(p)
	}
	return p, nil
}

// consistentRead runs read, which reports errNFTChanged when the ruleset's
// generation moved while it read (kube-proxy synced), again until it reads
// one snapshot, at most nftReadAttempts times; what names the table.
func consistentRead[T any](what string, read func() (T, error)) (T, error) {
	var zero T
	for attempt := 1; ; attempt++ {
		v, err := read()
		switch {
		case err == nil:
			return v, nil
		case !errors.Is(err, errNFTChanged):
			return zero, err
		case attempt == nftReadAttempts:
			return zero, fmt.Errorf("read %s: the rules kept changing during %d reads (kube-proxy syncing?): try again", what, attempt)
		}
	}
}

// consistentSnapshot is consistentRead for a read on conn: read runs
// between two generation ids, and a read they do not agree on, or whose
// dump the kernel flagged as interrupted, is made again.
func consistentSnapshot[T any](conn *nlsock.Conn, what string, read func() (T, error)) (T, error) {
	return consistentRead(what, func() (T, error) {
		var zero T
		gen, err := nftGenID(conn)
		if err != nil {
			return zero, err
		}
		v, err := read()
		if errors.Is(err, nlsock.ErrDumpInterrupted) {
			return zero, errNFTChanged
		}
		if err != nil {
			return zero, err
		}
		after, err := nftGenID(conn)
		if err != nil {
			return zero, err
		}
		if after != gen {
			return zero, errNFTChanged
		}
		return v, nil
	})
}

// nftGenID asks for the ruleset's generation id once no commit is under
// way (nftBarrier): reads are bracketed with it.
func nftGenID(conn *nlsock.Conn) (uint32, error) {
	if err := nftBarrier(conn); err != nil {
		return 0, err
	}
	req := conn.NewRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN, unix.NLM_F_ACK)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_UNSPEC, Version: unix.NFNETLINK_V0})
	var id uint32
	found := false
	err := req.Stream(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN, func(payload []byte) {
		if len(payload) < nl.SizeofNfgenmsg {
			return
		}
		nlattr.ForEach(payload[nl.SizeofNfgenmsg:], func(typ uint16, v []byte) {
			if typ == unix.NFTA_GEN_ID && len(v) == 4 {
				id, found = binary.BigEndian.Uint32(v), true
			}
		})
	})
	if err != nil {
		return 0, nftError("read nf_tables generation id", err)
	}
	if !found {
		return 0, fmt.Errorf("read nf_tables generation id: no id in the kernel's answer")
	}
	return id, nil
}

// nftDump runs one NFT_MSG_GET* dump and calls fn with each answer's
// attributes (copied: they outlive the receive buffer).
func nftDump(conn *nlsock.Conn, msg uint16, fam byte, attrs []*nl.RtAttr, fn func(attrs []byte)) error {
	req := conn.NewRequest(unix.NFNL_SUBSYS_NFTABLES<<8|int(msg), unix.NLM_F_DUMP)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: fam, Version: unix.NFNETLINK_V0})
	for _, a := range attrs {
		req.AddData(a)
	}
	// Each GET answers with the matching NEW message, one below it.
	return req.Stream(unix.NFNL_SUBSYS_NFTABLES<<8|(msg-1), func(payload []byte) {
		if len(payload) >= nl.SizeofNfgenmsg {
			fn(bytes.Clone(payload[nl.SizeofNfgenmsg:]))
		}
	})
}

// dumpNFTTable dumps table's chains, sets, the elements of the sets
// kube-proxy's shapes are read from, and, when all, every rule and every
// anonymous set's elements; nil when there is no such table.
func dumpNFTTable(conn *nlsock.Conn, family int, table string, all bool) (*nftTableDump, error) {
	fam := byte(nftFamily(family))
	t := &nftTableDump{fam: fam, family: family, table: table, sets: make(map[string]*nftSet)}
	where := nftFamilyName(family) + " " + table
	dumpErr := func(what string, err error) error {
		if errors.Is(err, nlsock.ErrDumpInterrupted) {
			return err
		}
		return nftError("dump nf_tables "+what+" of "+where, err)
	}
	found := false
	// The chain dump cannot be filtered by table in every kernel.
	err := nftDump(conn, unix.NFT_MSG_GETCHAIN, fam, nil, func(attrs []byte) {
		var tab, name string
		nlattr.ForEach(attrs, func(typ uint16, v []byte) {
			switch typ {
			case unix.NFTA_CHAIN_TABLE:
				tab = nlString(v)
			case unix.NFTA_CHAIN_NAME:
				name = nlString(v)
			}
		})
		if tab == table {
			found = true
			t.chains = append(t.chains, name)
		}
	})
	if err != nil {
		return nil, dumpErr("chains", err)
	}
	err = nftDump(conn, unix.NFT_MSG_GETSET, fam, []*nl.RtAttr{nl.NewRtAttr(unix.NFTA_SET_TABLE, nl.ZeroTerminated(table))}, func(attrs []byte) {
		s, err := decodeNFTSet(attrs)
		if err != nil {
			t.badSets++
			return
		}
		found = true
		t.sets[s.name] = s
		t.setOrder = append(t.setOrder, s.name)
	})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, dumpErr("sets", err)
	}
	if !found {
		// An empty table has no chains and no sets: nothing to read either.
		return nil, nil
	}
	for _, name := range t.setOrder {
		if err := t.loadElems(conn, name, !all); err != nil {
			return nil, err
		}
	}
	if !all {
		return t, nil
	}
	err = nftDump(conn, unix.NFT_MSG_GETRULE, fam, []*nl.RtAttr{nl.NewRtAttr(unix.NFTA_RULE_TABLE, nl.ZeroTerminated(table))}, func(attrs []byte) {
		t.rules = append(t.rules, attrs)
	})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, dumpErr("rules", err)
	}
	return t, nil
}

// loadElems dumps the elements of set name when nftParser reads them: the
// named sets of nftParsedSets and, unless namedOnly, every anonymous set
// (the maps rules look up inline). Affinity sets hold client addresses,
// nodeport-ips the node's: nothing kube-proxy's Services are read from.
func (t *nftTableDump) loadElems(conn *nlsock.Conn, name string, namedOnly bool) error {
	s := t.sets[name]
	if s == nil || s.loaded || !(nftParsedSets[name] || s.anonymous() && !namedOnly) {
		return nil
	}
	s.loaded = true
	err := nftDump(conn, unix.NFT_MSG_GETSETELEM, t.fam, []*nl.RtAttr{
		nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_TABLE, nl.ZeroTerminated(t.table)),
		nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_SET, nl.ZeroTerminated(name)),
	}, func(attrs []byte) {
		if err := s.addElems(attrs); err != nil {
			s.bad = true
		}
	})
	if err != nil && !errors.Is(err, nlsock.ErrDumpInterrupted) {
		err = nftError("dump nf_tables elements of set "+name+" of "+nftFamilyName(t.family)+" "+t.table, err)
	}
	return err
}

// nftParsedSets are the named sets and maps whose elements nftParser reads.
var nftParsedSets = map[string]bool{
	"cluster-ips": true, "hairpin-connections": true, "service-ips": true, "service-nodeports": true,
	"no-endpoint-services": true, "no-endpoint-nodeports": true, "firewall-ips": true,
}

// nlString is a NUL-terminated netlink string attribute.
func nlString(v []byte) string {
	if i := bytes.IndexByte(v, 0); i >= 0 {
		v = v[:i]
	}
	return string(v)
}

// readNFTKernelTargeted reads, for a filtered lookup, only what the
// selected Services need: the table's chains and sets, the elements of the
// maps Services are found in, the rules of the chains that are not a
// Service's own (the masquerade plumbing), and the selected Services'
// chains and the chains and anonymous maps they lead to. A table of
// 10,000 Services has 10,000 anonymous maps, and the kernel answers each
// map's elements in a request of its own (about 0.4 ms at that size), so
// the whole table takes seconds where one Service takes milliseconds. ok
// is false when it cannot serve the filter (a Service chain whose name
// lacks the Service's name, for a lookup by name); the caller reads the
// whole table then. Reads are checked against the generation id as
// readNFTKernel's are.
func readNFTKernelTargeted(c *netops.Client, family int, sel *serviceSelector, keepRaw bool) (*nftParser, bool, error) {
	conn, err := openNetfilterConn(c.Target())
	if err != nil {
		return nil, false, nftError("open nf_tables netlink socket", err)
	}
	defer conn.Close()
	type read struct {
		p  *nftParser
		ok bool
	}
	r, err := consistentSnapshot(conn, "nf_tables table "+nftFamilyName(family)+" kube-proxy", func() (read, error) {
		p := newNFTParser(family, keepRaw)
		ok, err := readNFTTargetedOnce(conn, family, "kube-proxy", p, sel)
		return read{p, ok}, err
	})
	return r.p, r.ok, err
}

// readNFTTargetedOnce is one attempt of readNFTKernelTargeted.
func readNFTTargetedOnce(conn *nlsock.Conn, family int, table string, p *nftParser, sel *serviceSelector) (bool, error) {
	t, err := dumpNFTTable(conn, family, table, false)
	if err != nil || t == nil {
		return true, err
	}
	t.feedHead(p)
	queue, ok := selectedNFTChains(t, p, sel)
	if !ok {
		return false, nil
	}
	exists := make(map[string]bool, len(t.chains))
	for _, ch := range t.chains {
		exists[ch] = true
	}
	seen := map[string]bool{}
	r := nftRenderer{t: t}
	for len(queue) > 0 {
		ch := queue[0]
		queue = queue[1:]
		if seen[ch] || !exists[ch] {
			continue
		}
		seen[ch] = true
		if len(seen) > maxTargetedChains {
			return false, nil
		}
		rules, err := dumpNFTChainRules(conn, t, family, table, ch)
		if err != nil {
			return false, err
		}
		for _, attrs := range rules {
			// The anonymous maps a rule looks up are rendered inline:
			// their elements first.
			if err := t.loadLookedUp(conn, attrs); err != nil {
				return false, err
			}
			chain, line, readable := r.rule(attrs)
			p.chain(chain)
			p.fileRule(chain, []byte(line), readable)
			// The chains it jumps or goes to, inline maps included.
			f := nftFields([]byte(line))
			for i := 0; i+1 < len(f); i++ {
				if (f[i] == "goto" || f[i] == "jump") && !seen[f[i+1]] {
					queue = append(queue, f[i+1])
				}
			}
		}
	}
	return true, nil
}

// selectedNFTChains are the chains a targeted read renders: the selected
// Services' chains, which share their name's base
// ("HASH-ns/name/proto/port") with the chains the maps send them to, and
// every chain that belongs to no Service. It is not ok when a map element
// leads to a chain with no name to match the selector against.
func selectedNFTChains(t *nftTableDump, p *nftParser, sel *serviceSelector) (queue []string, ok bool) {
	bases := map[string]bool{}
	for i := range p.elems {
		e := &p.elems[i]
		target := gotoTarget(e.verdict)
		switch nftChainKind(target) {
		case kindSvc, kindSvl, kindExt, kindFw:
		default:
			continue
		}
		svc := Service{ClusterIP: e.ip, Port: e.port, Protocol: strings.ToUpper(e.proto)}
		setName(&svc, nftServiceName(target))
		if svc.Name == "" && !sel.addrOnly() {
			return nil, false
		}
		if sel.peek(&svc) {
			bases[nftChainBase(target)] = true
		}
	}
	for _, ch := range t.chains {
		switch nftChainKind(ch) {
		case kindSvc, kindSvl, kindExt, kindFw:
			if bases[nftChainBase(ch)] {
				queue = append(queue, ch)
			}
		case kindSep:
		default:
			queue = append(queue, ch)
		}
	}
	return queue, true
}

// dumpNFTChainRules dumps the rules of one chain of table, as their
// attributes; a chain gone since the table was listed has none.
func dumpNFTChainRules(conn *nlsock.Conn, t *nftTableDump, family int, table, ch string) ([][]byte, error) {
	var rules [][]byte
	err := nftDump(conn, unix.NFT_MSG_GETRULE, t.fam, []*nl.RtAttr{
		nl.NewRtAttr(unix.NFTA_RULE_TABLE, nl.ZeroTerminated(table)),
		nl.NewRtAttr(unix.NFTA_RULE_CHAIN, nl.ZeroTerminated(ch)),
	}, func(attrs []byte) { rules = append(rules, attrs) })
	if err != nil && !errors.Is(err, unix.ENOENT) {
		if errors.Is(err, nlsock.ErrDumpInterrupted) {
			return nil, err
		}
		return nil, nftError("dump nf_tables rules of "+nftFamilyName(family)+" "+table+" "+ch, err)
	}
	return rules, nil
}

// loadLookedUp loads the elements of the sets and maps a rule looks up.
func (t *nftTableDump) loadLookedUp(conn *nlsock.Conn, attrs []byte) error {
	rule, err := locateRule(t.fam, attrs)
	if err != nil {
		return nil // the renderer files the rule as not understood
	}
	for _, x := range rule.exprs {
		var l expr.Lookup
		if string(x.name) == "lookup" && decodeNFTExpr(t.fam, x.data, &l) == nil {
			if err := t.loadElems(conn, l.SetName, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// nftChainBase is a Service chain's name after its prefix, shared by the
// Service port's chains: "service-ULMVA6XW-ns1/svc1/tcp/p80" →
// "ULMVA6XW-ns1/svc1/tcp/p80".
func nftChainBase(chain string) string {
	_, base, _ := strings.Cut(chain, "-")
	return base
}

// nftBarrier waits until no nf_tables transaction is being committed: it
// sends an empty batch, which the kernel runs under the same mutex as
// every commit, and commits nothing (no generation bump, no event). A
// commit moves the generation id only once it is well under way, so an
// unchanged id read while a commit is still changing the tables proves
// nothing; read after the barrier, it does.
func nftBarrier(conn *nlsock.Conn) error {
	seq := conn.NextSeq()
	msg := func(typ uint16, flags uint16) []byte {
		b := make([]byte, unix.NLMSG_HDRLEN+nl.SizeofNfgenmsg)
		h := (*unix.NlMsghdr)(unsafe.Pointer(&b[0]))
		h.Len, h.Type, h.Flags, h.Seq = uint32(len(b)), typ, flags, seq
		g := b[unix.NLMSG_HDRLEN:]
		g[0] = unix.AF_UNSPEC
		g[1] = unix.NFNETLINK_V0
		binary.BigEndian.PutUint16(g[2:], unix.NFNL_SUBSYS_NFTABLES)
		return b
	}
	b := append(msg(unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST), msg(unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST|unix.NLM_F_ACK)...)
	fd := conn.Fd()
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nftError("nf_tables barrier", err)
	}
	rb := conn.RecvBuf()
	deadline := time.Now().Add(nlsock.Timeout)
	for {
		msgs, err := conn.Recv(rb, deadline)
		if err != nil {
			return nftError("nf_tables barrier", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) >= 4 {
				if code := int32(nl.NativeEndian().Uint32(m.Data[:4])); code != 0 {
					return nftError("nf_tables barrier", syscall.Errno(-code))
				}
			}
			return nil
		}
	}
}
