package commands

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestCompletionScriptsUpToDate fails when completions/ differs from what
// `hairpinctl completion SHELL` prints; -update (see man_test.go) rewrites them.
func TestCompletionScriptsUpToDate(t *testing.T) {
	for shell, s := range CompletionScripts {
		path := filepath.Join("..", "completions", s.File)
		if *update {
			if err := os.WriteFile(path, []byte(s.Script), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v", shell, err)
		}
		if string(got) != s.Script {
			t.Errorf("%s is stale: regenerate with go test ./commands -run UpToDate -update", path)
		}
	}
}

func TestCompleteStatic(t *testing.T) {
	app := NewApp("test")
	tests := []struct {
		words []string
		want  []string
	}{
		{[]string{""}, nil}, // checked below: every visible command
		{[]string{"en"}, []string{"enable"}},
		{[]string{"di"}, []string{"disable"}},
		{[]string{"enable", "--dr"}, []string{"--dry-run"}},
		{[]string{"enable", "--wait"}, []string{"--wait-bridge"}},
		{[]string{"ports", "-o", ""}, []string{"json", "table", "wide"}},
		{[]string{"enable", "-o", ""}, []string{"json", "table"}},
		{[]string{"ports", "--output", "j"}, []string{"json"}},
		{[]string{"-o", ""}, []string{"json", "table"}},
		{[]string{"ports", "--hairpin", ""}, []string{"off", "on"}},
		{[]string{"completion", ""}, []string{"bash", "fish", "zsh"}},
		{[]string{"completion", "z"}, []string{"zsh"}},
		{[]string{"nosuch", ""}, []string{}},
		{[]string{"enable", "--wait-bridge", ""}, []string{}},
		{[]string{"probe", "--ti"}, []string{"--timeout"}},
		{[]string{"probe", "--count", "5", "veth1", ""}, []string{}},
	}
	for _, tt := range tests {
		got := complete(app, tt.words)
		if tt.want == nil {
			for _, c := range app.VisibleCommands() {
				if c.Name != "help" && !slices.Contains(got, c.Name) {
					t.Errorf("complete(%q) lacks %s: %v", tt.words, c.Name, got)
				}
			}
			if slices.Contains(got, "__complete") {
				t.Errorf("hidden command offered: %v", got)
			}
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("complete(%q) = %q, want %q", tt.words, got, tt.want)
		}
	}
}
