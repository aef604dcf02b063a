package commands

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/flows"
	"github.com/urfave/cli/v2"
)

var conntrackCommand = &cli.Command{
	Name:      "conntrack",
	Aliases:   []string{"ct"},
	Usage:     "show the conntrack flows to a Service IP, follow new ones, mark hairpin flows",
	ArgsUsage: "SERVICE-IP",
	Description: `Lists the conntrack entries whose original destination is SERVICE-IP, then
follows the NEW, UPDATE and DESTROY events for it until Ctrl-C, --count
events or --timeout. A line per entry or event: the event, the Service port
and protocol, the state, the client, the endpoint it was DNATed to, the
address it was masqueraded to (SNAT; "missing" on a hairpin flow that was
not), and HAIRPIN when the endpoint is the client itself (reply source =
original source): the traffic that breaks when the port's hairpin mode is
off. -o wide adds the time, the endpoint's port and the client's pod
(namespace/name, - when the client is no pod of this node or nothing names
it); -o json prints JSON Lines, with the client's pod as "clientPod". The
pods are learnt as ports does, once, and again only when a link comes or
goes or a client is not known (at most once a second).

If events come faster than they are read, the kernel drops some: each
overflow is reported on stderr (and as an "overflow" line with -o json),
then the table is dumped again to resynchronise. At the end stderr gets a
summary: flows (connections) seen, lines printed, overflows, events lost.
Needs CAP_NET_ADMIN.

EXAMPLES:
   hairpinctl conntrack 10.96.0.10
   hairpinctl conntrack 10.96.0.10 --port 80 --proto tcp --no-dump -o wide
   hairpinctl ct 10.96.0.10 --no-follow -o json | jq 'select(.hairpin)'
   hairpinctl conntrack 10.96.0.10 --count 20 --timeout 30s -o json`,
	Flags: []cli.Flag{
		&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Usage: "only flows to Service port `N`", DefaultText: "any"},
		&cli.StringFlag{Name: "proto", Usage: "only flows of protocol `tcp|udp|sctp`", DefaultText: "any"},
		&cli.BoolFlag{Name: "no-dump", Usage: "do not list the flows already in the table"},
		&cli.BoolFlag{Name: "no-follow", Usage: "list the flows in the table and exit"},
		&cli.IntFlag{Name: "count", Aliases: []string{"c"}, Usage: "exit after `N` events (flows listed from the table do not count)", DefaultText: "no limit"},
		&cli.DurationFlag{Name: "timeout", Usage: "exit after `DURATION`", DefaultText: "no limit"},
		&cli.IntFlag{Name: "rcvbuf", Hidden: true, Usage: "event socket receive buffer in `BYTES`"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "output `FORMAT`: table, wide (adds the time, the endpoint's port and the client's pod) or json"},
		cniCacheFlag(),
		criEndpointFlag(),
		netnsFlag(),
	},
	Action: runConntrack,
}

func runConntrack(c *cli.Context) error {
	format := "wide"
	if lineageString(c, "output") != "wide" {
		var err error
		if format, err = outputFormat(c); err != nil {
			return err
		}
	}
	o, count, err := conntrackOptions(c)
	if err != nil {
		return err
	}
	if !netops.HasNetAdmin() {
		return netops.Errorf(netops.ErrPermission, "conntrack needs CAP_NET_ADMIN: run as root")
	}
	cl, err := openClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()

	ctx, _, stop := signalContext()
	defer stop()
	if d := c.Duration("timeout"); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}

	p := newFlowPrinter(c.App.Writer, format)
	tally := flowTally{seen: map[flowKey]struct{}{}, count: count}
	var named *livePods
	if format != "table" { // the default table has no room for the pod
		named = newLivePods(c, ctx.Done())
		defer named.Close()
	}
	o.Flow = func(f flows.Flow) error {
		if named != nil {
			f.ClientPod = named.ip(f.Orig.Src)
		}
		if err := p.flow(f); err != nil {
			return err
		}
		return tally.add(f)
	}
	o.Overflow = overflowReporter(c.App.ErrWriter, p, format)
	o.Idle = p.flush
	if err := p.header(); err != nil {
		return err
	}
	st, err := flows.Stream(ctx, cl, o)
	if ferr := p.flush(); err == nil {
		err = ferr
	}
	cut := ""
	if st.Cut {
		cut = "; stopped with events still queued"
	}
	fmt.Fprintf(c.App.ErrWriter, "hairpinctl: conntrack: %s in %s, %d overflows (%d events lost)%s\n",
		plural(len(tally.seen), "flow"), plural(st.Flows, "line"), st.Overflows, st.Lost, cut)
	if err != nil {
		return fmt.Errorf("conntrack: %w", err)
	}
	return nil
}

