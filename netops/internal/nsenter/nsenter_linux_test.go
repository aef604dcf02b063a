package nsenter

import (
	"errors"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// newNetns makes an unnamed namespace for one test without moving the
// test's thread: it is created on a thread of its own, which is retired.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating a network namespace needs root")
	}
	type res struct {
		h   netns.NsHandle
		err error
	}
	c := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.New()
		c <- res{h, err}
	}()
	r := <-c
	if r.err != nil {
		t.Fatalf("new netns: %v", r.err)
	}
	t.Cleanup(func() { r.h.Close() })
	return r.h
}

// inode is the nsfs inode of the namespace fd refers to.
func inode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat: %v", err)
	}
	return st.Ino
}

func threadNetns(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatalf("stat /proc/thread-self/ns/net: %v", err)
	}
	return st.Ino
}

func TestDo(t *testing.T) {
	target := newNetns(t)
	want := inode(t, int(target))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNetns(t)
	if before == want {
		t.Fatal("the new namespace is the test's own")
	}

	t.Run("runs fn inside", func(t *testing.T) {
		var got uint64
		if err := Do(target, func() error { got = threadNetns(t); return nil }); err != nil {
			t.Fatalf("Do: %v", err)
		}
		if got != want {
			t.Errorf("fn ran in netns inode %d, want %d", got, want)
		}
		if now := threadNetns(t); now != before {
			t.Errorf("caller's thread moved to inode %d, was %d", now, before)
		}
	})
	t.Run("returns fn's error", func(t *testing.T) {
		sentinel := errors.New("sentinel")
		if err := Do(target, func() error { return sentinel }); !errors.Is(err, sentinel) {
			t.Errorf("Do = %v, want %v", err, sentinel)
		}
	})
	t.Run("a handle that is no namespace", func(t *testing.T) {
		f, err := os.Open("/proc/self/stat")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ran := false
		err = Do(netns.NsHandle(f.Fd()), func() error { ran = true; return nil })
		if err == nil || ran {
			t.Errorf("Do on a non-namespace fd: err %v, ran %v; want an error and fn not run", err, ran)
		}
	})
}
