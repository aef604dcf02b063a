package netops

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// The pipe a save streams through blocks on read (no poller wakeup per
// write) and holds 1 MiB.
func TestStreamPipe(t *testing.T) {
	r, w, err := streamPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	// Flags are read through SyscallConn: Fd would make the file blocking.
	for _, f := range []struct {
		name string
		file *os.File
	}{{"read end", r}, {"write end", w}} {
		rc, err := f.file.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var fl, fdfl int
		var ferr error
		if err := rc.Control(func(fd uintptr) {
			if fl, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0); ferr == nil {
				fdfl, ferr = unix.FcntlInt(fd, unix.F_GETFD, 0)
			}
		}); err != nil || ferr != nil {
			t.Fatal(err, ferr)
		}
		if fl&unix.O_NONBLOCK != 0 {
			t.Errorf("%s is non-blocking", f.name)
		}
		if fdfl&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s would leak into other children: no close-on-exec", f.name)
		}
	}
	size, err := unix.FcntlInt(r.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	if size < 1<<20 {
		t.Errorf("pipe holds %d bytes, want 1 MiB", size)
	}
}

// A child's output of several MiB, past the point where reads are
// paced, arrives whole and in order.
func TestStreamCmdLargeOutput(t *testing.T) {
	const lines = 400000 // 4.3 MB: most of it read paced
	c := &Client{own: true}
	var n int
	_, werr, rerr := c.streamCmd("seq", []string{strconv.Itoa(lines)}, func(r io.Reader) error {
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

// A reader that gives up early leaves no child blocked on a full pipe:
// the rest is drained and the child is waited for.
func TestStreamCmdReadErrorDrains(t *testing.T) {
	c := &Client{own: true}
	stop := errors.New("enough")
	_, werr, rerr := c.streamCmd("seq", []string{"1000000"}, func(r io.Reader) error {
		_, _ = io.ReadFull(r, make([]byte, 10))
		return stop
	})
	if rerr != stop {
		t.Errorf("read error %v, want %v", rerr, stop)
	}
	if werr != nil {
		t.Errorf("seq did not finish cleanly: %v", werr)
	}
}

func TestPacedReaderKeepsEveryByte(t *testing.T) {
	src := bytes.Repeat([]byte("0123456789abcdef"), 3*paceAfter/16+7)
	var got bytes.Buffer
	// Reads of 100 KiB into a 256 KiB buffer: under half, so paced.
	p := &pacedReader{r: io.LimitReader(&chunked{b: src, n: 100 << 10}, int64(len(src)))}
	buf := make([]byte, 256<<10)
	for {
		n, err := p.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), src) {
		t.Fatalf("read %d bytes back, want the %d written", got.Len(), len(src))
	}
	if p.read != len(src) {
		t.Errorf("counted %d bytes, want %d", p.read, len(src))
	}
}

// chunked returns at most n bytes per read.
type chunked struct {
	b []byte
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[k:]
	return k, nil
}

func TestRelaxGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	relaxGC()
	if got := debug.SetGCPercent(100); got != relaxedGCPercent {
		t.Errorf("GC target %d after relaxGC, want %d", got, relaxedGCPercent)
	}
	// The user's own GOGC stands.
	t.Setenv("GOGC", "50")
	debug.SetGCPercent(50)
	relaxGC()
	if got := debug.SetGCPercent(100); got != 50 {
		t.Errorf("GC target %d with GOGC=50, want it left at 50", got)
	}
}
