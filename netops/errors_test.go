package netops

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateIfName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"veth1", true},
		{"cni0", true},
		{"vethabcdef01234", true},   // 15 bytes
		{"vethabcdef012345", false}, // 16 bytes
		{"", false},
		{"a/b", false},
		{"a b", false},
		{"a\tb", false},
		{".", false},
		{"..", false},
		{"eth0:1", false},
	}
	for _, tt := range tests {
		err := ValidateIfName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateIfName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateIfName(%q) error %v is not ErrInvalid", tt.name, err)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("multi-line error %q", err)
		}
	}
}
