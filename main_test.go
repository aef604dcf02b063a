package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bin is the hairpinctl binary built once for the end-to-end tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hairpinctl-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Readable by the unprivileged user some tests run it as.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "hairpinctl")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build hairpinctl: %v\n%s", err, out)
		os.Exit(1)
	}
	links, namespaces := hostState()
	code := m.Run()
	os.RemoveAll(dir)
	// Every test works in namespaces of its own: nothing may be left in
	// the host namespace or under /run/netns. `go test ./...` runs the
	// netops tests beside these, and their labs come and go meanwhile: what
	// is still there after a grace period longer than any one test is left.
	var extraLinks, extraNs []string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		afterLinks, afterNs := hostState()
		extraLinks, extraNs = added(links, afterLinks), added(namespaces, afterNs)
		if len(extraLinks)+len(extraNs) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(extraLinks) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the tests left links in the host namespace: %v\n", extraLinks)
		code = 1
	}
	if len(extraNs) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the tests left namespaces under /run/netns: %v\n", extraNs)
		code = 1
	}
	os.Exit(code)
}

// hostState lists the host namespace's links and the named namespaces.
func hostState() (links, namespaces []string) {
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		links = append(links, i.Name)
	}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		namespaces = append(namespaces, e.Name())
	}
	return links, namespaces
}

// added returns what is in after but not in before.
func added(before, after []string) []string {
	had := map[string]bool{}
	for _, b := range before {
		had[b] = true
	}
	var out []string
	for _, a := range after {
		if !had[a] {
			out = append(out, a)
		}
	}
	return out
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

// run runs hairpinctl with args.
func run(t *testing.T, args ...string) result {
	t.Helper()
	return runAs(t, nil, args...)
}

// runAs runs hairpinctl, as another user when cred is set.
func runAs(t *testing.T, cred *syscall.Credential, args ...string) result {
	t.Helper()
	return runCmd(t, cred, nil, args...)
}

// runCmd runs hairpinctl as cred (nil: as we are) with extra environment
// variables after the inherited ones.
func runCmd(t *testing.T, cred *syscall.Credential, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "NO_COLOR=1"), env...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return r
}

// badInput is one bad invocation: who runs it (nil: root), the arguments,
// the documented exit code and a piece of the one-line message.
type badInput struct {
	name string
	cred *syscall.Credential
	args []string
	code int
	msg  string
}

// checkBadInput runs each case: the exit code, one line on stderr naming
// the problem, and nothing on stdout (no partial data for scripts).
func checkBadInput(t *testing.T, tests []badInput) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runAs(t, tt.cred, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d (%+v)", r.code, tt.code, r)
			}
			oneLineErr(t, r, tt.msg)
			if r.stdout != "" {
				t.Errorf("stdout not empty: %q", r.stdout)
			}
		})
	}
}

// oneLineErr checks the documented error shape: exactly one line on
// stderr, prefixed "hairpinctl: ", containing want.
func oneLineErr(t *testing.T, r result, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "hairpinctl: ") || !strings.Contains(lines[0], want) {
		t.Errorf("stderr = %q, want one line containing %q", r.stderr, want)
	}
}

