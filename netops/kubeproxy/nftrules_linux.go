package kubeproxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlattr"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlsock"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nftRuleBufSize is the receive buffer of a rule dump. The kernel sizes
// each dump datagram by the reader's largest read (up to 32 KiB) and
// restarts the rule walk for every datagram: google/nftables reads through
// a page-sized peek, so 10,000 rules of one chain took it 420 ms; read
// whole at this size, they take about 60 ms.
const nftRuleBufSize = 64 << 10

// openNetfilterConn opens a NETLINK_NETFILTER socket in ns for rule dumps.
func openNetfilterConn(ns netns.NsHandle) (*nlsock.Conn, error) {
	return nlsock.OpenNetfilter(ns, nftRuleBufSize)
}

// nftRule is one rule of a dump, its expressions located but not decoded:
// google/nftables' decoders copy every attribute they visit, and decoding
// all 10,000 rules of a large KUBE-SERVICES costs more CPU than the dump
// itself, when a lookup needs a handful of them.
type nftRule struct {
	fam   byte
	exprs []nftRawExpr
	// userdata is NFTA_RULE_USERDATA: libnftnl's TLVs, where nft keeps a
	// rule's comment.
	userdata []byte
}

// nftRawExpr is an expression's name and its undecoded NFTA_EXPR_DATA.
type nftRawExpr struct {
	name []byte
	data []byte
}

// nftRules calls fn with each rule of one chain of an nf_tables table, in
// the chain's order, from ONE NFT_MSG_GETRULE dump read in large datagrams.
// fn runs on another goroutine than the reads, so the kernel builds the
// next datagram while fn looks at the last; a rule that cannot be walked,
// or a panic in fn, ends the calls and is returned. A missing table or
// chain has no rules.
func nftRules(c *netops.Client, family int, table, chain string, fn func(r nftRule)) error {
	conn, err := openNetfilterConn(c.Target())
	if err != nil {
		return nftError("open nf_tables netlink socket", err)
	}
	defer conn.Close()
	fam := byte(nftFamily(family))
	req := conn.NewRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETRULE, unix.NLM_F_DUMP)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: fam, Version: unix.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(unix.NFTA_RULE_TABLE, nl.ZeroTerminated(table)))
	req.AddData(nl.NewRtAttr(unix.NFTA_RULE_CHAIN, nl.ZeroTerminated(chain)))
	// Datagrams' rules are copied and handed over in batches.
	batches := make(chan [][]byte, 8)
	var ferr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for rules := range batches {
			if ferr == nil {
				ferr = eachRule(fam, rules, fn)
			}
			// After a failure the rest is drained, never left blocking
			// the reads.
		}
	}()
	var pending [][]byte
	err = req.Stream(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE, func(payload []byte) {
		if len(payload) >= nl.SizeofNfgenmsg {
			pending = append(pending, bytes.Clone(payload[nl.SizeofNfgenmsg:]))
		}
		if len(pending) >= 64 {
			batches <- pending
			pending = nil
		}
	})
	if len(pending) > 0 {
		batches <- pending
	}
	close(batches)
	<-done
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return nftError(fmt.Sprintf("dump nf_tables rules of %s %s %s", nftFamilyName(family), table, chain), err)
	}
	return ferr
}

// eachRule locates each rule's expressions and calls fn, turning a panic
// into an error.
func eachRule(fam byte, rules [][]byte, fn func(nftRule)) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("decode nf_tables rule: %v", p)
		}
	}()
	for _, attrs := range rules {
		r, err := locateRule(fam, attrs)
		if err != nil {
			return err
		}
		fn(r)
	}
	return nil
}

// locateRule finds a rule's userdata and expressions: NFTA_RULE_EXPRESSIONS
// → NFTA_LIST_ELEM → NFTA_EXPR_NAME, NFTA_EXPR_DATA.
func locateRule(fam byte, attrs []byte) (nftRule, error) {
	r := nftRule{fam: fam}
	for b := attrs; len(b) > 0; {
		typ, v, rest, ok := nlattr.Next(b)
		if !ok {
			return r, fmt.Errorf("decode nf_tables rule: %w", nlattr.ErrBad)
		}
		b = rest
		switch typ {
		case unix.NFTA_RULE_USERDATA:
			r.userdata = v
		case unix.NFTA_RULE_EXPRESSIONS:
			var err error
			if r.exprs, err = locateExprs(v); err != nil {
				return r, fmt.Errorf("decode nf_tables rule: %w", err)
			}
		}
	}
	return r, nil
}

