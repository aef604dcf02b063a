package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/lab"
)

// shellComplete runs a shell with the built binary first on PATH and
// returns the candidates its completion produced, one a line.
func shellComplete(t *testing.T, shell, script string) []string {
	t.Helper()
	path, err := exec.LookPath(shell)
	if err != nil {
		t.Skipf("%s not installed (make test-deps installs it)", shell)
	}
	cmd := exec.Command(path, "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", shell, err, out)
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" && l != "--" {
			got = append(got, strings.Fields(l)[0])
		}
	}
	return got
}

func TestCompletionInShells(t *testing.T) {
	l := newLab(t, lab.Options{Pods: 2, Restore: "none"})
	ns := l.Node
	type tc struct {
		line []string // words after "hairpinctl", the last under the cursor
		want []string
	}
	cases := []tc{
		{[]string{"en"}, []string{"enable"}},
		{[]string{"ports", "-o", ""}, []string{"json", "table", "wide"}},
		{[]string{"enable", "-o", ""}, []string{"json", "table"}},
		{[]string{"enable", "--netns", ns, "--bridge", ""}, []string{"cni0"}},
		{[]string{"enable", "--netns", ns, "veth"}, []string{"veth1", "veth2"}},
		{[]string{"disable", "--netns", ns, "--dr"}, []string{"--dry-run"}},
		{[]string{"probe", "--netns", ns, "-n", "5", "veth"}, []string{"veth1", "veth2"}},
		{[]string{"probe", "--netns", ns, "veth1", "veth"}, nil},
	}
	quote := func(ws []string) string {
		q := make([]string, len(ws))
		for i, w := range ws {
			q[i] = "'" + w + "'"
		}
		return strings.Join(q, " ")
	}
	for _, c := range cases {
		name := strings.Join(c.line, " ")
		words := append([]string{"hairpinctl"}, c.line...)
		t.Run("bash/"+name, func(t *testing.T) {
			script := "source completions/hairpinctl.bash\n" +
				"COMP_WORDS=(" + quote(words) + ")\nCOMP_CWORD=" + itoa(len(words)-1) + "\n" +
				"_hairpinctl\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
			if got := shellComplete(t, "bash", script); !slices.Equal(got, c.want) {
				t.Errorf("bash COMPREPLY = %q, want %q", got, c.want)
			}
		})
		t.Run("zsh/"+name, func(t *testing.T) {
			// compadd and compdef exist only inside the completion
			// system; stand-ins print what would be offered.
			script := "compdef() { : }\ncompadd() { print -l -- \"$@\" }\n" +
				"source completions/_hairpinctl\n" +
				"words=(" + quote(words) + ")\nCURRENT=" + itoa(len(words)) + "\n_hairpinctl\n"
			if got := shellComplete(t, "zsh", script); !slices.Equal(got, c.want) {
				t.Errorf("zsh candidates = %q, want %q", got, c.want)
			}
		})
		t.Run("fish/"+name, func(t *testing.T) {
			script := "source completions/hairpinctl.fish\ncomplete -C" + fishQuote(strings.Join(words, " ")) + "\n"
			if got := shellComplete(t, "fish", script); !slices.Equal(got, c.want) {
				t.Errorf("fish candidates = %q, want %q", got, c.want)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func fishQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }

func TestCompletionCommand(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		r := run(t, "completion", shell)
		want, err := os.ReadFile(filepath.Join("completions", map[string]string{"bash": "hairpinctl.bash", "zsh": "_hairpinctl", "fish": "hairpinctl.fish"}[shell]))
		if err != nil {
			t.Fatal(err)
		}
		if r.code != 0 || r.stdout != string(want) {
			t.Errorf("completion %s differs from completions/ (exit %d)", shell, r.code)
		}
	}
	r := run(t, "completion", "tcsh")
	if r.code != 2 {
		t.Errorf("completion tcsh: exit %d, want 2", r.code)
	}
	oneLineErr(t, r, `unknown shell "tcsh"`)
}
