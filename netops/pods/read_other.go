//go:build !linux

package pods

import (
	"os"
	"path/filepath"
)

// reader reads the files of one directory.
type reader struct{ dir *os.File }

// read returns the contents of name, or nil when name is a directory.
func (r *reader) read(name string) ([]byte, error) {
	path := filepath.Join(r.dir.Name(), name)
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, nil
	}
	return os.ReadFile(path)
}