// locateExprs splits an expression list into names and undecoded data.
func locateExprs(list []byte) ([]nftRawExpr, error) {
	out := make([]nftRawExpr, 0, 12)
	for len(list) > 0 {
		_, elem, rest, ok := nlattr.Next(list)
		if !ok {
			return nil, nlattr.ErrBad
		}
		list = rest
		var e nftRawExpr
		err := nlattr.Walk(elem, func(typ uint16, v []byte) bool {
			switch typ {
			case unix.NFTA_EXPR_NAME:
				e.name = bytes.TrimRight(v, "\x00")
			case unix.NFTA_EXPR_DATA:
				e.data = v
			}
			return true
		})
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// decode decodes every expression with google/nftables; one of a kind it
// has no use for here is nil in its place, so a caller can tell the rule
// holds something it cannot read.
func (r nftRule) decode() ([]expr.Any, error) {
	out := make([]expr.Any, len(r.exprs))
	for i, e := range r.exprs {
		var err error
		if out[i], err = decodeExpr(r.fam, e.name, e.data); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// verdict decodes only the rule's last expression: its jump, goto or
// built-in verdict; nil when the rule ends otherwise.
func (r nftRule) verdict() (*expr.Verdict, error) {
	if len(r.exprs) == 0 {
		return nil, nil
	}
	last := r.exprs[len(r.exprs)-1]
	e, err := decodeExpr(r.fam, last.name, last.data)
	v, _ := e.(*expr.Verdict)
	return v, err
}

// holds reports whether any of the rule's expressions holds b in its
// data: a cheap first look before decoding, which may say yes wrongly but
// never no.
func (r nftRule) holds(b []byte) bool {
	return slices.ContainsFunc(r.exprs, func(e nftRawExpr) bool { return bytes.Contains(e.data, b) })
}

// userdataComment reports whether the rule's userdata holds a comment
// (NFTNL_UDATA_RULE_COMMENT, type 0 in libnftnl's type-length-value list):
// nft writes comments there, and iptables prints them as "-m comment".
// Userdata it cannot walk counts as a comment.
func (r nftRule) userdataComment() bool {
	for b := r.userdata; len(b) > 0; {
		if len(b) < 2 || 2+int(b[1]) > len(b) || b[0] == 0 {
			return true
		}
		b = b[2+int(b[1]):]
	}
	return false
}

// decodeExpr decodes one expression of the kinds iptables-nft writes for
// kube-proxy's rules; any other kind is nil.
func decodeExpr(fam byte, name []byte, data []byte) (expr.Any, error) {
	var e expr.Any
	switch string(name) {
	case "meta":
		e = &expr.Meta{}
	case "payload":
		e = &expr.Payload{}
	case "cmp":
		e = &expr.Cmp{}
	case "bitwise":
		e = &expr.Bitwise{}
	case "counter":
		e = &expr.Counter{}
	case "match", "target":
		return decodeXT(string(name), data)
	case "immediate":
		e = &expr.Immediate{}
	default:
		return nil, nil
	}
	if err := expr.Unmarshal(fam, data, e); err != nil {
		return nil, fmt.Errorf("decode nf_tables %s expression: %w", name, err)
	}
	// A verdict is an immediate into the verdict register; google/nftables
	// decodes it as such only when asked for a Verdict.
	if imm, ok := e.(*expr.Immediate); ok && imm.Register == unix.NFT_REG_VERDICT && len(imm.Data) == 0 {
		v := &expr.Verdict{}
		if err := expr.Unmarshal(fam, data, v); err != nil {
			return nil, fmt.Errorf("decode nf_tables verdict: %w", err)
		}
		e = v
	}
	return e, nil
}

// decodeXT reads a compat match or target's name, revision and info
// (NFTA_MATCH_* and NFTA_TARGET_* number alike) and keeps the info as the
// kernel's struct, undecoded (an *xt.Unknown): google/nftables decodes a
// few kinds, some with sizes of its own host's C types; the renderer reads
// the structs itself.
func decodeXT(kind string, data []byte) (expr.Any, error) {
	var name string
	var rev uint32
	info := xt.Unknown{}
	err := nlattr.Walk(data, func(typ uint16, v []byte) bool {
		switch typ {
		case unix.NFTA_MATCH_NAME:
			name = nlString(v)
		case unix.NFTA_MATCH_REV:
			if len(v) == 4 {
				rev = binary.BigEndian.Uint32(v)
			}
		case unix.NFTA_MATCH_INFO:
			info = xt.Unknown(v)
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("decode nf_tables %s expression: %w", kind, err)
	}
	if kind == "match" {
		return &expr.Match{Name: name, Rev: rev, Info: &info}, nil
	}
	return &expr.Target{Name: name, Rev: rev, Info: &info}, nil
}
