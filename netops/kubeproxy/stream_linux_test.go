package kubeproxy

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/hairpinctl/hairpinctl/netops"
)

// A child's output of several MiB arrives whole and in order.
func TestStreamCmdLargeOutput(t *testing.T) {
	const lines = 400000 // 2.6 MB
	c := ownClient(t)
	var n int
	_, werr, rerr := streamCmd(c, "seq", []string{strconv.Itoa(lines)}, func(r io.Reader) error {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			n++
			if got := sc.Text(); got != strconv.Itoa(n) {
				return errors.New("line " + strconv.Itoa(n) + " reads " + got)
			}
		}
		return sc.Err()
	})
	if werr != nil || rerr != nil {
		t.Fatalf("seq: wait: %v, read: %v", werr, rerr)
	}
	if n != lines {
		t.Errorf("read %d lines, want %d", n, lines)
	}
}

// A reader that gives up early, failing or not, leaves no child blocked
// on a full pipe: the rest is drained and the child is waited for.
func TestStreamCmdDrainsWhatReadLeaves(t *testing.T) {
	stop := errors.New("enough")
	for _, want := range []error{stop, nil} {
		c := ownClient(t)
		done := make(chan struct{})
		var werr, rerr error
		go func() {
			defer close(done)
			// 6.9 MB: more than the pipe holds.
			_, werr, rerr = streamCmd(c, "seq", []string{"1000000"}, func(r io.Reader) error {
				_, _ = io.ReadFull(r, make([]byte, 10))
				return want
			})
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("read returning %v: streamCmd still waiting after 30 s: the child is blocked on a full pipe", want)
		}
		if rerr != want {
			t.Errorf("read error %v, want %v", rerr, want)
		}
		if werr != nil {
			t.Errorf("read returning %v: seq did not finish cleanly: %v", want, werr)
		}
	}
}

// ownClient is a client for the test's own namespace.
func ownClient(t *testing.T) *netops.Client {
	t.Helper()
	c, err := netops.Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
