package pods

import (
	"os"

	"golang.org/x/sys/unix"
)

// reader reads the files of one directory into a buffer it reuses, with
// openat, one read and close: os.ReadFile adds an fstat, a poller
// registration and a read to find the end, for every small file.
type reader struct {
	dir *os.File
	buf []byte
}

// read returns the contents of name, valid until the next read, or nil
// when name is a directory. O_NONBLOCK keeps a FIFO left in the cache
// directory from blocking the open.
func (r *reader) read(name string) ([]byte, error) {
	fd, err := unix.Openat(int(r.dir.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if r.buf == nil {
		r.buf = make([]byte, 8<<10)
	}
	n := 0
	for {
		if n == len(r.buf) {
			r.buf = append(r.buf, make([]byte, len(r.buf))...)
		}
		m, err := unix.Read(fd, r.buf[n:])
		if err == unix.EISDIR {
			return nil, nil
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		n += m
		// A regular file's read comes up short only at its end: the
		// read that would return 0 is saved.
		if m == 0 || n < len(r.buf) {
			return r.buf[:n], nil
		}
	}
}
