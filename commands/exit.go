package commands

import (
	"errors"
	"fmt"

	"github.com/hairpinctl/hairpinctl/netops"
)

// Exit codes, documented in --help, the README and the man page.
const (
	// ExitOK: success.
	ExitOK = 0
	// ExitError: a runtime error.
	ExitError = 1
	// ExitUsage: a usage error or invalid input.
	ExitUsage = 2
	// ExitPartial: some of several requested items failed, the others were done.
	ExitPartial = 3
	// ExitFindings: doctor found at least one FAIL; probe saw a
	// connection fail.
	ExitFindings = 4
)

// exitCodeHelp is the EXIT STATUS block of the top-level --help; the
// README and the man page say the same.
const exitCodeHelp = `EXIT STATUS:
   0  success
   1  runtime error (kernel, permission, timeout)
   2  usage error or invalid input: no command, bad flag, malformed name, a
      single unknown interface, unknown bridge or namespace
   3  partial: some of several requested items failed while the others
      were done
   4  doctor found at least one FAIL; probe saw a connection fail`

// exitError carries an exit code; a silent one prints nothing (the command
// has already said everything on stdout/stderr).
type exitError struct {
	code   int
	err    error
	silent bool
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageErrorf is a usage error: exit 2.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// silentExit ends the run with code and no further message.
func silentExit(code int) error { return &exitError{code: code, silent: true} }

// ExitCode maps an error returned by the app to the process exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	switch {
	case errors.Is(err, netops.ErrInvalid), errors.Is(err, netops.ErrNotFound),
		errors.Is(err, netops.ErrNotBridgePort), errors.Is(err, netops.ErrNotBridge):
		return ExitUsage
	}
	return ExitError
}

// ErrorMessage is what main prints for err after "hairpinctl: ", or "" for
// nothing; a control character in it (an interface name's, say) is
// escaped, never sent to the terminal.
func ErrorMessage(err error) string {
	var ee *exitError
	if errors.As(err, &ee) && ee.silent {
		return ""
	}
	return termSafeText(err.Error())
}
