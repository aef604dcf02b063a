package netops

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The pipe a save streams through blocks on read (no poller wakeup per
// write) and holds 1 MiB.
func TestStreamPipe(t *testing.T) {
	r, w, got, err := streamPipe()
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
	if size < pacePipe || got != size {
		t.Errorf("pipe holds %d bytes, reported %d, want %d", size, got, pacePipe)
	}
}

// A child's output of several MiB arrives whole and in order, most of it
// read past the point where reads are paced.
func TestStreamCmdLargeOutput(t *testing.T) {
	const lines = 400000 // 2.6 MB
	c := &Client{own: true}
	var n int
	_, werr, rerr := c.streamCmd("seq", []string{strconv.Itoa(lines)}, func(r io.Reader) error {
		if pr, ok := r.(*pacedReader); !ok || !pr.pace {
			return errors.New("the output is not read through a pacing reader")
		}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			n++
			if got := sc.Text(); got != strconv.Itoa(n) {
				return errors.New("line " + strconv.Itoa(n) + " reads " + got)
			}
		}
		return sc.Err()
	}, nil)
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
		c := &Client{own: true}
		done := make(chan struct{})
		var werr, rerr error
		go func() {
			defer close(done)
			// 6.9 MB: more than the pipe holds.
			_, werr, rerr = c.streamCmd("seq", []string{"1000000"}, func(r io.Reader) error {
				_, _ = io.ReadFull(r, make([]byte, 10))
				return want
			}, nil)
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

func TestPacedReader(t *testing.T) {
	src := bytes.Repeat([]byte("0123456789abcdef"), 3*paceAfter/16+7)
	for _, pace := range []bool{true, false} {
		var got bytes.Buffer
		// Reads of 100 KiB into a 256 KiB buffer: under half, so paced
		// past paceAfter when pacing.
		p := &pacedReader{r: &chunked{b: src, n: 100 << 10}, fd: -1, pace: pace}
		buf := make([]byte, 256<<10)
		owed := false
		for {
			before := p.pauses
			n, err := p.Read(buf)
			// A short read hands its bytes over at once; the read after
			// it waits.
			if paused := p.pauses > before; paused != owed {
				t.Fatalf("pace %v: read after %d bytes paused %v, want %v", pace, got.Len(), paused, owed)
			}
			owed = pace && err == nil && got.Len()+n > paceAfter && n < len(buf)/2
			got.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got.Bytes(), src) {
			t.Fatalf("pace %v: read %d bytes back, want the %d written", pace, got.Len(), len(src))
		}
		// 2 MiB past paceAfter in 100 KiB reads.
		if want := (len(src) - paceAfter) / (100 << 10); pace && p.pauses < want-1 {
			t.Errorf("paused %d times, want about %d", p.pauses, want)
		}
		if !pace && p.pauses != 0 {
			t.Errorf("paused %d times without pacing (a small pipe), want none", p.pauses)
		}
	}
}

// The wait owed after a short read is skipped once the writer has closed
// the pipe: a save's end is not waited for once it is there.
func TestPacedReaderHungUp(t *testing.T) {
	for _, closed := range []bool{true, false} {
		r, w, _, err := streamPipe()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("COMMIT\n")); err != nil {
			t.Fatal(err)
		}
		if closed {
			w.Close()
		}
		p := &pacedReader{r: r, fd: int(r.Fd()), pace: true, read: paceAfter + 1, owed: true}
		n, err := p.Read(make([]byte, 64))
		if n != 7 || err != nil {
			t.Fatalf("read %d, %v", n, err)
		}
		if want := map[bool]int{true: 0, false: 1}[closed]; p.pauses != want {
			t.Errorf("writer closed %v: %d waits, want %d", closed, p.pauses, want)
		}
		r.Close()
		w.Close()
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
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	relaxGC()
	if got := debug.SetGCPercent(100); got != -1 {
		t.Errorf("GC target %d after relaxGC, want -1 (off)", got)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != gcBackstop {
		t.Errorf("memory limit %d after relaxGC, want %d", got, gcBackstop)
	}
	// The user's own GOMEMLIMIT stands.
	t.Setenv("GOMEMLIMIT", "512MiB")
	debug.SetMemoryLimit(512 << 20)
	relaxGC()
	if got := debug.SetMemoryLimit(math.MaxInt64); got != 512<<20 {
		t.Errorf("memory limit %d with GOMEMLIMIT=512MiB, want it left at %d", got, 512<<20)
	}
	// And so does their GOGC.
	t.Setenv("GOGC", "50")
	debug.SetGCPercent(50)
	relaxGC()
	if got := debug.SetGCPercent(100); got != 50 {
		t.Errorf("GC target %d with GOGC=50, want it left at 50", got)
	}
}

func TestOneCore(t *testing.T) {
	n := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(n)
	runtime.GOMAXPROCS(3)
	t.Setenv("GOMAXPROCS", "")
	restore := oneCore()
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Errorf("GOMAXPROCS %d after oneCore, want 1", got)
	}
	restore()
	restore()
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Errorf("GOMAXPROCS %d after restoring, want 3", got)
	}
	// The user's own GOMAXPROCS stands.
	t.Setenv("GOMAXPROCS", "3")
	restore = oneCore()
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Errorf("GOMAXPROCS %d with GOMAXPROCS=3 set, want it left at 3", got)
	}
	restore()
}

// A large stream that goes quiet calls idle once, between two reads, with
// everything written before the pause read and nothing after it.
func TestPacedReaderIdle(t *testing.T) {
	r, w, size, err := streamPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const before, after = 2 << 20, 4 << 10
	go func() {
		defer w.Close()
		chunk := bytes.Repeat([]byte{'x'}, 64<<10)
		for n := 0; n < before; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		time.Sleep(100 * time.Millisecond) // a save freeing its cache
		_, _ = w.Write(make([]byte, after))
	}()
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	_ = rc.Control(func(f uintptr) { fd = int(f) })
	calls, readAtIdle, quietThen := 0, -1, false
	p := &pacedReader{r: r, fd: fd, pace: size >= pacePipe}
	p.idle = func(quiet func() bool) { calls++; readAtIdle = p.read; quietThen = quiet() }
	total := 0
	buf := make([]byte, 256<<10)
	for {
		n, err := p.Read(buf)
		total += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if total != before+after {
		t.Fatalf("read %d bytes, want %d", total, before+after)
	}
	if calls != 1 || readAtIdle != before {
		t.Errorf("idle called %d times, with %d bytes read; want once, with the %d written before the pause", calls, readAtIdle, before)
	}
	if !quietThen {
		t.Errorf("quiet reported the pipe busy during the pause")
	}
}
