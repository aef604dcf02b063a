package watch

import (
	"testing"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
)

// newLab builds a lab for one test and removes it afterwards (labtest.New).
func newLab(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	return labtest.New(t, o)
}

// openLab opens a client in l's node namespace for one test.
func openLab(t *testing.T, l *lab.Lab) *netops.Client {
	t.Helper()
	c, err := netops.Open(l.Node)
	if err != nil {
		t.Fatalf("open netns %s: %v", l.Node, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
