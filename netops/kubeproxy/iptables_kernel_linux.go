package kubeproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlattr"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlsock"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// iptables-nft keeps its tables in nf_tables (table ip nat, ip6 nat, ...),
// so its backend is read from the kernel over netlink, not by running
// iptables-nft-save: kube-proxy's DaemonSet image and many hosts have no
// iptables binary. Each rule is rendered as iptables-save prints it (see
// iptables_render_linux.go) and fed to the same iptParser the text path
// uses: one reader of kube-proxy's shapes, one linker, and --raw in
// iptables' own syntax.
//
// Rules are dumped chain by chain, as iptables-nft itself does: a rule
// dump of a whole table makes the kernel walk every chain of the table
// again for each datagram it fills, quadratic in the table's 60,000 chains
// for 10,000 Services.

// iptNFTReaders is how many netlink sockets dump chains at once. Each
// chain's dump is a request and two answers, about 35 µs of system calls
// whatever its size, so 60,000 chains take two seconds on one socket; the
// kernel serves the sockets in parallel, as many as there are cores.
var iptNFTReaders = min(runtime.NumCPU(), 4)

// iptNFTBatch is how many consecutive chains a reader dumps in one go.
const iptNFTBatch = 256

// readIPTablesNFTKernel reads iptables-nft's nat table of family, and the
// filter table's KUBE-SERVICES and KUBE-EXTERNAL-SERVICES ("has no
// endpoints" REJECTs), into a new parser. As for nftables mode
// (readNFTKernel), the generation id is read before and after and a read
// that straddles a commit is retried, at most nftReadAttempts times.
func readIPTablesNFTKernel(c *netops.Client, family int, keepRaw bool) (*iptParser, error) {
	conns := make([]*nlsock.Conn, iptNFTReaders)
	for i := range conns {
		conn, err := openNetfilterConn(c.Target())
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return nil, nftError("open nf_tables netlink socket", err)
		}
		conns[i] = conn
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	return consistentSnapshot(conns[0], "iptables-nft table "+nftFamilyName(family)+" nat", func() (*iptParser, error) {
		p := newIPTParser(family, keepRaw)
		return p, readIPTNFTOnce(conns, family, p)
	})
}

// readIPTNFTOnce reads the table into p; errNFTChanged when a dump saw the
// ruleset change (consistentSnapshot checks the generation around it).
// The readers dump batches of chains; p gets them in the chains' order,
// as iptables-save prints them.
func readIPTNFTOnce(conns []*nlsock.Conn, family int, p *iptParser) error {
	conn := conns[0]
	chains, err := iptNFTChains(conn, family, "nat")
	if err != nil {
		return err
	}
	p.feedLines("nat", []string{"*nat"})
	decl := make([]string, 0, len(chains))
	for _, ch := range chains {
		decl = append(decl, ":"+ch.name+" "+ch.policy+" [0:0]")
	}
	p.feedLines("nat", decl)

	type batch struct {
		chains []chainRules
		err    error
	}
	nb := (len(chains) + iptNFTBatch - 1) / iptNFTBatch
	results := make([]chan batch, nb)
	for i := range results {
		results[i] = make(chan batch, 1)
	}
	var next atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// On an early return the readers finish their batch and stop before
	// the sockets serve another attempt.
	defer wg.Wait()
	defer close(stop)
	// A reader takes the next batch only while fewer than 2 per reader
	// wait to be fed, so memory stays bounded.
	window := make(chan struct{}, 2*len(conns))
	for _, rc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case window <- struct{}{}:
				case <-stop:
					return
				}
				i := int(next.Add(1)) - 1
				if i >= nb {
					return
				}
				part := chains[i*iptNFTBatch : min((i+1)*iptNFTBatch, len(chains))]
				var b batch
				for _, ch := range part {
					cr, err := dumpIPTNFTChain(rc, family, "nat", ch.name)
					if err != nil {
						b.err = err
						break
					}
					b.chains = append(b.chains, cr)
				}
				results[i] <- b
			}
		}()
	}
	for i := range results {
		b := <-results[i]
		<-window
		if b.err != nil {
			return b.err
		}
		for _, cr := range b.chains {
			cr.feed(p, "nat")
		}
	}
	p.feedLines("nat", []string{"COMMIT"})
	for _, ch := range []string{"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"} {
		cr, err := dumpIPTNFTChain(conn, family, "filter", ch)
		if err != nil {
			return err
		}
		cr.feed(p, "filter")
	}
	return nil
}

// iptNFTChain is a chain of an iptables-nft table and its policy as
// iptables-save prints it ("-" for a user-defined chain).
type iptNFTChain struct {
	name, policy string
	hook         int
}

