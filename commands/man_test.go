//go:build !urfave_cli_no_docs

package commands

import (
	"flag"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/doctor"
)

var update = flag.Bool("update", false, "rewrite generated files (man page, completion scripts)")

// TestManPageUpToDate fails when man/hairpinctl.8 differs from what the CLI
// definitions generate; run `go test ./commands -run ManPage -update` after
// changing a command.
func TestManPageUpToDate(t *testing.T) {
	got := ManPage()
	const path = "../man/hairpinctl.8"
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate it with: go test ./commands -run ManPage -update)", err)
	}
	if string(want) != got {
		t.Errorf("%s is stale: regenerate with go test ./commands -run ManPage -update", path)
	}
	for _, section := range []string{".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH COMMANDS", ".SH EXIT STATUS", ".SH FILES", ".SH EXAMPLES", ".SH SEE ALSO"} {
		if !strings.Contains(got, section) {
			t.Errorf("man page lacks %s", section)
		}
	}
	for _, cmd := range NewApp("").VisibleCommands() {
		if cmd.Name != "help" && !strings.Contains(got, cmd.Name) {
			t.Errorf("man page lacks command %s", cmd.Name)
		}
	}
}

// TestManPageRenders runs mandoc's linter, which make test-deps installs.
func TestManPageRenders(t *testing.T) {
	mandoc, err := exec.LookPath("mandoc")
	if err != nil {
		t.Skip("mandoc not installed (make test-deps installs it)")
	}
	out, err := exec.Command(mandoc, "-T", "lint", "-W", "warning", "../man/hairpinctl.8").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("mandoc -T lint: %v\n%s", err, out)
	}
}

// manSection returns a section of the page's source, from its heading
// (".SH FILES", ".SS doctor") to the next heading of the same level or
// above; "" when there is none.
func manSection(page, heading string) string {
	i := strings.Index(page, "\n"+heading+"\n")
	if i < 0 {
		return ""
	}
	rest := page[i+1+len(heading)+1:]
	ends := []string{"\n.SH "}
	if strings.HasPrefix(heading, ".SS ") {
		ends = append(ends, "\n.SS ")
	}
	for _, e := range ends {
		if j := strings.Index(rest, e); j >= 0 {
			rest = rest[:j+1]
		}
	}
	return rest
}

