// Package units renders byte counts and durations for people, the same way
// in every command's output (the command line, bench and demo).
package units

import (
	"fmt"
	"time"
)

// Bytes renders a byte count: binary units, one decimal.
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGT"[exp])
}

// Duration rounds a duration to what a person reads: milliseconds under a
// second, tenths under a minute, seconds above.
func Duration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
