//go:build !urfave_cli_no_docs

package commands

// The shipped binary is built with urfave_cli_no_docs and leaves this
// generator out; a test regenerates man/hairpinctl.8 and fails on drift.

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"github.com/hairpinctl/hairpinctl/netops/doctor"
	"github.com/urfave/cli/v2"
)

// manDate is the .TH date: fixed, so regenerating the page is
// reproducible; bump it when the page changes materially.
const manDate = "2026-12-06"

// examplesBlock matches an "EXAMPLES:" block of a command's Description,
// set as a literal block instead of a paragraph.
var examplesBlock = regexp.MustCompile(`(?m)^EXAMPLES:\n((?:   .*\n?)+)`)

// ManPage renders hairpinctl(8) from the CLI definitions: the synopsis,
// options and per-command sections from the commands and flags (flags
// named and described as --help does), then the hand-written sections
// below. urfave/cli's own ToMan sets flags as --hairpin="" and the
// synopsis as [--netns]=[value], with no room for arguments, examples or
// the environment. It is long because it writes the page's sections in
// the page's order, each a few lines, so the code reads as the page does.
func ManPage() string {
	app := NewApp("")
	cmds := app.VisibleCommands()
	var m roff
	m.line(".TH HAIRPINCTL 8 " + manDate + " hairpinctl \"System Manager's Manual\"")
	// Left-aligned and unhyphenated: flags, paths and metric names are
	// typed as printed, and justified 80-column text gapes. groff's
	// paragraphs turn hyphenation back on unless HY is 0.
	m.line(".ad l")
	m.line(".nh")
	m.line(".nr HY 0")

	m.line(".SH NAME")
	m.text(app.Name + " - " + app.Usage)

	m.line(".SH SYNOPSIS")
	m.line(".SY " + app.Name)
	for _, f := range app.VisibleFlags() {
		if f.Names()[0] != "version" {
			m.line(synopsisFlag(f))
		}
	}
	m.line(".I command")
	m.line(".RI [ options ]")
	m.line(".RI [ arguments ]")
	m.line(".YS")
	m.line(".SY " + app.Name)
	m.line(`.B \-\-help`)
	m.line("|")
	m.line(`.B \-\-version`)
	m.line(".YS")
	for _, c := range cmds {
		m.line(".SY " + app.Name)
		m.line(".B " + c.Name)
		for _, f := range commandFlags(c) {
			m.line(synopsisFlag(f))
		}
		if c.ArgsUsage != "" {
			m.line(argSyntax(c.ArgsUsage))
		}
		m.line(".YS")
	}

	m.line(".SH DESCRIPTION")
	m.description(app.Description, true)
	m.line(".PP")
	m.text(manDescription)

	m.line(".SH OPTIONS")
	m.text("Global options go before the command name, after it, or after its arguments: **hairpinctl -o json ports** is **hairpinctl ports -o json**.")
	for _, f := range append(app.VisibleFlags(), cli.HelpFlag) {
		m.flag(f)
		if f.Names()[0] == "netns" {
			var takers []string
			for _, c := range cmds {
				if hasFlag(c, "netns") {
					takers = append(takers, "**"+c.Name+"**")
				}
			}
			m.line(".IP")
			m.text("Taken by " + strings.Join(takers, ", ") + "; a --netns typed anywhere beats $" + netnsEnv + ". **selftest** builds namespaces of its own and refuses it.")
		}
	}

	m.line(".SH COMMANDS")
	for _, c := range cmds {
		m.command(c)
	}

	m.line(".SH EXIT STATUS")
	for _, e := range manExitStatus {
		m.line(".TP")
		m.line(fmt.Sprintf(`.B %d`, e.code))
		m.text(e.text)
	}
	m.line(".PP")
	m.text(`Errors are one line on standard error, prefixed "hairpinctl:", naming the thing and saying what to do.`)

	m.line(".SH ENVIRONMENT")
	for _, e := range manEnvironment {
		m.line(".TP")
		m.line(".B " + code(e.name))
		m.text(e.text)
	}

	m.line(".SH FILES")
	for _, f := range manFiles {
		m.line(".TP")
		m.line(`\fI` + code(f.name) + `\fR`)
		m.text(f.text)
	}

	m.line(".SH EXAMPLES")
	for i, e := range manExamples {
		if i > 0 {
			m.line(".PP")
		}
		m.text(e.text)
		m.literal(e.cmds)
	}

	m.line(".SH SEE ALSO")
	m.text(manSeeAlso)
	return m.String()
}

