package netops

import (
	"os"
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/lab"
)

// newLab builds a lab for one test and removes it when the test ends,
// failed or not. Without root it skips: the lab needs CAP_SYS_ADMIN to
// create namespaces and CAP_NET_ADMIN to wire them.
func newLab(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds network namespaces")
	}
	l, err := lab.New(o)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	return l
}

func openLab(t *testing.T, l *lab.Lab) *Client {
	t.Helper()
	c, err := Open(l.Node)
	if err != nil {
		t.Fatalf("open netns %s: %v", l.Node, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