func TestVersionAndHelp(t *testing.T) {
	r := run(t, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "hairpinctl ") {
		t.Errorf("version: %+v", r)
	}
	r = run(t, "--help")
	for _, want := range []string{"EXIT STATUS", "3  partial", "ports", "enable", "disable"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	r = run(t, "nosuchcommand")
	if r.code != 2 {
		t.Errorf("unknown command exit %d, want 2", r.code)
	}
	oneLineErr(t, r, `unknown command "nosuchcommand"`)
}

// Parse errors say, in the words of the command line, what is wrong and
// what to type instead; a misspelt command or flag gets a suggestion.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		args []string
		msg  string
	}{
		{[]string{"conntrack", "10.96.0.10", "--timeout", "5"}, `conntrack: invalid value "5" for --timeout: use a duration such as 5s (see: hairpinctl conntrack --help)`},
		{[]string{"enable", "--all", "--wait-bridge", "2"}, `enable: invalid value "2" for --wait-bridge: use a duration such as 2s (see: hairpinctl enable --help)`},
		{[]string{"watch", "--all", "--resync=soon"}, `watch: invalid value "soon" for --resync: use a duration such as 5s or 2m (see: hairpinctl watch --help)`},
		{[]string{"conntrack", "10.96.0.10", "-c", "x"}, `conntrack: invalid value "x" for -c: use a whole number (see: hairpinctl conntrack --help)`},
		{[]string{"enable", "--dry-run=maybe", "veth1"}, `enable: invalid value "maybe" for --dry-run: it takes no value (--dry-run, or --dry-run=false) (see: hairpinctl enable --help)`},
		{[]string{"ports", "--hairpin"}, `ports: --hairpin needs a value (see: hairpinctl ports --help)`},
		{[]string{"-o", "json", "--output", "table", "ports"}, `-o and --output are the same flag: give it once (see: hairpinctl --help)`},
		{[]string{"ports", "-o", "json", "--output", "table"}, `ports: -o and --output are the same flag: give it once (see: hairpinctl ports --help)`},
		{[]string{"port"}, `unknown command "port": did you mean ports? (see: hairpinctl --help)`},
		{[]string{"enabel", "--all"}, `unknown command "enabel": did you mean enable? (see: hairpinctl --help)`},
		{[]string{"xyzzy"}, `unknown command "xyzzy" (see: hairpinctl --help)`},
		{[]string{"enable", "--brigde", "cni0"}, `enable: unknown flag --brigde: did you mean --bridge? (see: hairpinctl enable --help)`},
		{[]string{"ports", "--quite"}, `ports: unknown flag --quite: did you mean --quiet? (see: hairpinctl ports --help)`},
		{[]string{"--netsn", "x", "ports"}, `unknown flag --netsn: did you mean --netns? (see: hairpinctl --help)`},
		{[]string{"enable", "--bogus"}, `enable: unknown flag --bogus (see: hairpinctl enable --help)`},
		{[]string{"services", "--wait", "5x"}, `services: invalid value "5x" for --wait: use a duration such as 5s`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := run(t, tt.args...)
			if r.code != 2 || r.stdout != "" || r.stderr != "hairpinctl: "+tt.msg+"\n" {
				t.Errorf("exit %d, stdout %q, stderr %q\nwant exit 2, stderr %q", r.code, r.stdout, r.stderr, "hairpinctl: "+tt.msg+"\n")
			}
		})
	}
}

// --version prints what the version command prints; a bare hairpinctl is
// a usage error (exit 2) with the help on stderr and nothing on stdout.
func TestVersionFlagAndBareCommand(t *testing.T) {
	want := run(t, "version")
	for _, args := range [][]string{{"--version"}, {"--netns", "x", "--version"}} {
		if r := run(t, args...); r.code != 0 || r.stdout != want.stdout || r.stderr != "" {
			t.Errorf("%v: %+v, want %q", args, r, want.stdout)
		}
	}
	wantJSON := run(t, "version", "-o", "json")
	if r := run(t, "-o", "json", "--version"); r.code != 0 || r.stdout != wantJSON.stdout {
		t.Errorf("-o json --version: %+v, want %q", r, wantJSON.stdout)
	}

	for _, args := range [][]string{nil, {"-o", "json"}} {
		r := run(t, args...)
		if r.code != 2 || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q; want 2 and nothing on stdout", args, r.code, r.stdout)
		}
		if !strings.Contains(r.stderr, "USAGE:") || !strings.HasSuffix(r.stderr, "\nhairpinctl: no command given (see: hairpinctl --help)\n") {
			t.Errorf("%v: stderr %q, want the help then the error", args, r.stderr)
		}
	}
	if r := run(t, "--help"); r.code != 0 || !strings.Contains(r.stdout, "USAGE:") || !strings.Contains(r.stdout, "--version") {
		t.Errorf("--help: %+v", r)
	}
}
