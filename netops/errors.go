package netops

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors that commands map to exit codes. Wrap them with %w and a
// subject; compare with errors.Is.
var (
	// ErrNotFound: the named interface, bridge or namespace does not exist.
	ErrNotFound = errors.New("not found")
	// ErrNotBridgePort: the interface exists but has no bridge master.
	ErrNotBridgePort = errors.New("not attached to a bridge")
	// ErrNotBridge: the interface exists but is not a Linux bridge.
	ErrNotBridge = errors.New("not a bridge")
	// ErrInvalid: the input is malformed (a bad interface name, address, ...).
	ErrInvalid = errors.New("invalid")
	// ErrPermission: the caller lacks the capability the operation needs.
	ErrPermission = errors.New("permission denied")
	// ErrVanished: a port seen in the listing was gone when it was set,
	// which happens when pods churn during bulk work.
	ErrVanished = errors.New("no longer exists")
	// ErrTimeout: a bounded wait ran out.
	ErrTimeout = errors.New("timed out")
)

// maxIfNameLen is IFNAMSIZ less the terminating NUL.
const maxIfNameLen = 15

// ValidateIfName reports whether name can be a Linux interface name: 1 to 15
// bytes, no '/', no whitespace, not "." or "..". The kernel enforces the same
// rules (dev_valid_name); checking first gives a clear message instead of EINVAL.
func ValidateIfName(name string) error {
	switch {
	case name == "":
		return errorf(ErrInvalid, "empty interface name")
	case len(name) > maxIfNameLen:
		return errorf(ErrInvalid, "interface name %q is %d bytes, the limit is %d", name, len(name), maxIfNameLen)
	case name == "." || name == "..":
		return errorf(ErrInvalid, "interface name %q is reserved", name)
	case strings.ContainsAny(name, "/:"):
		return errorf(ErrInvalid, "interface name %q contains '/' or ':'", name)
	case strings.IndexFunc(name, isSpace) >= 0:
		return errorf(ErrInvalid, "interface name %q contains whitespace", name)
	}
	return nil
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
}

// kindError carries a message and a sentinel kind that errors.Is finds but
// the message does not repeat: "veth9 is not attached to a bridge", not
// "...: not attached to a bridge".
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }

// errorf formats a message (%w allowed) tagged with kind.
func errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}

// Errorf is errorf for other packages: a one-line message tagged with one of
// the sentinel kinds above.
func Errorf(kind error, format string, args ...any) error { return errorf(kind, format, args...) }