// flowKey is a connection's original tuple.
type flowKey struct {
	proto    string
	src, dst netip.Addr
	sp, dp   uint16
}

// flowTally counts what conntrack printed. A connection shows up once
// listed and again with each event: the summary counts connections by
// their original tuple, and --count the events.
type flowTally struct {
	seen   map[flowKey]struct{}
	events int
	// count is the events to stop after, 0 for no limit.
	count int
}

// add counts a printed flow, and stops the stream once count events came.
func (t *flowTally) add(f flows.Flow) error {
	t.seen[flowKey{f.Proto, f.Orig.Src, f.Orig.Dst, f.Orig.SPort, f.Orig.DPort}] = struct{}{}
	if f.Event != flows.EventExisting {
		t.events++
		if t.count > 0 && t.events >= t.count {
			return flows.ErrStop
		}
	}
	return nil
}

// overflowReporter tells of event socket overflows. They can come by the
// hundred a second: stderr hears of the first and then at most one a
// second; JSON gets every one.
func overflowReporter(stderr io.Writer, p *flowPrinter, format string) func(flows.Overflow) error {
	var warned time.Time
	return func(ov flows.Overflow) error {
		if ov.Time.Sub(warned) >= time.Second {
			warned = ov.Time
			fmt.Fprintf(stderr, "hairpinctl: conntrack: event socket overflowed (%d so far, %d events lost): resynchronising with a dump\n", ov.Overflows, ov.Lost)
		}
		if format == "json" {
			return p.overflow(ov)
		}
		return nil
	}
}

// conntrackOptions validates the argument and flags.
func conntrackOptions(c *cli.Context) (flows.Options, int, error) {
	var o flows.Options
	if c.NArg() != 1 {
		return o, 0, usageErrorf("conntrack: give one SERVICE-IP (see: hairpinctl conntrack --help)")
	}
	ip, err := netip.ParseAddr(c.Args().First())
	if err != nil || ip.Zone() != "" {
		return o, 0, usageErrorf("conntrack: %q is not an IP address: give the Service's ClusterIP, e.g. 10.96.0.10", c.Args().First())
	}
	o.ServiceIP = ip.Unmap()
	if c.IsSet("port") {
		p := c.Int("port")
		if p < 1 || p > 65535 {
			return o, 0, usageErrorf("conntrack: --port %d is not a port: use 1 to 65535", p)
		}
		o.Port = uint16(p)
	}
	if s := c.String("proto"); s != "" {
		if o.Proto, err = flows.ParseProto(s); err != nil {
			return o, 0, usageErrorf("conntrack: --proto: %v", err)
		}
	}
	o.NoDump, o.NoFollow = c.Bool("no-dump"), c.Bool("no-follow")
	if o.NoDump && o.NoFollow {
		return o, 0, usageErrorf("conntrack: --no-dump and --no-follow leave nothing to show")
	}
	count := c.Int("count")
	switch {
	case count < 0:
		return o, 0, usageErrorf("conntrack: --count %d is negative", count)
	case c.Duration("timeout") < 0:
		return o, 0, usageErrorf("conntrack: --timeout %s is negative", c.Duration("timeout"))
	case c.Int("rcvbuf") < 0:
		return o, 0, usageErrorf("conntrack: --rcvbuf %d is negative", c.Int("rcvbuf"))
	}
	o.ReadBuffer = c.Int("rcvbuf")
	return o, count, nil
}

// flowPrinter writes a stream of flows. Output is buffered and flushed
// whenever the event socket is drained, so a burst costs a few writes and
// a quiet stream still shows each event at once.
type flowPrinter struct {
	w      *bufio.Writer
	json   bool
	layout *ctLayout
	pal    palette
	line   []byte
}

func newFlowPrinter(w io.Writer, format string) *flowPrinter {
	layout := &ctNarrow
	if format == "wide" {
		layout = &ctWide
	}
	return &flowPrinter{w: bufio.NewWriterSize(w, 64<<10), json: format == "json", layout: layout, pal: colours(w)}
}

func (p *flowPrinter) header() error {
	if p.json {
		return nil
	}
	p.line = p.layout.header(p.line[:0])
	_, err := p.w.Write(p.line)
	return err
}

func (p *flowPrinter) flow(f flows.Flow) error {
	if p.json {
		p.line = appendFlowJSON(p.line[:0], &f)
	} else {
		p.line = p.layout.row(p.line[:0], &f, p.pal)
	}
	_, err := p.w.Write(p.line)
	return err
}

func (p *flowPrinter) overflow(ov flows.Overflow) error {
	p.line = appendOverflowJSON(p.line[:0], &ov)
	_, err := p.w.Write(p.line)
	return err
}

func (p *flowPrinter) flush() error { return p.w.Flush() }
