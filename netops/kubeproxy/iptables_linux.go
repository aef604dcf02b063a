package kubeproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/internal/nlsock"
)

// iptBackend names the binaries of one iptables backend and family.
type iptBackend struct {
	backend Backend
	family  int
	// cmd is the iptables command go-iptables runs for single-chain
	// reads ("iptables-nft", "ip6tables-legacy", ...); save dumps tables.
	cmd, save string
}

func iptablesFor(b Backend, family int) iptBackend {
	mode := "nft"
	if b == BackendIPTablesLegacy {
		mode = "legacy"
	}
	base := "iptables"
	if family == 6 {
		base = "ip6tables"
	}
	return iptBackend{backend: b, family: family, cmd: base + "-" + mode, save: base + "-" + mode + "-save"}
}

// saveBinary finds the -save binary, falling back to the plain
// iptables-save when it is of the same backend (some distributions ship
// only the alternatives-managed name).
func (ib iptBackend) saveBinary() (string, error) {
	if p, err := exec.LookPath(ib.save); err == nil {
		return p, nil
	}
	plain := "iptables-save"
	if ib.family == 6 {
		plain = "ip6tables-save"
	}
	if p, err := exec.LookPath(plain); err == nil {
		out, _ := exec.Command(p, "--version").Output()
		isNFT := bytes.Contains(out, []byte("nf_tables"))
		if isNFT == (ib.backend == BackendIPTablesNFT) {
			return p, nil
		}
	}
	return "", ib.missing(ib.save)
}

func (ib iptBackend) missing(bin string) error {
	return fmt.Errorf("%s not found in PATH: install the iptables package (it has both the nft and legacy backends), or pick another --backend", bin)
}

// golang returns a go-iptables handle for single-chain reads: it finds the
// binary and adds --wait, so a held xtables lock is waited for a bounded
// time (iptables-legacy takes the lock even to list; iptables-nft does not
// need it).
func (ib iptBackend) golang(waitSeconds int) (*iptables.IPTables, error) {
	if _, err := exec.LookPath(ib.cmd); err != nil {
		return nil, ib.missing(ib.cmd)
	}
	proto := iptables.ProtocolIPv4
	if ib.family == 6 {
		proto = iptables.ProtocolIPv6
	}
	// go-iptables' Timeout(0) means "wait forever"; never ask for that.
	ipt, err := iptables.New(iptables.Path(ib.cmd), iptables.IPFamily(proto), iptables.Timeout(max(waitSeconds, 1)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ib.cmd, err)
	}
	return ipt, nil
}

// listChain reads one chain with `iptables -t table -S chain --wait N` in
// the client's namespace; a missing chain is empty.
func listChain(c *netops.Client, ib iptBackend, ipt *iptables.IPTables, table, chain string, waitSeconds int) ([]string, error) {
	var lines []string
	err := c.Do(func() error {
		var err error
		lines, err = ipt.List(table, chain)
		return err
	})
	var ie *iptables.Error
	if errors.As(err, &ie) {
		switch {
		case ie.IsNotExist():
			return nil, nil
		case ib.backend == BackendIPTablesNFT && strings.Contains(ie.Error(), "is incompatible") && !nftChainPresent(c, ib.family, table, chain):
			// iptables-nft 1.8.9 calls a chain that does not exist
			// "incompatible" when the table holds one it cannot list.
			return nil, nil
		case ie.ExitStatus() == 4 && strings.Contains(ie.Error(), "xtables lock"):
			return nil, netops.Errorf(netops.ErrTimeout, "%s: another process holds the xtables lock (%s); gave up after %ds: retry, or raise --wait", ib.cmd, xtablesLockPath(), max(waitSeconds, 1))
		case strings.Contains(ie.Error(), "Permission denied"):
			return nil, netops.Errorf(netops.ErrPermission, "%s: permission denied: run as root", ib.cmd)
		}
		return nil, fmt.Errorf("%s -t %s -S %s: %s", ib.cmd, table, chain, strings.TrimSpace(firstLine(ie.Error())))
	}
	return lines, err
}

func xtablesLockPath() string {
	if p := os.Getenv("XTABLES_LOCKFILE"); p != "" {
		return p
	}
	return "/run/xtables.lock"
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		// go-iptables appends stderr; its last line says why.
		return s[i+1:]
	}
	return s
}

// streamSave runs `<backend>-save -t table` in the client's namespace and
// hands its stdout to read as it is produced; saves take no xtables lock.
func streamSave(c *netops.Client, ib iptBackend, table string, read func(io.Reader) error) error {
	bin, err := ib.saveBinary()
	if err != nil {
		return err
	}
	stderr, werr, rerr := streamCmd(c, bin, []string{"-t", table}, read)
	if werr != nil {
		if isStartError(werr) {
			return fmt.Errorf("%s: %w", ib.save, werr)
		}
		if strings.Contains(stderr, "Permission denied") {
			return netops.Errorf(netops.ErrPermission, "%s: permission denied: run as root", ib.save)
		}
		return fmt.Errorf("%s -t %s: %v: %s", ib.save, table, werr, firstLine(stderr))
	}
	if rerr != nil {
		return fmt.Errorf("read %s output: %w", ib.save, rerr)
	}
	return nil
}

