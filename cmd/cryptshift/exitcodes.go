package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cryptshift/cryptshift/errclass"
)

// Exit codes: the table lives with the error classes (package errclass).
const (
	exitOK       = errclass.ExitOK
	exitInternal = errclass.ExitInternal
	exitUsage    = errclass.ExitUsage
	exitWrongKey = errclass.ExitWrongKey
	exitDevice   = errclass.ExitDevice
	exitHeader   = errclass.ExitHeader
	exitConflict = errclass.ExitConflict
	exitIO       = errclass.ExitIO
	exitPaused   = errclass.ExitPaused
	exitDamaged  = errclass.ExitDamaged
	exitRefused  = errclass.ExitRefused
	exitNoCrypto = errclass.ExitNoCrypto
)

// exitCode returns the exit code for an error returned by a command: an
// online worker's own exit status when the guard passes it on, else the
// error's class.
func exitCode(err error) int {
	var ec exitCodeError
	if errors.As(err, &ec) {
		return int(ec)
	}
	return errclass.Code(err)
}

// errorLine renders err as the single line cryptshift prints on failure:
// log collectors and scripts that grep stderr expect one line per error.
func errorLine(err error) string {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")), " ")
	return "cryptshift: " + msg
}

// usageErr marks a command-line mistake so that it maps to exitUsage.
func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errclass.Usage, fmt.Sprintf(format, a...))
}
