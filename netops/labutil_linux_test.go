package netops

import (
	"testing"

	"github.com/hairpinctl/hairpinctl/netops/lab"
	"github.com/hairpinctl/hairpinctl/netops/lab/labtest"
)

// newLab builds a lab for one test and removes it afterwards (labtest.New).
func newLab(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	return labtest.New(t, o)
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
