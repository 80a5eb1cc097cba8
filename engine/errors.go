package engine

import (
	"errors"
	"fmt"
)

// Error classes. Every error the engine returns wraps exactly one of these
// (besides its cause), so the CLI can map it to a distinct exit code; the
// codes are listed in docs/DESIGN.md.
var (
	// ErrUsage: the request itself is wrong (bad sizes, unknown cipher,
	// key file of the wrong length, options that cannot work together).
	ErrUsage = errors.New("invalid request")
	// ErrRefused: a valid request cryptshift will not carry out without
	// --force (converting to the same mapping, resilience none, data that
	// does not decrypt plausibly).
	ErrRefused = errors.New("refused")
	// ErrWrongKey: a key does not match the key check value recorded when
	// the conversion started.
	ErrWrongKey = errors.New("wrong key")
	// ErrDevice: the device is unusable for this request (too small, in use,
	// not the device the conversion was started on).
	ErrDevice = errors.New("device")
	// ErrHeader: no usable header: corrupt, of an unknown version, or failing
	// authentication (forged, or the keys of another conversion).
	ErrHeader = errors.New("header")
	// ErrConflict: options given on resume differ from the recorded ones.
	ErrConflict = errors.New("conflicting options")
	// ErrIO: the device failed a read, write or flush.
	ErrIO = errors.New("I/O error")
	// ErrPaused: the conversion stopped cleanly on request and can resume.
	ErrPaused = errors.New("paused")
	// ErrDamaged: recovery found sectors it cannot restore, or cannot know
	// the state of (resilience none); they are listed in the error.
	ErrDamaged = errors.New("damaged data")
)

func ioErr(what string, err error) error {
	return fmt.Errorf("%s: %w: %w", what, ErrIO, err)
}

// DamageError lists the sectors recovery could not vouch for.
type DamageError struct {
	Window  uint64
	Sectors []SectorRange // in 512-byte units of the logical data area
	Reason  string
}

// SectorRange is a half-open range of 512-byte sectors.
type SectorRange struct{ Start, End uint64 }

func (e *DamageError) Error() string {
	s := fmt.Sprintf("window %d: %s:", e.Window, e.Reason)
	for i, r := range e.Sectors {
		if i == 8 {
			s += fmt.Sprintf(" (+%d more ranges)", len(e.Sectors)-8)
			break
		}
		s += fmt.Sprintf(" sectors %d-%d", r.Start, r.End-1)
	}
	return s
}

func (e *DamageError) Unwrap() error { return ErrDamaged }
