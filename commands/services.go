package commands

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/bridgeports"
	"github.com/hairpinctl/hairpinctl/netops/kubeproxy"
	"github.com/urfave/cli/v2"
)

var servicesCommand = &cli.Command{
	Name:      "services",
	Aliases:   []string{"svc"},
	Usage:     "show kube-proxy's Service NAT: each service port, its endpoints, and the hairpin masquerade rule",
	ArgsUsage: "[IP[:PORT] | NS/NAME[:PORT]]...",
	Description: `Reads the rules kube-proxy programs and shows, per service port, its
ClusterIP:port, node ports, external and load-balancer IPs, and each
endpoint with its share of new connections, whether its own connections to
the Service are masqueraded (HAIRPIN-MASQ: iptables mode's "-s podIP -j
KUBE-MARK-MASQ", nftables mode's hairpin-connections set; without it a pod
that reaches itself gets replies it drops; n/a for another node's
endpoint), and session affinity; under an endpoint on this node, its
pod (from the CNI result cache, else the runtime over CRI; -o json: the
endpoint's "pod", with its source). Filters select by ClusterIP (or
external/LB IP) or by NS/NAME, either with an optional :PORT (the port's
name or number; [IPv6]:PORT), as doctor's do and as the table prints them;
several may be given.

--backend auto looks at iptables-nft, iptables-legacy and nftables mode and
reads the one holding kube-proxy's rules, warning on stderr when more than
one does (kube-proxy may use another iptables backend than the host's
default). --raw prints the selected services' rules verbatim (iptables-save
syntax, or nft -f syntax in nftables mode) instead of the table. -o json
prints an array of service objects. Needs root (CAP_NET_ADMIN) to read the
rules.

EXAMPLES:
   hairpinctl services
   hairpinctl services 10.96.0.10
   hairpinctl services 10.96.0.10:80
   hairpinctl services kube-system/kube-dns:dns-tcp -o json
   hairpinctl services default/web --raw
   hairpinctl services --backend iptables-legacy -6
   hairpinctl services --netns /proc/$(pidof kube-proxy)/ns/net`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "backend", Value: "auto", Usage: "read `BACKEND`: auto, iptables (nft or legacy, whichever holds the rules), iptables-nft, iptables-legacy or nftables"},
		&cli.BoolFlag{Name: "ipv4", Aliases: []string{"4"}, Usage: "IPv4 only"},
		&cli.BoolFlag{Name: "ipv6", Aliases: []string{"6"}, Usage: "IPv6 only"},
		&cli.BoolFlag{Name: "raw", Usage: "print the selected services' rules verbatim"},
		// A string, read by parseWait: a duration like every other
		// option, or whole seconds as iptables -w takes them.
		&cli.StringFlag{Name: "wait", Aliases: []string{"w"}, Value: "5s", Usage: "wait at most `DURATION` (or whole seconds) for the xtables lock, then fail"},
		cniCacheFlag(),
		criEndpointFlag(),
		outputFlag(),
		netnsFlag(),
	},
	Action: runServices,
}

func runServices(c *cli.Context) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	wait, err := parseWait("--wait", c.String("wait"))
	if err != nil {
		return usageErrorf("services: %v", err)
	}
	o := kubeproxy.Options{Backend: c.String("backend"), Raw: c.Bool("raw"), WaitSeconds: wait}
	switch o.Backend {
	case kubeproxy.BackendAuto, kubeproxy.BackendIPTables, string(kubeproxy.BackendIPTablesNFT), string(kubeproxy.BackendIPTablesLegacy), string(kubeproxy.BackendNFTables):
	default:
		return usageErrorf("services: --backend %q: use auto, iptables, iptables-nft, iptables-legacy or nftables", o.Backend)
	}
	switch v4, v6 := c.Bool("ipv4"), c.Bool("ipv6"); {
	case v4 && v6:
		return usageErrorf("services: -4 and -6 exclude each other: give neither for both families")
	case v4 && !v6:
		o.Family = 4
	case v6 && !v4:
		o.Family = 6
	}
	for _, a := range c.Args().Slice() {
		ip, name, err := kubeproxy.ParseServiceArg(a)
		if err != nil {
			return fmt.Errorf("services: %w", err)
		}
		if ip != "" {
			o.ClusterIPs = append(o.ClusterIPs, ip)
		} else {
			o.Names = append(o.Names, name)
		}
	}
	cl, err := openClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	res, err := kubeproxy.Services(cl, o)
	if err != nil {
		return fmt.Errorf("services: %w", err)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(c.App.ErrWriter, "hairpinctl: services: %s\n", w)
	}
	if !o.Raw {
		nameEndpoints(c, cl, res.Services)
	}
	if len(res.Services) == 0 && len(res.Unmatched) > 0 {
		return netops.Errorf(netops.ErrNotFound, "services: no service matches %s in %s %s", strings.Join(res.Unmatched, ", "), res.Backend, cl.SeeHint("services"))
	}
	w := c.App.Writer
	switch {
	case o.Raw && format == "table":
		err = printServicesRaw(w, res)
	case format == "json":
		err = writeServicesJSON(w, res.Services)
	default:
		err = printServicesTable(w, res.Services)
	}
	if err != nil {
		return err
	}
	if len(res.Unmatched) > 0 {
		for _, u := range res.Unmatched {
			fmt.Fprintf(c.App.ErrWriter, "hairpinctl: services: no service matches %s\n", u)
		}
		n := len(o.ClusterIPs) + len(o.Names)
		return &exitError{code: ExitPartial, err: fmt.Errorf("services: %d of %d filters matched nothing (the others were shown)", len(res.Unmatched), n)}
	}
	return nil
}