// startError is streamCmd's failure to start the binary at all; it reads
// as the error it wraps.
type startError struct{ err error }

func (e startError) Error() string { return e.err.Error() }
func (e startError) Unwrap() error { return e.err }

func isStartError(err error) bool { return errors.As(err, new(startError)) }

// streamCmd runs bin with args in the client's namespace and hands its
// stdout to read as it arrives. Whatever read leaves unread (it failed, or
// stopped early) is drained so the child is not left blocked on a full
// pipe. It returns the child's stderr, the error of starting or waiting
// for it (a startError when it did not start), and read's error.
func streamCmd(c *netops.Client, bin string, args []string, read func(io.Reader) error) (stderr string, waitErr, readErr error) {
	cmd := exec.Command(bin, args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", startError{err}, nil
	}
	if err := c.Do(cmd.Start); err != nil {
		return "", startError{err}, nil
	}
	readErr = read(out)
	_, _ = io.Copy(io.Discard, out)
	waitErr = cmd.Wait()
	return strings.TrimSpace(errb.String()), waitErr, readErr
}

// readIPTablesFull dumps the nat table with ONE iptables-save and parses it
// as it streams, then feeds the filter table's REJECTs ("has no
// endpoints"), read meanwhile by another process: with -S of the two
// chains on iptables-nft (a filter dump there would list the whole
// ruleset), with a filter save on iptables-legacy (saves take no lock; the
// table is small).
func readIPTablesFull(c *netops.Client, ib iptBackend, p *iptParser, probe *famProbe, waitSeconds int) error {
	var (
		started    bool
		filterDone = make(chan struct{})
		flines     []string
		ftext      []byte
		ferr       error
		legacyF    = ib.backend == BackendIPTablesLegacy && probe.legacyFilter
		nftF       = ib.backend == BackendIPTablesNFT && probe.nftFilter
	)
	startFilter := func() {
		if started || !legacyF && !nftF {
			return
		}
		started = true
		go func() {
			defer close(filterDone)
			if legacyF {
				ferr = streamSave(c, ib, "filter", func(r io.Reader) error {
					var err error
					ftext, err = io.ReadAll(r)
					return err
				})
				return
			}
			ipt, err := ib.golang(waitSeconds)
			if err != nil {
				ferr = err
				return
			}
			for _, ch := range []string{"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"} {
				l, err := listChain(c, ib, ipt, "filter", ch, waitSeconds)
				if err != nil {
					ferr = err
					return
				}
				flines = append(flines, l...)
			}
		}()
	}
	read := func(r io.Reader) error {
		if legacyF {
			// iptables-legacy copies a table out of the kernel under the
			// family's xtables mutex, and a filter save started alongside
			// spins on that mutex for as long as the nat copy takes. The
			// nat save prints only once its copy is done: start the filter
			// save then.
			r = &onFirstRead{r: r, fn: startFilter}
		}
		return p.feed(r)
	}
	if !legacyF {
		startFilter()
	}
	err := streamSave(c, ib, "nat", read)
	if err == nil {
		startFilter() // the nat save printed nothing at all
	}
	if started {
		<-filterDone
	}
	if err != nil {
		return err
	}
	if ferr != nil {
		return ferr
	}
	if ftext != nil {
		_ = p.feed(bytes.NewReader(ftext))
	}
	p.feedLines("filter", flines)
	return nil
}

// onFirstRead calls fn once, when the first bytes arrive from r.
type onFirstRead struct {
	r  io.Reader
	fn func()
}

func (o *onFirstRead) Read(b []byte) (int, error) {
	n, err := o.r.Read(b)
	if n > 0 && o.fn != nil {
		o.fn()
		o.fn = nil
	}
	return n, err
}

// maxTargetedChains bounds a targeted read; beyond it a full dump is cheaper.
const maxTargetedChains = 2000

// readIPTablesTargeted reads, for a filtered lookup on iptables-nft, only
// the chains the lookup needs, over netlink: KUBE-SERVICES, then the
// selected services' chains and their endpoint chains. Listing one chain
// costs tens of microseconds; reading the table of 10,000 services costs
// seconds. ok is false when it cannot serve the filter (names without
// comments to find them by, or too many chains), and the caller reads the
// whole table instead. Like the full read, it checks the generation id
// before and after and retries a read that straddles a commit.
func readIPTablesTargeted(c *netops.Client, family int, probe *famProbe, sel *serviceSelector, keepRaw bool) (*iptParser, bool, error) {
	conn, err := openNetfilterConn(c.Target())
	if err != nil {
		return nil, false, nftError("open nf_tables netlink socket", err)
	}
	defer conn.Close()
	type read struct {
		p  *iptParser
		ok bool
	}
	r, err := consistentSnapshot(conn, "iptables-nft table "+nftFamilyName(family)+" nat", func() (read, error) {
		p := newIPTParser(family, keepRaw)
		ok, err := readIPTNFTTargetedOnce(c, conn, family, p, probe, sel)
		return read{p, ok}, err
	})
	return r.p, r.ok, err
}