// iptNFTChains lists table's chains in iptables-save's order: the built-in
// (base) chains by hook, then the others by name.
func iptNFTChains(conn *nlsock.Conn, family int, table string) ([]iptNFTChain, error) {
	var chains []iptNFTChain
	err := nftDump(conn, unix.NFT_MSG_GETCHAIN, byte(nftFamily(family)), nil, func(attrs []byte) {
		ch := iptNFTChain{policy: "-", hook: -1}
		var tab string
		nlattr.ForEach(attrs, func(typ uint16, v []byte) {
			switch typ {
			case unix.NFTA_CHAIN_TABLE:
				tab = nlString(v)
			case unix.NFTA_CHAIN_NAME:
				ch.name = nlString(v)
			case unix.NFTA_CHAIN_HOOK:
				nlattr.ForEach(v, func(t uint16, hv []byte) {
					if t == unix.NFTA_HOOK_HOOKNUM && len(hv) == 4 {
						ch.hook = int(binary.BigEndian.Uint32(hv))
					}
				})
			case unix.NFTA_CHAIN_POLICY:
				if len(v) == 4 && binary.BigEndian.Uint32(v) == 0 { // NF_DROP
					ch.policy = "DROP"
				} else {
					ch.policy = "ACCEPT"
				}
			}
		})
		if tab == table {
			if ch.hook >= 0 && ch.policy == "-" {
				ch.policy = "ACCEPT"
			}
			chains = append(chains, ch)
		}
	})
	if errors.Is(err, nlsock.ErrDumpInterrupted) {
		return nil, errNFTChanged
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, nftError(fmt.Sprintf("dump nf_tables chains of %s %s", nftFamilyName(family), table), err)
	}
	slices.SortFunc(chains, func(a, b iptNFTChain) int {
		switch {
		case a.hook >= 0 && b.hook >= 0:
			return a.hook - b.hook
		case a.hook >= 0:
			return -1
		case b.hook >= 0:
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	return chains, nil
}

// chainRules is one chain's rules as lines of iptables-save.
type chainRules struct {
	chain      string
	lines      []string
	unrendered int
}

// dumpIPTNFTChain dumps one chain's rules and renders them as lines of
// iptables-save. A rule the renderer cannot render becomes a line that
// names its expressions, which the parser keeps and counts as not
// understood: never dropped, never rendered wrong.
func dumpIPTNFTChain(conn *nlsock.Conn, family int, table, chain string) (chainRules, error) {
	fam := byte(nftFamily(family))
	cr := chainRules{chain: chain}
	req := conn.NewRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETRULE, unix.NLM_F_DUMP)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: fam, Version: unix.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(unix.NFTA_RULE_TABLE, nl.ZeroTerminated(table)))
	req.AddData(nl.NewRtAttr(unix.NFTA_RULE_CHAIN, nl.ZeroTerminated(chain)))
	// Each rule is rendered as it arrives: nothing of the receive buffer
	// is kept, so nothing is copied.
	err := req.Stream(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE, func(payload []byte) {
		if len(payload) < nl.SizeofNfgenmsg {
			return
		}
		l, ok := renderIPTNFTRule(fam, family, chain, payload[nl.SizeofNfgenmsg:])
		if !ok {
			cr.unrendered++
		}
		cr.lines = append(cr.lines, l)
	})
	switch {
	case errors.Is(err, nlsock.ErrDumpInterrupted):
		return cr, errNFTChanged
	case errors.Is(err, unix.ENOENT):
		// A chain removed since the chain list was read changed the
		// generation too; a filter chain that does not exist is empty.
		return cr, nil
	case err != nil:
		return cr, nftError(fmt.Sprintf("dump nf_tables rules of %s %s %s", nftFamilyName(family), table, chain), err)
	}
	return cr, nil
}

// feed hands the chain's lines to p.
func (cr chainRules) feed(p *iptParser, table string) {
	p.feedLines(table, cr.lines)
	if k := classifyChain(cr.chain); cr.unrendered > 0 && (k == kindBuiltin || k == kindQuiet || k == kindForeign) {
		// The parser passes over these chains' rules; one it could not
		// see is still counted and kept.
		p.unparsed += cr.unrendered
		if p.keepRaw {
			for _, l := range cr.lines {
				if strings.Contains(l, unrenderedMark) {
					p.foreignUnknown = append(p.foreignUnknown, "*"+table+" "+l)
				}
			}
		}
	}
}

// renderIPTNFTRule renders one dumped rule, or when it cannot, a line the
// parser keeps as not understood.
func renderIPTNFTRule(fam byte, family int, chain string, attrs []byte) (line string, rendered bool) {
	r, err := locateRule(fam, attrs)
	if err == nil {
		rr, ok := func() (rr renderedRule, ok bool) {
			defer func() {
				if recover() != nil {
					ok = false
				}
			}()
			return renderNFTRule(family, chain, r)
		}()
		if ok {
			return rr.line, true
		}
	}
	names := make([]string, len(r.exprs))
	for i, e := range r.exprs {
		names[i] = string(e.name)
	}
	return "-A " + chain + " " + unrenderedMark + " [" + strings.Join(names, " ") + "]", false
}

// unrenderedMark starts what stands for a rule hairpinctl cannot render.
const unrenderedMark = "--hairpinctl-cannot-render-nf_tables-rule"
