package commands

import (
	"bytes"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// helpOf returns hairpinctl --help.
func helpOf(t *testing.T) string {
	t.Helper()
	app := NewApp("test")
	var out, errb bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errb
	if err := app.Run([]string{"hairpinctl", "--help"}); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	return out.String()
}

// commandHelp returns hairpinctl CMD --help as the app prints it, from a
// copy: running the command would set up the package-level command (add
// its help flag), which the man page test would then see.
func commandHelp(cmd *cli.Command) string {
	c := *cmd
	c.HelpName = "hairpinctl " + c.Name
	var out bytes.Buffer
	cli.HelpPrinter(&out, c.CustomHelpTemplate, &c)
	return out.String()
}

// --help fits 80 columns (the descriptions' own text aside, which their
// authors wrap), names each flag once, drops "(default: false)" and says
// the exit codes once, at the top, as the README does.
func TestHelpFits80Columns(t *testing.T) {
	top := helpOf(t)
	for _, ln := range strings.Split(top, "\n") {
		if n := displayWidth(ln); n > 80 {
			t.Errorf("hairpinctl --help: %d columns: %q", n, ln)
		}
	}
	for _, want := range []string{
		"EXIT STATUS:",
		"   2  usage error or invalid input: no command, bad flag, malformed name, a\n      single unknown interface, unknown bridge or namespace\n",
		"   4  doctor found at least one FAIL",
	} {
		if !strings.Contains(top, want) {
			t.Errorf("hairpinctl --help lacks %q:\n%s", want, top)
		}
	}
	for _, cmd := range NewApp("test").VisibleCommands() {
		if cmd.Name == "help" {
			continue
		}
		out := commandHelp(cmd)
		for _, ln := range strings.Split(out, "\n") {
			if n := displayWidth(ln); n > 80 {
				t.Errorf("%s --help: %d columns: %q", cmd.Name, n, ln)
			}
		}
		for _, bad := range []string{"[ --", "(default: false)", `(default: "`, "(default: 0s)", "EXIT STATUS"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s --help has %q:\n%s", cmd.Name, bad, out)
			}
		}
	}
	enable := commandHelp(enableCommand)
	for _, want := range []string{"   --bridge BR, -b BR  ", "\n   --all  ", "(default: table)"} {
		if !strings.Contains(enable, want) {
			t.Errorf("enable --help lacks %q:\n%s", want, enable)
		}
	}
}
