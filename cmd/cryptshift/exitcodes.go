package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
)

// Exit codes. Scripts branch on these, so a value never changes meaning;
// new classes get new numbers.
const (
	exitOK       = 0
	exitInternal = 1
	exitUsage    = 2
	exitWrongKey = 3
	exitDevice   = 4
	exitHeader   = 5
	exitConflict = 6
	exitIO       = 7
	exitPaused   = 8
	exitDamaged  = 9
	exitRefused  = 10
)

// exitTable maps error classes to exit codes, checked in order. The engine
// classes come first: an engine error wraps exactly one of them, possibly
// around a blockdev error whose class would say less (a write that failed
// on an open device is an I/O error, not "device unusable").
var exitTable = []struct {
	class error
	code  int
	what  string
}{
	{engine.ErrUsage, exitUsage, "usage error: bad flags, arguments or request"},
	{engine.ErrWrongKey, exitWrongKey, "wrong key: a key file does not match the conversion, or the old key does not decrypt the data"},
	{engine.ErrDevice, exitDevice, "device unusable: missing, in use, no permission, wrong type or size, or not the recorded device"},
	{engine.ErrHeader, exitHeader, "header missing, corrupt, of an unknown version, or forged"},
	{engine.ErrConflict, exitConflict, "options given on resume differ from the recorded ones"},
	{engine.ErrIO, exitIO, "I/O error on the device or metadata"},
	{engine.ErrPaused, exitPaused, "paused on request; run the same command again to resume"},
	{engine.ErrDamaged, exitDamaged, "damaged sectors found by recover, or findings reported by verify (and not repaired by --repair)"},
	{engine.ErrRefused, exitRefused, "refused without --force"},
	{blockdev.ErrInUse, exitDevice, ""},
	{blockdev.ErrNotFound, exitDevice, ""},
	{blockdev.ErrPermission, exitDevice, ""},
	{blockdev.ErrNotBlockOrFile, exitDevice, ""},
}

// exitCode returns the exit code for an error returned by a command.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ec exitCodeError
	if errors.As(err, &ec) {
		return int(ec)
	}
	for _, e := range exitTable {
		if errors.Is(err, e.class) {
			return e.code
		}
	}
	return exitInternal
}

// exitCodeHelp is the table printed at the end of `cryptshift --help`.
func exitCodeHelp() string {
	var b strings.Builder
	b.WriteString("EXIT CODES:\n")
	fmt.Fprintf(&b, "   %2d  success\n", exitOK)
	fmt.Fprintf(&b, "   %2d  internal error (a bug, an error of no known class, or an online conversion process killed by a signal)\n", exitInternal)
	for _, e := range exitTable {
		if e.what != "" {
			fmt.Fprintf(&b, "   %2d  %s\n", e.code, e.what)
		}
	}
	return b.String()
}

// errorLine renders err as the single line cryptshift prints on failure:
// log collectors and scripts that grep stderr expect one line per error.
func errorLine(err error) string {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")), " ")
	return "cryptshift: " + msg
}

// usageErr marks a command-line mistake so that it maps to exitUsage.
func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", engine.ErrUsage, fmt.Sprintf(format, a...))
}