// manDescription follows the app's Description.
const manDescription = `Data goes to standard output, as a table or, with **-o json**, as JSON (JSON Lines for the streams of **conntrack** and **watch**); warnings and progress go to standard error, so **| jq** always works.
Options that take a time take a Go duration such as 5s or 2m.
Reading and changing the kernel's state needs root (CAP_NET_ADMIN); listing ports does not.`

// manArgs describes each argument a command's ArgsUsage names.
var manArgs = map[string]string{
	"IFACE":          "a bridge port by interface name, as the PORT column of **hairpinctl ports** shows it",
	"POD-IP":         "the port of the pod with this IP, as the POD-IPS column of **hairpinctl ports** shows it",
	"pod/NS/NAME":    "every port of the pod NAME in namespace NS, as the POD column of **hairpinctl ports** shows it (named from the CNI result cache)",
	"IP[:PORT]":      "a Service by its ClusterIP, external or load-balancer IP, with an optional port name or number ([IPv6]:PORT for IPv6)",
	"NS/NAME[:PORT]": "a Service by namespace and name, with an optional port name or number, as the SERVICE column of **hairpinctl services** shows it",
	"SERVICE-IP":     "the Service's ClusterIP (IPv4 or IPv6): flows whose original destination it is",
	"bash|zsh|fish":  "the shell to print the completion script for",
	"POD SERVICE":    "the client pod, as pod/NS/NAME, its IP or its bridge port (as **hairpinctl ports** shows them), and one Service port, as IP:PORT or NS/NAME[:PORT] (as **hairpinctl services** shows it)",
}

var manExitStatus = []struct {
	code int
	text string
}{
	{ExitOK, "success"},
	{ExitError, "runtime error (kernel, permission, timeout)"},
	{ExitUsage, "usage error or invalid input: no command (a bare **hairpinctl** prints the help on standard error), a bad flag, a malformed name, a single unknown interface, an unknown bridge or namespace"},
	{ExitPartial, "partial: some of several requested items failed while the others were done"},
	{ExitFindings, "**doctor** found at least one FAIL; **probe** saw a connection fail"},
}

// manEntry is a tagged paragraph of a hand-written section.
type manEntry struct{ name, text string }

var manEnvironment = []manEntry{
	{netnsEnv, "the network namespace to work in (a name under /run/netns or a path), as --netns gives it, when no --netns is typed; a typed --netns always wins, wherever it is typed. **selftest** ignores it and says so on standard error. Completion scripts look for bridges and ports in it too."},
	{"NO_COLOR", "set and not empty: no colour. Colour is used only on a terminal."},
	{"TERM", "dumb: no colour."},
	{"LC_ALL, LC_CTYPE, LANG", "the first one set says whether the character set is UTF-8; when it is not (unset, or C as in cron and systemd units), the arrows and ellipses of the tables are printed as -> and ..."},
	{"JOURNAL_STREAM", "set by systemd when the journal collects standard output: **watch** leaves the timestamps out of its lines, as the journal stamps each line itself."},
	{"XTABLES_LOCKFILE", "the xtables lock iptables waits for (default /run/xtables.lock); **services** --wait bounds the wait and names the file when it gives up."},
}

