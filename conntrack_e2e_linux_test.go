package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
)

// ctFlow is the documented JSON schema of one conntrack line.
type ctFlow struct {
	Time    *time.Time `json:"time"`
	Event   string     `json:"event"`
	ID      uint32     `json:"id"`
	Proto   string     `json:"proto"`
	State   *string    `json:"state"`
	Orig    *ctTuple   `json:"orig"`
	Reply   *ctTuple   `json:"reply"`
	DNAT    *bool      `json:"dnat"`
	SNAT    *bool      `json:"snat"`
	Hairpin *bool      `json:"hairpin"`
	Resync  bool       `json:"resync"`
	// ClientPod is present when the client is a pod something names.
	ClientPod *struct {
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		UID         string `json:"uid"`
		ContainerID string `json:"containerID"`
		Network     string `json:"network"`
		Interface   string `json:"interface"`
		Source      string `json:"source"`
	} `json:"clientPod"`
	// overflow lines
	Overflows int    `json:"overflows"`
	Lost      uint64 `json:"lost"`
}

type ctTuple struct {
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	SPort int    `json:"sport"`
	DPort int    `json:"dport"`
}

// parseCT parses one JSON line strictly: unknown keys fail, and a flow
// line must carry every documented key.
func parseCT(t *testing.T, line string) ctFlow {
	t.Helper()
	var f ctFlow
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("JSON line %q: %v", line, err)
	}
	if f.Time == nil || f.Event == "" {
		t.Fatalf("JSON line without time or event: %q", line)
	}
	if f.Event == "overflow" {
		return f
	}
	if f.State == nil || f.Orig == nil || f.Reply == nil || f.DNAT == nil || f.SNAT == nil || f.Hairpin == nil || f.Proto == "" {
		t.Fatalf("JSON flow line lacks a documented key: %q", line)
	}
	return f
}

// newCTLab builds a lab with hairpin on (the endpoint pod reaches
// itself) and, with shortTimeWait, TIME_WAIT entries that expire in a
// second so their destroy events come during the test.
func newCTLab(t *testing.T, shortTimeWait bool) *lab.Lab {
	t.Helper()
	l := newLab(t, lab.Options{Pods: 2, Endpoints: []int{1}, Hairpin: true})
	if shortTimeWait {
		labtest.ShortTimeWait(t, l)
	}
	return l
}

// ctHold keeps a connection from pod to the Service open for the test:
// a flow that stays in the table. It returns the client port.
func ctHold(t *testing.T, l *lab.Lab, pod *lab.Pod) int {
	t.Helper()
	c, _ := labtest.HoldService(t, l, pod)
	return c.LocalAddr().(*net.TCPAddr).Port
}

// ctConnect makes one connection from pod to the Service, reads the
// answer, closes, and returns the client port.
func ctConnect(t *testing.T, l *lab.Lab, pod *lab.Pod) int {
	t.Helper()
	c, _ := labtest.HoldService(t, l, pod)
	defer c.Close()
	return c.LocalAddr().(*net.TCPAddr).Port
}

// ctProc is hairpinctl conntrack running in the background.
type ctProc struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr bytes.Buffer
	done   chan struct{}
	code   int
	seen   []string
}

func startCT(t *testing.T, args ...string) *ctProc {
	t.Helper()
	p := &ctProc{cmd: exec.Command(bin, args...), lines: make(chan string, 1<<20), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "NO_COLOR=1")
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		err := p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		if err != nil && p.code < 0 {
			p.code = 255
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitLine returns the first output line, already read or to come, that
// satisfies ok. poke, when set, runs every 200ms while it waits.
func (p *ctProc) waitLine(t *testing.T, what string, timeout time.Duration, poke func(), ok func(string) bool) string {
	t.Helper()
	for _, l := range p.seen {
		if ok(l) {
			return l
		}
	}
	deadline := time.After(timeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case l := <-p.lines:
			p.seen = append(p.seen, l)
			if ok(l) {
				return l
			}
		case <-tick.C:
			if poke != nil {
				poke()
			}
		case <-p.done:
			// Drain what was printed before the exit.
			for len(p.lines) > 0 {
				l := <-p.lines
				p.seen = append(p.seen, l)
				if ok(l) {
					return l
				}
			}
			t.Fatalf("waiting for %s: hairpinctl exited %d; stdout %q stderr %q", what, p.code, p.seen, p.stderr.String())
		case <-deadline:
			t.Fatalf("no %s within %v; stdout %q", what, timeout, p.seen)
		}
	}
}

// wait waits for the exit and returns every stdout line.
func (p *ctProc) wait(t *testing.T, timeout time.Duration) []string {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("hairpinctl still running after %v; stdout %q", timeout, p.seen)
	}
	for len(p.lines) > 0 {
		p.seen = append(p.seen, <-p.lines)
	}
	return p.seen
}