// TestManPageContent: hairpinctl(8) is a page an admin reads, as ip(8)
// and conntrack(8) are: not urfave/cli's markdown (a synopsis of
// "[--netns]=[value]", flags as --hairpin=""), but each command in the
// synopsis with its options and arguments, a section per command with
// its arguments, options and examples, doctor's checks, the exit status
// once, the environment and the files.
func TestManPageContent(t *testing.T) {
	page := ManPage()
	for _, bad := range []string{"=[value]", `=""`, "[ --"} {
		if strings.Contains(page, bad) {
			t.Errorf("man page contains %q", bad)
		}
	}

	last := -1
	for _, h := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"} {
		sh := "\n.SH " + h + "\n"
		if n := strings.Count(page, sh); n != 1 {
			t.Errorf("man page has %d sections %s, want 1", n, h)
			continue
		}
		if i := strings.Index(page, sh); i < last {
			t.Errorf("man page: %s out of order", h)
		} else {
			last = i
		}
	}

	app := NewApp("")
	synopsis := manSection(page, ".SH SYNOPSIS")
	options := manSection(page, ".SH OPTIONS")
	for _, f := range app.VisibleFlags() {
		if !strings.Contains(options, ".TP\n\\fB"+code(dashed(f.Names()[0]))+`\fR`) {
			t.Errorf("OPTIONS lacks --%s", f.Names()[0])
		}
	}
	for _, c := range app.VisibleCommands() {
		if c.Name == "help" {
			continue
		}
		if !strings.Contains(synopsis, ".SY hairpinctl\n.B "+c.Name+"\n") {
			t.Errorf("SYNOPSIS lacks %s", c.Name)
		}
		sec := manSection(page, ".SS "+code(strings.Join(c.Names(), ", ")))
		if sec == "" {
			t.Errorf("COMMANDS lacks a section for %s", c.Name)
			continue
		}
		for _, f := range c.VisibleFlags() {
			name := f.Names()[0]
			if name == "netns" || name == "help" {
				continue
			}
			flag := `\fB` + code(dashed(name)) + `\fR`
			if !strings.Contains(sec, ".TP\n"+flag) {
				t.Errorf("%s section lacks option %s", c.Name, name)
			}
			if !strings.Contains(synopsis, "["+flag) {
				t.Errorf("SYNOPSIS of %s lacks option %s", c.Name, name)
			}
		}
		if c.ArgsUsage != "" {
			if !strings.Contains(synopsis, argSyntax(c.ArgsUsage)) {
				t.Errorf("SYNOPSIS of %s lacks its arguments %s", c.Name, c.ArgsUsage)
			}
			for _, a := range splitArgs(c.ArgsUsage) {
				if manArgs[a] == "" {
					t.Errorf("%s: argument %s is not described in manArgs", c.Name, a)
				}
				if !strings.Contains(sec, "Arguments:\n") || !strings.Contains(sec, ".TP\n"+argSyntax(a)+"\n") {
					t.Errorf("%s section lacks argument %s", c.Name, a)
				}
			}
		}
		if m := examplesBlock.FindStringSubmatch(c.Description); m != nil {
			first := strings.TrimPrefix(strings.SplitN(m[1], "\n", 2)[0], "   ")
			if !strings.Contains(sec, "Examples:\n.RS 4\n.EX\n"+code(first)+"\n") {
				t.Errorf("%s section lacks its examples (%q)", c.Name, first)
			}
		}
	}

	sec := manSection(page, ".SS doctor")
	for _, id := range []string{doctor.CheckBridgeHairpin, doctor.CheckBrNetfilter, doctor.CheckIPForward, doctor.CheckKubeProxy,
		doctor.CheckMasquerade, doctor.CheckService + ":", doctor.CheckCNIConfig, doctor.CheckConntrack} {
		if !strings.Contains(sec, ".TP\n\\fB"+code(id)) {
			t.Errorf("doctor section lacks check %s", id)
		}
	}
	if !strings.Contains(sec, `"`+doctor.CheckServices+`"`) {
		t.Errorf("doctor section lacks check %s", doctor.CheckServices)
	}

	env := manSection(page, ".SH ENVIRONMENT")
	for _, v := range []string{netnsEnv, "NO_COLOR", "TERM", "LC_ALL", "LANG"} {
		if !regexp.MustCompile(`(?m)^\.B .*\b` + v + `\b`).MatchString(env) {
			t.Errorf("ENVIRONMENT lacks %s", v)
		}
	}

	files := manSection(page, ".SH FILES")
	want := []string{"/run/netns/NAME", "/run/hairpinctl/ready", doctor.DefaultCNIConfDir}
	units, err := os.ReadDir("../systemd")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		want = append(want, "/usr/lib/systemd/system/"+u.Name())
	}
	for _, f := range want {
		if !strings.Contains(files, `\fI`+code(f)) {
			t.Errorf("FILES lacks %s", f)
		}
	}
}

// TestManPageEscapes: text reaches roff as typed: options with minus
// signs (so they copy as typed), hyphens inside words, no line starting
// with a control character, backslashes shown.
func TestManPageEscapes(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"--bridge BR or -o json", `\-\-bridge BR or \-o json`},
		{"kube-proxy's load-balanced", "kube-proxy's load-balanced"},
		{"DIR; - for stdout", `DIR; \- for stdout`},
		{"(-s podIP -j KUBE-MARK-MASQ)", `(\-s podIP \-j KUBE-MARK-MASQ)`},
		{".../brport", `\&.../brport`},
		{"'quoted'", `\&'quoted'`},
		{`a\b`, `a\eb`},
	} {
		if got := prose(tt.in); got != tt.want {
			t.Errorf("prose(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got, want := code("--wait-bridge 2m"), `\-\-wait\-bridge 2m`; got != want {
		t.Errorf("code = %q, want %q", got, want)
	}
	if got, want := argSyntax("[IP[:PORT] | NS/NAME[:PORT]]..."), `[\fIIP\fR[:\fIPORT\fR] | \fINS\fR/\fINAME\fR[:\fIPORT\fR]]...`; got != want {
		t.Errorf("argSyntax = %q, want %q", got, want)
	}
	if got, want := argSyntax("bash|zsh|fish"), `\fBbash\fR|\fBzsh\fR|\fBfish\fR`; got != want {
		t.Errorf("argSyntax = %q, want %q", got, want)
	}
}