// manFiles are the files hairpinctl reads and writes, and the ones it
// ships.
var manFiles = []manEntry{
	{"/run/netns/NAME", "named network namespaces, as **ip netns add** makes them; **--netns NAME** looks here."},
	{"/proc/PID/ns/net", "a process's network namespace, accepted by **--netns PATH**."},
	{"/run/hairpinctl/ready", "the ready file the systemd unit and the DaemonSet pass to **watch --ready-file**: written once the first pass is done and link notifications are followed, removed when **watch** exits."},
	{"/usr/lib/systemd/system/hairpinctl-enable.service", "oneshot at boot: **hairpinctl enable --bridge cni0 --wait-bridge 2m**; exit status 3 counts as success. **make install** puts the units under /usr/local/lib/systemd/system instead; none is enabled."},
	{"/usr/lib/systemd/system/hairpinctl-watch.service", "runs **hairpinctl watch --bridge cni0 --ready-file /run/hairpinctl/ready** with CAP_NET_ADMIN only."},
	{"/usr/lib/systemd/system/hairpinctl-metrics.service", "runs **hairpinctl metrics --textfile /var/lib/node_exporter/textfile_collector**."},
	{"/usr/lib/systemd/system/hairpinctl-metrics.timer", "runs hairpinctl-metrics.service every minute."},
	{"/var/lib/node_exporter/textfile_collector/" + metricsFile, "the metrics **hairpinctl metrics --textfile** writes, for node_exporter's textfile collector."},
	{doctor.DefaultCNIConfDir, "CNI network configurations, read by **doctor** and **metrics** for hairpinMode (--cni-conf-dir)."},
	{"/proc/sys/net/bridge/bridge-nf-call-iptables, /proc/sys/net/ipv4/ip_forward", "read by **doctor** in the namespace it checks."},
	{"/run/xtables.lock", "the xtables lock, taken by iptables-save while **services**, **doctor** and **metrics** read the rules."},
}

var manExamples = []struct {
	text string
	cmds []string
}{
	{"Why does a pod hang when it connects to its own Service? Check the whole chain, with a fix for each finding:",
		[]string{"hairpinctl doctor 10.96.0.10"}},
	{"Which ports have hairpin off (the runbook's **bridge link show** and a **cat .../brport/hairpin_mode** per port)?",
		[]string{"hairpinctl ports --bridge cni0 --hairpin off"}},
	{"Turn hairpin on for every pod's port of cni0 (the runbook's **ip link set dev $i type bridge_slave hairpin on** loop), trying it first:",
		[]string{"hairpinctl enable --bridge cni0 --dry-run", "hairpinctl enable --bridge cni0"}},
	{"Keep it on as pods come and go:",
		[]string{"systemctl enable --now hairpinctl-watch.service"}},
	{"See a pod reach itself through its Service, flow by flow:",
		[]string{"hairpinctl conntrack 10.96.0.10 --port 80"}},
	{"Inside another namespace, as a script would:",
		[]string{`for i in $(hairpinctl --netns node1 ports -q --hairpin off); do`, `    echo "$i"`, `done`}},
}

const manSeeAlso = `**bridge**(8), **ip-link**(8), **ip-netns**(8), **iptables-save**(8), **nft**(8), **conntrack**(8), **systemd.service**(5)`

// commandFlags are the flags a command's synopsis and options list: all
// it shows in --help but --netns, which OPTIONS describes once, and the
// help flag urfave/cli adds to a command once it has run.
func commandFlags(c *cli.Command) []cli.Flag {
	var out []cli.Flag
	for _, f := range c.VisibleFlags() {
		switch f.Names()[0] {
		case "netns", "help":
			continue
		}
		out = append(out, f)
	}
	return out
}

func hasFlag(c *cli.Command, name string) bool {
	for _, f := range c.Flags {
		if f.Names()[0] == name {
			return true
		}
	}
	return false
}

// splitArgs returns the alternatives an ArgsUsage names:
// "[IP[:PORT] | NS/NAME[:PORT]]..." is IP[:PORT] and NS/NAME[:PORT].
func splitArgs(usage string) []string {
	s := strings.TrimSuffix(usage, "...")
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	}
	return strings.Split(s, " | ")
}

