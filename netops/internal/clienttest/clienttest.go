// Package clienttest opens netops clients for the domain packages' tests.
// netops' own tests cannot import it (it imports netops).
package clienttest

import (
	"testing"

	"github.com/hairpinctl/hairpinctl/netops"
	"github.com/hairpinctl/hairpinctl/netops/lab"
)

// Open opens a client in l's node namespace for one test and closes it
// when the test ends.
func Open(t testing.TB, l *lab.Lab) *netops.Client {
	t.Helper()
	c, err := netops.Open(l.Node)
	if err != nil {
		t.Fatalf("open netns %s: %v", l.Node, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
