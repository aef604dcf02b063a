package commands

import "testing"

func TestSuggest(t *testing.T) {
	cands := []string{"bridge", "b", "all", "dry-run", "n", "wait-bridge", "output", "o", "netns", "help"}
	tests := []struct{ typed, want string }{
		{"brigde", "bridge"},  // swapped letters
		{"bridg", "bridge"},   // a letter dropped
		{"brid", "bridge"},    // a prefix
		{"dryrun", "dry-run"}, // a letter dropped
		{"netsn", "netns"},
		{"bogus", ""}, // nothing close: no guess
		{"v", ""},     // one letter is one edit from every other
		{"al", ""},
		{"bridge", ""}, // exact: nothing to suggest
	}
	for _, tt := range tests {
		if got := suggest(tt.typed, cands); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.typed, got, tt.want)
		}
	}
	if got := suggest("port", commandNames(NewApp("test").Commands)); got != "ports" {
		t.Errorf("suggest(port) = %q, want ports", got)
	}
}
