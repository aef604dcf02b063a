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

func TestParseWait(t *testing.T) {
	tests := []struct {
		in   string
		want int
		err  bool
	}{
		{"5", 5, false},
		{"5s", 5, false},
		{"1m", 60, false},
		{"1500ms", 2, false}, // iptables waits in whole seconds: rounded up
		{"0", 0, true},
		{"500ms", 0, true},
		{"-1s", 0, true},
		{"five", 0, true},
	}
	for _, tt := range tests {
		got, err := parseWait("--wait", tt.in)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("parseWait(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}