// readIPTNFTTargetedOnce is one attempt of readIPTablesTargeted.
func readIPTNFTTargetedOnce(c *netops.Client, conn *nlsock.Conn, family int, p *iptParser, probe *famProbe, sel *serviceSelector) (bool, error) {
	list := func(chains ...[2]string) error {
		for _, tc := range chains {
			cr, err := dumpIPTNFTChain(conn, family, tc[0], tc[1])
			if err != nil {
				return err
			}
			cr.feed(p, tc[0])
		}
		return nil
	}
	first := [][2]string{{"nat", "KUBE-NODEPORTS"}, {"nat", "KUBE-MARK-MASQ"}, {"nat", "KUBE-POSTROUTING"}, {"nat", "POSTROUTING"}}
	if probe.nftFilter {
		first = append(first, [2]string{"filter", "KUBE-SERVICES"}, [2]string{"filter", "KUBE-EXTERNAL-SERVICES"})
	}
	if err := feedKubeServicesNFT(c, conn, family, p, probe, sel); err != nil {
		return false, err
	}
	if err := list(first...); err != nil {
		return false, err
	}
	queue, ok := selectedChains(p, sel)
	if !ok {
		return false, nil
	}
	seen := map[string]bool{}
	for len(queue) > 0 {
		var level []string
		for _, ch := range queue {
			if !seen[ch] {
				seen[ch] = true
				level = append(level, ch)
			}
		}
		if len(seen) > maxTargetedChains {
			return false, nil
		}
		if len(level) == 0 {
			break
		}
		pairs := make([][2]string, len(level))
		for i, ch := range level {
			pairs[i] = [2]string{"nat", ch}
		}
		if err := list(pairs...); err != nil {
			return false, err
		}
		queue = queue[:0]
		for _, ch := range level {
			cc := p.chains[ch]
			if cc == nil {
				continue
			}
			queue = append(queue, cc.links...)
			for _, h := range cc.hops {
				queue = append(queue, h.ep.name)
			}
		}
	}
	return true, nil
}

// feedKubeServicesNFT feeds p KUBE-SERVICES, the one large chain: an
// address lookup renders only the rules that can concern its addresses,
// anything else dumps the chain whole.
func feedKubeServicesNFT(c *netops.Client, conn *nlsock.Conn, family int, p *iptParser, probe *famProbe, sel *serviceSelector) error {
	if sel.addrOnly() {
		lines, ok, err := kubeServicesLookupNFT(c, family, sel.ips)
		if err != nil {
			return err
		}
		if ok {
			p.feedLines("nat", lines)
			return nil
		}
	}
	cr, err := dumpIPTNFTChain(conn, family, "nat", "KUBE-SERVICES")
	if err != nil {
		return err
	}
	if probe.nftIPT {
		p.feedLines("nat", []string{"-N KUBE-SERVICES"})
	}
	cr.feed(p, "nat")
	return nil
}

// selectedChains are the chains the KUBE-SERVICES rules the selector
// selects jump to, with every chain of the same services; p keeps only
// those services' entries. It is not ok when an entry has no comment to
// match a name against.
func selectedChains(p *iptParser, sel *serviceSelector) (queue []string, ok bool) {
	for i := range p.entries {
		e := &p.entries[i]
		if e.target == "" || e.filter {
			continue
		}
		if e.kind == entryCluster || e.kind == entryExternal || e.kind == entryLB {
			probeSvc := Service{ClusterIP: e.ip, Port: e.port}
			setName(&probeSvc, e.name)
			if e.name == "" && !sel.addrOnly() {
				return nil, false // no comment to match a name against
			}
			if sel.peek(&probeSvc) {
				queue = append(queue, e.target)
			}
		}
	}
	// A service's other addresses and node ports lead to chains its
	// selected address does not (KUBE-EXT, KUBE-FW): take every entry whose
	// chain shares a selected chain's hash, as kube-proxy names one service
	// port's chains alike.
	hashes := map[string]bool{}
	for _, ch := range queue {
		hashes[chainHash(ch)] = true
	}
	for i := range p.entries {
		if e := &p.entries[i]; e.target != "" && !e.filter && hashes[chainHash(e.target)] {
			queue = append(queue, e.target)
		}
	}
	// Forget the other services' jumps: assembling 10,000 services to
	// keep one would cost more than reading its chains.
	kept := p.entries[:0]
	for _, e := range p.entries {
		if e.target == "" || e.filter || hashes[chainHash(e.target)] {
			kept = append(kept, e)
		}
	}
	p.entries = kept
	return queue, true
}

// chainHash is the part of a kube-proxy chain name after its prefix
// ("KUBE-SVC-XPGD46QRK7WJZT7O" → "XPGD46QRK7WJZT7O"), shared by one
// service port's chains.
func chainHash(chain string) string {
	_, h, _ := strings.Cut(strings.TrimPrefix(chain, "KUBE-"), "-")
	return h
}
