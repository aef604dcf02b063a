package netops

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

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
func (c *Client) readNFTKernel(family int, keepRaw bool) (*nftParser, error) {
	conn, err := openNetfilterConn(c.target())
	if err != nil {
		return nil, nftError("open nf_tables netlink socket", err)
	}
	defer conn.Close()
	return consistentRead("nf_tables table "+nftFamilyName(family)+" kube-proxy", func() (*nftParser, error) {
		p := newNFTParser(family, keepRaw)
		return p, readNFTTable(conn, family, "kube-proxy", p)
	})
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

// readNFTTable reads one consistent snapshot of table into p; errNFTChanged
// when the ruleset changed meanwhile.
func readNFTTable(conn *rawConn, family int, table string, p *nftParser) error {
	gen, err := nftGenID(conn)
	if err != nil {
		return err
	}
	t, err := dumpNFTTable(conn, family, table)
	if errors.Is(err, errDumpInterrupted) {
		return errNFTChanged
	}
	if err != nil {
		return err
	}
	after, err := nftGenID(conn)
	if err != nil {
		return err
	}
	if after != gen {
		return errNFTChanged
	}
	if t != nil {
		t.feed(p)
	}
	return nil
}

// nftGenID asks for the ruleset's generation id.
func nftGenID(conn *rawConn) (uint32, error) {
	req := conn.newRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN, unix.NLM_F_ACK)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_UNSPEC, Version: unix.NFNETLINK_V0})
	var id uint32
	found := false
	err := req.Stream(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN, func(payload []byte) {
		if len(payload) < nl.SizeofNfgenmsg {
			return
		}
		forEachAttr(payload[nl.SizeofNfgenmsg:], func(typ uint16, v []byte) {
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
func nftDump(conn *rawConn, msg uint16, fam byte, attrs []*nl.RtAttr, fn func(attrs []byte)) error {
	req := conn.newRequest(unix.NFNL_SUBSYS_NFTABLES<<8|int(msg), unix.NLM_F_DUMP)
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
// kube-proxy's shapes are read from, and rules; nil when there is no such
// table.
func dumpNFTTable(conn *rawConn, family int, table string) (*nftTableDump, error) {
	fam := byte(nftFamily(family))
	t := &nftTableDump{fam: fam, family: family, table: table, sets: make(map[string]*nftSet)}
	where := nftFamilyName(family) + " " + table
	dumpErr := func(what string, err error) error {
		if errors.Is(err, errDumpInterrupted) {
			return err
		}
		return nftError("dump nf_tables "+what+" of "+where, err)
	}
	found := false
	// The chain dump cannot be filtered by table in every kernel.
	err := nftDump(conn, unix.NFT_MSG_GETCHAIN, fam, nil, func(attrs []byte) {
		var tab, name string
		forEachAttr(attrs, func(typ uint16, v []byte) {
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
		s := t.sets[name]
		if !s.anonymous() && !nftParsedSets[name] {
			// Affinity sets hold client addresses, nodeport-ips the
			// node's: nothing kube-proxy's Services are read from.
			continue
		}
		err := nftDump(conn, unix.NFT_MSG_GETSETELEM, fam, []*nl.RtAttr{
			nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_TABLE, nl.ZeroTerminated(table)),
			nl.NewRtAttr(unix.NFTA_SET_ELEM_LIST_SET, nl.ZeroTerminated(name)),
		}, func(attrs []byte) {
			if err := s.addElems(attrs); err != nil {
				s.bad = true
			}
		})
		if err != nil {
			return nil, dumpErr("elements of set "+name, err)
		}
	}
	err = nftDump(conn, unix.NFT_MSG_GETRULE, fam, []*nl.RtAttr{nl.NewRtAttr(unix.NFTA_RULE_TABLE, nl.ZeroTerminated(table))}, func(attrs []byte) {
		t.rules = append(t.rules, attrs)
	})
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, dumpErr("rules", err)
	}
	return t, nil
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
