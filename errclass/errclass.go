// Package errclass holds the classes of failure every cryptshift package
// reports, and the exit code each class has on the command line. An error
// wraps one class (besides its cause); the outermost class in the error's
// tree decides the exit code, so a failed write on an open device (an I/O
// error that wraps a permission error) is I/O, not "device unusable".
//
// The codes are a contract with scripts: a value never changes meaning,
// and new classes get new numbers.
package errclass

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// Usage: the request itself is wrong (bad sizes, unknown cipher, key
	// file of the wrong length, options that cannot work together).
	Usage = errors.New("invalid request")
	// WrongKey: a key does not match the key check value recorded when the
	// conversion started, or the old key does not decrypt the data.
	WrongKey = errors.New("wrong key")
	// Device: the device is unusable for this request (missing, in use,
	// too small, not the device the conversion was started on).
	Device = errors.New("device")
	// Header: no usable header: corrupt, of an unknown version, or failing
	// authentication (forged, or the keys of another conversion).
	Header = errors.New("header")
	// Conflict: options given on resume, or on a finished conversion,
	// differ from the recorded ones.
	Conflict = errors.New("conflicting options")
	// IO: the device failed a read, write or flush.
	IO = errors.New("I/O error")
	// Paused: the conversion stopped cleanly on request and can resume.
	Paused = errors.New("paused")
	// Damaged: recovery found sectors it cannot restore, or cannot know the
	// state of (resilience none), or verify reported findings.
	Damaged = errors.New("damaged data")
	// Refused: a valid request cryptshift will not carry out without
	// --force (resilience none, data that does not decrypt plausibly).
	Refused = errors.New("refused")
	// NoCrypto: the work needs a cipher spec's transform that neither
	// cryptshift's userspace ciphers nor, here, the kernel's dm-crypt can
	// run (verify --data of a kernel-only spec on a host without
	// device-mapper).
	NoCrypto = errors.New("no crypto engine")
)

// Exit codes.
const (
	ExitOK       = 0
	ExitInternal = 1
	ExitUsage    = 2
	ExitWrongKey = 3
	ExitDevice   = 4
	ExitHeader   = 5
	ExitConflict = 6
	ExitIO       = 7
	ExitPaused   = 8
	ExitDamaged  = 9
	ExitRefused  = 10
	ExitNoCrypto = 11
)

// Table is every class with its exit code and the line `--help` prints.
var Table = []struct {
	Class error
	Code  int
	What  string
}{
	{Usage, ExitUsage, "usage error: bad flags, arguments or request"},
	{WrongKey, ExitWrongKey, "wrong key: a key file does not match the conversion, or the old key does not decrypt the data"},
	{Device, ExitDevice, "device unusable: missing, in use, no permission, wrong type or size, or not the recorded device"},
	{Header, ExitHeader, "header missing, corrupt, of an unknown version, or forged"},
	{Conflict, ExitConflict, "options given on resume or on a finished conversion differ from the recorded ones"},
	{IO, ExitIO, "I/O error on the device or metadata"},
	{Paused, ExitPaused, "paused on request; run the same command again to resume"},
	{Damaged, ExitDamaged, "damaged sectors found by recover, or findings reported by verify (and not repaired by --repair)"},
	{Refused, ExitRefused, "refused without --force"},
	{NoCrypto, ExitNoCrypto, "no crypto engine: the spec has no userspace cipher and the kernel's dm-crypt cannot run it here"},
}

// Code returns the exit code of err: that of the outermost class found
// walking its tree depth first (the order fmt.Errorf's %w verbs give), or
// ExitInternal for an error of no class.
func Code(err error) int {
	if err == nil {
		return ExitOK
	}
	if c, ok := find(err); ok {
		return c
	}
	return ExitInternal
}

func find(err error) (int, bool) {
	for _, e := range Table {
		if err == e.Class {
			return e.Code, true
		}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		if next := u.Unwrap(); next != nil {
			return find(next)
		}
	case interface{ Unwrap() []error }:
		for _, next := range u.Unwrap() {
			if c, ok := find(next); ok {
				return c, true
			}
		}
	}
	return 0, false
}

// Help is the table printed at the end of `cryptshift --help`.
func Help() string {
	var b strings.Builder
	b.WriteString("EXIT CODES:\n")
	fmt.Fprintf(&b, "   %2d  success\n", ExitOK)
	fmt.Fprintf(&b, "   %2d  internal error (a bug, an error of no known class, or an online conversion process killed by a signal)\n", ExitInternal)
	for _, e := range Table {
		fmt.Fprintf(&b, "   %2d  %s\n", e.Code, e.What)
	}
	return b.String()
}

// IOf wraps an I/O failure of the named operation in the IO class.
func IOf(what string, err error) error {
	return fmt.Errorf("%s: %w: %w", what, IO, err)
}