var summaryRE = regexp.MustCompile(`^hairpinctl: conntrack: (\d+) flows? in (\d+) lines?, (\d+) overflows \((\d+) events lost\)$`)

// summary checks that the last stderr line is the one-line summary and
// returns its numbers: lines printed (entries and events), overflows,
// events lost.
func summary(t *testing.T, stderr string) (lines, overflows, lost int) {
	t.Helper()
	_, lines, overflows, lost = summaryAll(t, stderr)
	return
}

// summaryAll is summary with the number of flows (connections) first.
func summaryAll(t *testing.T, stderr string) (flows, lines, overflows, lost int) {
	t.Helper()
	ls := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	m := summaryRE.FindStringSubmatch(ls[len(ls)-1])
	if m == nil {
		t.Fatalf("stderr does not end with the summary: %q", stderr)
	}
	flows, _ = strconv.Atoi(m[1])
	lines, _ = strconv.Atoi(m[2])
	overflows, _ = strconv.Atoi(m[3])
	lost, _ = strconv.Atoi(m[4])
	return
}

func TestE2EConntrackBadInput(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"no service", []string{"conntrack"}, "give one SERVICE-IP"},
		{"two services", []string{"conntrack", "10.96.0.10", "10.96.0.11"}, "give one SERVICE-IP"},
		{"malformed IP", []string{"conntrack", "10.96.0.300"}, `"10.96.0.300" is not an IP address`},
		{"a name", []string{"conntrack", "kubernetes.default"}, "is not an IP address"},
		{"port 0", []string{"conntrack", "10.96.0.10", "--port", "0"}, "--port 0 is not a port"},
		{"port too big", []string{"conntrack", "10.96.0.10", "--port", "65536"}, "--port 65536 is not a port"},
		{"port not a number", []string{"conntrack", "10.96.0.10", "--port", "http"}, "invalid value"},
		{"bad proto", []string{"conntrack", "10.96.0.10", "--proto", "icmp"}, `protocol "icmp" is not tcp, udp or sctp`},
		{"negative count", []string{"conntrack", "10.96.0.10", "--count", "-1"}, "--count -1 is negative"},
		{"negative timeout", []string{"conntrack", "10.96.0.10", "--timeout", "-1s"}, "--timeout -1s is negative"},
		{"nothing to show", []string{"conntrack", "10.96.0.10", "--no-dump", "--no-follow"}, "leave nothing to show"},
		{"bad output", []string{"conntrack", "10.96.0.10", "-o", "yaml"}, `unknown output format "yaml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, tt.args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2 (%+v)", r.code, r)
			}
			oneLineErr(t, r, tt.msg)
		})
	}
	t.Run("no CAP_NET_ADMIN", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to run the binary as another user")
		}
		r := runAs(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "conntrack", "10.96.0.10", "--no-follow")
		if r.code != 1 {
			t.Errorf("exit %d, want 1 (%+v)", r.code, r)
		}
		oneLineErr(t, r, "conntrack needs CAP_NET_ADMIN: run as root")
	})
}

// The dump, in both formats: a flow from another pod and one from the
// endpoint pod itself, the latter marked HAIRPIN and SNAT.
func TestE2EConntrackDump(t *testing.T) {
	l := newCTLab(t, false)
	self, other := l.Pod(1), l.Pod(2)
	otherPort := ctHold(t, l, other)
	selfPort := ctHold(t, l, self)

	// Under the C locale, as cron and many units run: plain ASCII.
	r := runCmd(t, nil, []string{"LC_ALL=C"}, "conntrack", "10.96.0.10", "--no-follow", "--netns", l.Node)
	if r.code != 0 {
		t.Fatalf("table: %+v", r)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 3 || lines[0] != "EVENT    SERVICE  STATE       CLIENT            ENDPOINT    SNAT       FLAGS" {
		t.Fatalf("table:\n%s", r.stdout)
	}
	if f, n, _, _ := summaryAll(t, r.stderr); f != 2 || n != 2 {
		t.Errorf("summary says %d flows in %d lines, want 2 in 2", f, n)
	}
	for _, ln := range lines {
		if n := len(ln); n > 80 {
			t.Errorf("%d columns, over 80: %q", n, ln)
		}
		for _, c := range []byte(ln) {
			if c >= 0x80 {
				t.Errorf("not ASCII under LC_ALL=C: %q", ln)
				break
			}
		}
	}
	// The node's address on cni0: what a masqueraded pod appears as.
	gw := ""
	for _, ln := range lines[1:] {
		// EVENT SERVICE STATE CLIENT ENDPOINT SNAT [FLAGS]
		fields := strings.Fields(ln)
		if len(fields) < 6 || fields[0] != "existing" || fields[1] != "80/tcp" || fields[4] != self.IP.String() {
			t.Errorf("row %q", ln)
			continue
		}
		switch fields[3] {
		case fmt.Sprintf("%s:%d", other.IP, otherPort):
			if len(fields) != 6 || fields[5] != "-" {
				t.Errorf("other pod's flow masqueraded or marked: %q", ln)
			}
		case fmt.Sprintf("%s:%d", self.IP, selfPort):
			if len(fields) != 7 || fields[6] != "HAIRPIN" || fields[5] == "-" || fields[5] == "missing" {
				t.Errorf("self flow not marked HAIRPIN with its SNAT address: %q", ln)
			}
			gw = fields[5]
		default:
			t.Errorf("row from an unknown client: %q", ln)
		}
	}

	// -o wide adds the time and the endpoint's port.
	r = run(t, "conntrack", "10.96.0.10", "--no-follow", "-o", "wide", "--netns", l.Node)
	lines = strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "TIME     EVENT    SERVICE  STATE") {
		t.Fatalf("-o wide: %+v", r)
	}
	for _, ln := range lines[1:] {
		fields := strings.Fields(ln)
		if len(fields) < 7 || len(fields[0]) != 8 || fields[5] != self.IP.String()+":8080" {
			t.Errorf("wide row %q", ln)
		}
		if strings.HasPrefix(fields[4], self.IP.String()+":") && (fields[6] != gw || fields[7] != "HAIRPIN") {
			t.Errorf("wide self row %q, want SNAT %s", ln, gw)
		}
	}

	r = run(t, "-o", "json", "conntrack", "--netns", l.Node, "--no-follow", "--port", "80", "--proto", "TCP", "10.96.0.10") // as the table prints it
	if r.code != 0 {
		t.Fatalf("json: %+v", r)
	}
	lines = strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("json: %d lines: %s", len(lines), r.stdout)
	}
	hairpins := 0
	for _, ln := range lines {
		f := parseCT(t, ln)
		if f.Event != "existing" || f.Orig.Dst != "10.96.0.10" || f.Orig.DPort != 80 || f.Reply.Src != self.IP.String() || f.Reply.SPort != 8080 || !*f.DNAT {
			t.Errorf("json flow %q", ln)
		}
		if *f.Hairpin {
			hairpins++
			if f.Orig.Src != self.IP.String() || f.Orig.SPort != selfPort || !*f.SNAT {
				t.Errorf("hairpin flow %q", ln)
			}
		}
	}
	if hairpins != 1 {
		t.Errorf("%d hairpin flows, want 1", hairpins)
	}

	// Filters that match nothing print nothing and succeed.
	r = run(t, "conntrack", "10.96.0.10", "--no-follow", "--port", "81", "-o", "json", "--netns", l.Node)
	if r.code != 0 || r.stdout != "" {
		t.Errorf("--port 81: %+v", r)
	}
}

// Following: the dump, then new/update/destroy events for a connection
// from another pod and one from the endpoint pod itself; Ctrl-C ends it
// within a second with the summary.
func TestE2EConntrackFollow(t *testing.T) {
	l := newCTLab(t, true)
	self, other := l.Pod(1), l.Pod(2)
	ctHold(t, l, other)

	p := startCT(t, "conntrack", "10.96.0.10", "-o", "json", "--netns", l.Node)
	// The dump comes after the subscription: once it printed, events are followed.
	p.waitLine(t, "the existing flow", 10*time.Second, nil, func(s string) bool { return parseCT(t, s).Event == "existing" })

	for _, pod := range []*lab.Pod{other, self} {
		if got, err := l.ConnectService(pod, 3*time.Second); err != nil || got != self.Name {
			t.Fatalf("%s → Service: %q, %v", pod.Name, got, err)
		}
	}
	isNew := func(src string) func(string) bool {
		return func(s string) bool { f := parseCT(t, s); return f.Event == "new" && f.Orig.Src == src }
	}
	nOther := parseCT(t, p.waitLine(t, "new from the other pod", 5*time.Second, nil, isNew(other.IP.String())))
	nSelf := parseCT(t, p.waitLine(t, "new from the endpoint pod", 5*time.Second, nil, isNew(self.IP.String())))
	if nOther.Reply.Src != self.IP.String() || nOther.Reply.SPort != 8080 || *nOther.Hairpin || *nOther.SNAT {
		t.Errorf("new from other pod: %+v %+v", nOther.Reply, nOther)
	}
	if nSelf.Reply.Src != self.IP.String() || !*nSelf.Hairpin || !*nSelf.SNAT {
		t.Errorf("new from the endpoint pod: %+v %+v", nSelf.Reply, nSelf)
	}

	// TIME_WAIT lasts a second; a dump (hairpinctl's own) reaps the
	// expired entries, which sends their destroy events.
	reap := func() { run(t, "conntrack", "10.96.0.10", "--no-follow", "--netns", l.Node) }
	for _, n := range []ctFlow{nOther, nSelf} {
		d := parseCT(t, p.waitLine(t, fmt.Sprintf("destroy of %d", n.ID), 15*time.Second, reap, func(s string) bool {
			f := parseCT(t, s)
			return f.Event == "destroy" && f.ID == n.ID
		}))
		if *d.Orig != *n.Orig || *d.Reply != *n.Reply || *d.Hairpin != *n.Hairpin {
			t.Errorf("destroy %+v does not match new %+v", d, n)
		}
	}

	// Ctrl-C ends the follow: wait fails the test if it does not.
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	out := p.wait(t, 5*time.Second)
	if p.code != 0 {
		t.Errorf("exit %d after Ctrl-C; stderr %q", p.code, p.stderr.String())
	}
	// A flow is a connection, however many events it had.
	conns := map[ctTuple]bool{}
	for _, ln := range out {
		conns[*parseCT(t, ln).Orig] = true
	}
	flows, lines, overflows, _ := summaryAll(t, p.stderr.String())
	if flows != len(conns) || lines != len(out) || overflows != 0 || flows >= lines {
		t.Errorf("summary %d flows in %d lines, %d overflows; printed %d lines of %d connections", flows, lines, overflows, len(out), len(conns))
	}
	if strings.Count(p.stderr.String(), "\n") != 1 {
		t.Errorf("stderr is not one line: %q", p.stderr.String())
	}
}

// --count, --timeout and SIGTERM bound a run.
func TestE2EConntrackBounds(t *testing.T) {
	l := newCTLab(t, false)
	other := l.Pod(2)

	start := time.Now()
	r := run(t, "conntrack", "10.96.0.10", "--timeout", "700ms", "--netns", l.Node)
	if d := time.Since(start); r.code != 0 || d < 700*time.Millisecond || d > 3*time.Second {
		t.Errorf("--timeout 700ms: exit %d after %v (%+v)", r.code, d, r)
	}
	if f, _, _ := summary(t, r.stderr); f != 0 || r.stdout != "EVENT    SERVICE  STATE       CLIENT            ENDPOINT    SNAT       FLAGS\n" {
		t.Errorf("--timeout with nothing to show: %+v", r)
	}

	// --count 3: exactly three events, then exit 0. A held connection
	// makes the dump print a line, which shows the subscription is up.
	ctHold(t, l, other)
	p := startCT(t, "conntrack", "10.96.0.10", "--count", "3", "-o", "json", "--netns", l.Node)
	p.waitLine(t, "the existing flow", 10*time.Second, nil, func(s string) bool { return true })
	if _, err := l.ConnectService(other, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	out := p.wait(t, 10*time.Second)
	events := 0
	for _, ln := range out {
		if parseCT(t, ln).Event != "existing" {
			events++
		}
	}
	if p.code != 0 || events != 3 || len(out) != 4 {
		t.Errorf("--count 3: exit %d, %d events in %q", p.code, events, out)
	}

	// SIGTERM and SIGHUP (an SSH session dropping), like Ctrl-C, end a
	// follow with the summary (wait fails the test if they do not).
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP} {
		p = startCT(t, "conntrack", "10.96.0.10", "--netns", l.Node)
		p.waitLine(t, "the existing flow", 10*time.Second, nil, func(s string) bool { return strings.Contains(s, "existing") })
		_ = p.cmd.Process.Signal(sig)
		p.wait(t, 5*time.Second)
		if p.code != 0 {
			t.Errorf("%v: exit %d", sig, p.code)
		}
		if f, _, _ := summary(t, p.stderr.String()); f == 0 || f != len(p.seen)-1 {
			t.Errorf("%v: summary %q after %d rows", sig, p.stderr.String(), len(p.seen)-1)
		}
	}
}

// A tiny receive buffer under bursts of connections: the overflow is
// reported on stderr and as a JSON line, counted in the summary, and the
// events printed plus the events lost equal what an independent listener
// counted: nothing is lost silently.
func TestE2EConntrackOverflow(t *testing.T) {
	l := newCTLab(t, false)
	other := l.Pod(2)
	ctHold(t, l, other)
	ref := labtest.ListenConntrack(t, l)
	p := startCT(t, "conntrack", "10.96.0.10", "--rcvbuf", "1", "-o", "json", "--netns", l.Node)
	// The dump comes after the subscription: its line means we are followed.
	p.waitLine(t, "the existing flow", 10*time.Second, nil, func(s string) bool { return parseCT(t, s).Event == "existing" })

	conns := 0
	burst := func() {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 25 {
					if _, err := l.ConnectService(other, 3*time.Second); err == nil {
						mu.Lock()
						conns++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
	}
	burst()
	ov := parseCT(t, p.waitLine(t, "an overflow line", 60*time.Second, burst, func(s string) bool { return parseCT(t, s).Event == "overflow" }))
	if ov.Overflows != 1 || ov.Lost == 0 {
		t.Errorf("first overflow line: overflows %d lost %d", ov.Overflows, ov.Lost)
	}

	// A last connection; once the reference saw it reach TIME_WAIT, its
	// last event, every event has been sent, and is queued on hairpinctl's
	// socket or counted as dropped. On Ctrl-C hairpinctl prints what is
	// queued before it exits.
	port := ctConnect(t, l, other)
	conns++
	ref.WaitTimeWait(t, uint16(port))

	_ = p.cmd.Process.Signal(os.Interrupt)
	out := p.wait(t, 5*time.Second)
	flows, overflows, lost := summary(t, p.stderr.String())
	if overflows < 1 || lost == 0 {
		t.Errorf("summary: %d overflows, %d lost", overflows, lost)
	}
	if !strings.Contains(p.stderr.String(), "hairpinctl: conntrack: event socket overflowed (1 so far, ") {
		t.Errorf("no overflow warning on stderr: %q", p.stderr.String())
	}
	events, overflowLines := 0, 0
	for _, ln := range out {
		switch f := parseCT(t, ln); f.Event {
		case "overflow":
			overflowLines++
		case "new", "update", "destroy":
			events++
		}
	}
	if overflowLines != overflows {
		t.Errorf("%d overflow lines, summary says %d", overflowLines, overflows)
	}
	if flows != len(out)-overflowLines {
		t.Errorf("summary says %d flows, printed %d", flows, len(out)-overflowLines)
	}
	sent := ref.Accounted(t, uint64(events), uint64(lost))
	t.Logf("%d connections: kernel sent %d events, %d printed, %d lost in %d overflows", conns, sent, events, lost, overflows)
}
