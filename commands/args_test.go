package commands

import (
	"slices"
	"testing"
)

func TestNormalizeArgs(t *testing.T) {
	app := NewApp("test")
	tests := []struct {
		in, want []string
	}{
		{[]string{"h", "enable", "veth1", "--dry-run"}, []string{"h", "enable", "--dry-run", "veth1"}},
		{[]string{"h", "enable", "veth1", "--netns", "n1", "veth2"}, []string{"h", "enable", "--netns", "n1", "veth1", "veth2"}},
		{[]string{"h", "--netns", "n1", "ports", "-o", "json"}, []string{"h", "--netns", "n1", "ports", "-o", "json"}},
		{[]string{"h", "ports", "veth1", "-o=json", "-q"}, []string{"h", "ports", "-o=json", "-q", "veth1"}},
		{[]string{"h", "enable", "--", "-weird"}, []string{"h", "enable", "--", "-weird"}},
		{[]string{"h", "nosuch", "a", "-x"}, []string{"h", "nosuch", "a", "-x"}},
		{[]string{"h"}, []string{"h"}},
		{[]string{"h", "-o", "json", "enable", "veth1", "--dry-run"}, []string{"h", "-o", "json", "enable", "--dry-run", "veth1"}},
		{[]string{"h", "--netns", "n1", "ports", "veth1", "-q"}, []string{"h", "--netns", "n1", "ports", "-q", "veth1"}},
	}
	for _, tt := range tests {
		if got := NormalizeArgs(app, tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("NormalizeArgs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