// command writes a command's subsection: its usage and description, its
// arguments, options and examples.
func (m *roff) command(c *cli.Command) {
	m.line(".SS " + code(strings.Join(c.Names(), ", ")))
	usage := []rune(c.Usage)
	usage[0] = unicode.ToUpper(usage[0])
	m.text(string(usage) + ".")
	desc, examples := c.Description, ""
	if loc := examplesBlock.FindStringSubmatchIndex(desc); loc != nil {
		examples = desc[loc[2]:loc[3]]
		desc = desc[:loc[0]] + desc[loc[1]:]
	}
	m.description(desc, false)
	if c.ArgsUsage != "" {
		m.line(".PP")
		m.line("Arguments:")
		for _, a := range splitArgs(c.ArgsUsage) {
			m.line(".TP")
			m.line(argSyntax(a))
			m.text(manArgs[a])
		}
	}
	if flags := commandFlags(c); len(flags) > 0 {
		m.line(".PP")
		m.line("Options:")
		for _, f := range flags {
			m.flag(f)
		}
	}
	if examples != "" {
		m.line(".PP")
		m.line("Examples:")
		m.literal(strings.Split(strings.TrimRight(dedent(examples), "\n"), "\n"))
	}
}

func dedent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "   ")
	}
	return strings.Join(lines, "\n")
}

// description sets a Description's text: a paragraph per block of lines
// at the margin; an indented block is a definition list when it reads as
// one ("   term  text", or the term alone and its text indented further
// below, as doctor's checks and metrics' series are) and a literal block
// otherwise. Right after a heading, the first paragraph needs no .PP.
func (m *roff) description(desc string, afterHeading bool) {
	var blocks [][]string
	var cur []string
	indented := func(l string) bool { return strings.HasPrefix(l, " ") }
	for _, l := range strings.Split(strings.TrimSpace(desc), "\n") {
		if strings.TrimSpace(l) == "" || (len(cur) > 0 && indented(cur[0]) != indented(l)) {
			if len(cur) > 0 {
				blocks = append(blocks, cur)
			}
			cur = nil
		}
		if strings.TrimSpace(l) != "" {
			cur = append(cur, l)
		}
	}
	if len(cur) > 0 {
		blocks = append(blocks, cur)
	}
	for i, b := range blocks {
		switch items, ok := definitionList(b); {
		case !indented(b[0]):
			if i > 0 || !afterHeading {
				m.line(".PP")
			}
			m.text(strings.Join(b, "\n"))
		case ok:
			for _, it := range items {
				// A term may break after a comma: a metric's labels.
				m.line(".TP")
				m.line(`\fB` + strings.ReplaceAll(code(it[0]), ",", `,\:`) + `\fR`)
				m.text(it[1])
			}
		default:
			m.line(".PP")
			m.literal(dedentAll(b))
		}
	}
}

// definitionList reads "   term  text" entries, a term without spaces,
// each continued by lines indented further.
func definitionList(lines []string) ([][2]string, bool) {
	base := len(lines[0]) - len(strings.TrimLeft(lines[0], " "))
	var items [][2]string
	for i, l := range lines {
		ind := len(l) - len(strings.TrimLeft(l, " "))
		t := strings.TrimSpace(l)
		switch {
		case ind == base:
			term, text, ok := strings.Cut(t, "  ")
			if !ok && (i+1 == len(lines) || len(lines[i+1])-len(strings.TrimLeft(lines[i+1], " ")) <= base) {
				return nil, false
			}
			if strings.Contains(term, " ") {
				return nil, false
			}
			items = append(items, [2]string{term, strings.TrimSpace(text)})
		case ind > base && len(items) > 0:
			it := &items[len(items)-1]
			it[1] = strings.TrimSpace(it[1] + "\n" + t)
		default:
			return nil, false
		}
	}
	return items, true
}

