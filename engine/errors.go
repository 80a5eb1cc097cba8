package engine

import (
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
)

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

func (e *DamageError) Unwrap() error { return errclass.Damaged }
