//go:build !urfave_cli_no_docs

package commands

import (
	"flag"
	"os"
	"os/exec"
	"strings"
	"testing"
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