// nameEndpoints names the pods behind this node's endpoints, when there
// are any: the bridge ports are listed with their pods and joined by IP.
// A listing that fails is a warning; those pods stay unknown.
func nameEndpoints(c *cli.Context, cl *netops.Client, svcs []kubeproxy.Service) {
	local := false
	for i := range svcs {
		for _, e := range svcs[i].Endpoints {
			local = local || (e.Local != nil && *e.Local)
		}
	}
	if !local {
		return
	}
	ports, err := bridgeports.List(cl, bridgeports.ListOptions{Pods: podNaming(c, cl)})
	if err != nil {
		fmt.Fprintf(c.App.ErrWriter, "hairpinctl: %s: list bridge ports: %s: pods of this node's endpoints unknown\n", c.Command.Name, termSafeText(err.Error()))
		return
	}
	kubeproxy.NameEndpoints(svcs, bridgeports.PodsByIP(ports))
}

// hostPort joins an address and a port, bracketing IPv6.
func hostPort(ip string, port int) string {
	if a, err := netip.ParseAddr(ip); err == nil && a.Is6() {
		return "[" + ip + "]:" + strconv.Itoa(port)
	}
	return ip + ":" + strconv.Itoa(port)
}

func serviceLabel(s *kubeproxy.Service) string {
	if s.Name == "" {
		// No comments to name it by (see --raw, -o json for its chain).
		return "(unnamed)"
	}
	n := s.Namespace + "/" + s.Name
	if s.PortName != "" {
		n += ":" + s.PortName
	}
	return n
}

func formatProb(p float64) string {
	return strconv.FormatFloat(float64(int64(p*10000+0.5))/10000, 'f', -1, 64)
}

// printServicesTable prints one block per service port: the service row,
// then its node ports, external and load-balancer IPs, and endpoints,
// indented, so that long names do not widen the endpoint columns.
func printServicesTable(w io.Writer, svcs []kubeproxy.Service) error {
	pal := colours(w)
	var buf bytes.Buffer
	tw := newTable(&buf)
	fmt.Fprintln(tw, "SERVICE\tADDRESS\tSHARE\tHAIRPIN-MASQ\tAFFINITY")
	for i := range svcs {
		s := &svcs[i]
		proto := "/" + s.Protocol
		aff := "-"
		if s.SessionAffinitySeconds > 0 {
			aff = strconv.Itoa(s.SessionAffinitySeconds) + "s"
		}
		fmt.Fprintf(tw, "%s\t%s\t\t\t%s\n", serviceLabel(s), hostPort(s.ClusterIP, s.Port)+proto, aff)
		for _, np := range s.NodePorts {
			fmt.Fprintf(tw, "  node port\t*:%d%s\t\t\t\n", np, proto)
		}
		for _, ip := range s.ExternalIPs {
			fmt.Fprintf(tw, "  external IP\t%s\t\t\t\n", hostPort(ip, s.Port)+proto)
		}
		for _, ip := range s.LoadBalancerIPs {
			fmt.Fprintf(tw, "  load balancer\t%s\t\t\t\n", hostPort(ip, s.Port)+proto)
		}
		if s.LocalPolicy {
			fmt.Fprintf(tw, "  traffic policy\tLocal\t\t\t\n")
		}
		if s.NoEndpoints {
			fmt.Fprintf(tw, "  %s\t%s\t\t\t\n", pal.bad("no endpoints"), "kube-proxy rejects it")
		}
		for _, e := range s.Endpoints {
			masq := pal.bad("no")
			switch {
			case e.HairpinMasq:
				masq = pal.good("yes")
			case e.Local != nil && !*e.Local:
				masq = "n/a" // another node's endpoint: its node masquerades it
			}
			eaff := "-"
			if e.SessionAffinity {
				eaff = "yes"
			}
			addr := "?"
			if e.IP != "" {
				addr = hostPort(e.IP, e.Port)
			}
			fmt.Fprintf(tw, "  endpoint\t%s\t%s\t%s\t%s\n", addr, formatProb(e.Share), masq, eaff)
			if e.Local != nil && *e.Local {
				// The last cell of a line is no column's: a long pod
				// name widens nothing.
				fmt.Fprintf(tw, "    pod\t%s\n", endpointPod(e))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Rows with empty trailing cells are padded by tabwriter; drop the
	// trailing blanks so that copied output stays clean.
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(buf.Bytes(), []byte("\n")) {
		out.Write(bytes.TrimRight(line, " \n"))
		if len(line) > 0 && line[len(line)-1] == '\n' {
			out.WriteByte('\n')
		}
	}
	_, err := w.Write(out.Bytes())
	return err
}

// endpointPod names the pod of this node's endpoint e, or says it is
// unknown.
func endpointPod(e kubeproxy.Endpoint) string {
	if n := e.Pod.FullName(); n != "" {
		return termSafe(n)
	}
	return "unknown"
}

// printServicesRaw prints each service's rules under a comment line, then
// the rules not understood that belong to no service.
func printServicesRaw(w io.Writer, res *kubeproxy.Result) error {
	var b strings.Builder
	for i := range res.Services {
		s := &res.Services[i]
		fmt.Fprintf(&b, "# %s %s/%s (%s, IPv%d)\n", serviceLabel(s), hostPort(s.ClusterIP, s.Port), s.Protocol, s.Backend, s.Family)
		for _, r := range s.Raw {
			b.WriteString(r)
			b.WriteByte('\n')
		}
		b.WriteByte('\n')
	}
	if n := len(res.UnparsedRules); n > 0 {
		fmt.Fprintf(&b, "# %d rules hairpinctl does not understand, outside any service\n", n)
		for _, r := range res.UnparsedRules {
			b.WriteString(r)
			b.WriteByte('\n')
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