func dedentAll(lines []string) []string {
	base := -1
	for _, l := range lines {
		if n := len(l) - len(strings.TrimLeft(l, " ")); base < 0 || n < base {
			base = n
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l[base:]
	}
	return out
}

// roff builds man(7) source.
type roff struct{ strings.Builder }

func (m *roff) line(s string) {
	m.WriteString(s)
	m.WriteByte('\n')
}

// text writes filled text: escaped, a dash that starts a word set as a
// minus (\-, so --bridge copies as typed), **x** in bold.
func (m *roff) text(s string) {
	for _, l := range strings.Split(s, "\n") {
		m.line(bold(prose(strings.TrimSpace(l))))
	}
}

// literal writes lines as a block of code, indented.
func (m *roff) literal(lines []string) {
	m.line(".RS 4")
	m.line(".EX")
	for _, l := range lines {
		m.line(code(l))
	}
	m.line(".EE")
	m.line(".RE")
}

// flag writes a flag as a tagged paragraph, named and described as
// --help does it (flagNamesHelp, flagUsageHelp), the placeholder in
// italics.
func (m *roff) flag(f cli.Flag) {
	var names []string
	for _, n := range strings.Split(flagNamesHelp(f), ", ") {
		names = append(names, flagSyntax(n))
	}
	m.line(".TP")
	m.line(strings.Join(names, ", "))
	usage := flagUsageHelp(f)
	df, ok := f.(cli.DocGenerationFlag)
	if !ok {
		m.text(usage)
		return
	}
	raw := df.GetUsage()
	name, plain := unquoteUsage(raw)
	if name == "" || !strings.HasPrefix(usage, plain) {
		m.text(usage)
		return
	}
	i := strings.IndexByte(raw, '`')
	m.line(bold(prose(raw[:i])) + `\fI` + code(name) + `\fR` + bold(prose(plain[i+len(name):])) + bold(prose(usage[len(plain):])))
}

// flagSyntax sets "--bridge BR" (one of flagNamesHelp's names) as
// \fB\-\-bridge\fR \fIBR\fR.
func flagSyntax(n string) string {
	name, arg, _ := strings.Cut(n, " ")
	s := `\fB` + code(name) + `\fR`
	if arg != "" {
		s += " " + argSyntax(arg)
	}
	return s
}

// synopsisFlag is one [--flag ARG] of a synopsis, with ... when the flag
// may be repeated.
func synopsisFlag(f cli.Flag) string {
	// An unpaddable space keeps a flag and its argument on one line;
	// \& after ... keeps it from ending a sentence.
	s := "[" + strings.Replace(flagSyntax(strings.Split(flagNamesHelp(f), ", ")[0]), " ", `\ `, 1) + "]"
	switch f.(type) {
	case *cli.StringSliceFlag, *cli.IntSliceFlag, *cli.Int64SliceFlag, *cli.UintSliceFlag, *cli.Float64SliceFlag:
		s += `...\&`
	}
	return s
}

// argSyntax sets an argument's syntax: placeholders (IFACE, POD-IP) in
// italics, literal words (bash, on) in bold, the brackets and bars of
// the syntax in roman.
func argSyntax(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i := 0; i < len(rs); {
		r := rs[i]
		if !unicode.IsLetter(r) {
			switch r {
			case '-':
				b.WriteString(`\-`)
			case '\\':
				b.WriteString(`\e`)
			default:
				b.WriteRune(r)
			}
			i++
			continue
		}
		j := i
		for j < len(rs) && (unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j]) || rs[j] == '-' || rs[j] == '_') {
			j++
		}
		font := `\fB`
		if unicode.IsUpper(r) {
			font = `\fI`
		}
		b.WriteString(font + code(string(rs[i:j])) + `\fR`)
		i = j
	}
	return b.String()
}

// escape makes s safe as roff text: a backslash is \e, and a line that
// would start with a control character starts with \& instead.
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// code escapes literal text: every dash is a minus.
func code(s string) string {
	return strings.ReplaceAll(escape(s), "-", `\-`)
}

// prose escapes running text: a dash that starts a word (--bridge, -o,
// "- for stdout") is a minus, one inside a word (kube-proxy) a hyphen.
func prose(s string) string {
	s = escape(s)
	var b strings.Builder
	minus := false
	for i, r := range s {
		if r == '-' {
			prev := rune(0)
			if i > 0 {
				prev = rune(s[i-1])
			}
			if minus || !(unicode.IsLetter(prev) || unicode.IsDigit(prev)) {
				b.WriteString(`\-`)
				minus = true
				continue
			}
		}
		minus = false
		b.WriteRune(r)
	}
	return b.String()
}

// bold sets **x** in bold.
func bold(s string) string {
	parts := strings.Split(s, "**")
	if len(parts)%2 == 0 {
		return s
	}
	var b strings.Builder
	for i, p := range parts {
		if i%2 == 1 {
			b.WriteString(`\fB` + p + `\fR`)
		} else {
			b.WriteString(p)
		}
	}
	return b.String()
}
