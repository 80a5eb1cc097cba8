// Package dm controls Linux device-mapper devices for cryptshift: building,
// parsing and loading crypt and linear tables, reading live tables back with
// their keys, and holding one window of a device in use while the engine
// converts it (Online, an engine.Holder).
//
// Table arithmetic is in 512-byte sectors, as device-mapper counts; the
// engine counts bytes, and the conversion happens at the API boundary.
package dm

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Target is one line of a device-mapper table.
type Target struct {
	Start, Length uint64 // 512-byte sectors
	Type          string
	Params        string
}

// String formats t as dmsetup prints a table line. Crypt keys are included:
// callers must not log it.
func (t Target) String() string {
	return fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params)
}

// FormatTable formats a table as lines, one per target.
func FormatTable(ts []Target) string {
	var b strings.Builder
	for _, t := range ts {
		b.WriteString(t.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// ParseTable parses table lines ("start length type params", blank lines
// ignored) and checks that the targets are contiguous from sector 0, which
// the kernel requires of a loaded table.
func ParseTable(s string) ([]Target, error) {
	var out []Target
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			return nil, fmt.Errorf("dm: table line %d: want \"start length type [params]\", got %q", i+1, line)
		}
		start, err := parseUint("start", f[0])
		if err != nil {
			return nil, fmt.Errorf("dm: table line %d: %w", i+1, err)
		}
		length, err := parseUint("length", f[1])
		if err != nil {
			return nil, fmt.Errorf("dm: table line %d: %w", i+1, err)
		}
		out = append(out, Target{Start: start, Length: length, Type: f[2], Params: strings.Join(f[3:], " ")})
	}
	if err := CheckTable(out); err != nil {
		return nil, err
	}
	return out, nil
}

// CheckTable refuses what the kernel would refuse when loading, so that the
// error names the problem instead of an EINVAL: no targets, gaps, overlaps,
// empty targets, type names that do not fit the ioctl.
func CheckTable(ts []Target) error {
	if len(ts) == 0 {
		return errors.New("dm: empty table")
	}
	var next uint64
	for i, t := range ts {
		if t.Start != next {
			return fmt.Errorf("dm: target %d starts at sector %d, want %d (targets must be contiguous from 0)", i, t.Start, next)
		}
		if t.Length == 0 {
			return fmt.Errorf("dm: target %d has length 0", i)
		}
		if t.Type == "" || len(t.Type) >= maxTypeName || strings.ContainsAny(t.Type, " \t\n\x00") {
			return fmt.Errorf("dm: target %d: invalid type %q", i, t.Type)
		}
		if strings.ContainsAny(t.Params, "\n\x00") {
			return fmt.Errorf("dm: target %d: parameters contain a newline or NUL", i)
		}
		if t.Start+t.Length < t.Start {
			return fmt.Errorf("dm: target %d: end overflows", i)
		}
		next = t.Start + t.Length
	}
	return nil
}

// Size returns the length of a table in sectors.
func Size(ts []Target) uint64 {
	if len(ts) == 0 {
		return 0
	}
	last := ts[len(ts)-1]
	return last.Start + last.Length
}

func parseUint(what, s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not an unsigned decimal number", what, s)
	}
	return v, nil
}

// maxTypeName is DM_MAX_TYPE_NAME, the size of the type field including NUL.
const maxTypeName = 16

// Linear is the parameters of a dm-linear target: "<dev> <offset>".
type Linear struct {
	Device string // "major:minor" or a path
	Offset uint64 // sectors into Device
}

// ParseLinear parses dm-linear parameters.
func ParseLinear(params string) (Linear, error) {
	f := strings.Fields(params)
	if len(f) != 2 {
		return Linear{}, fmt.Errorf("dm: linear parameters %q: want \"<dev> <offset>\"", params)
	}
	off, err := parseUint("linear offset", f[1])
	if err != nil {
		return Linear{}, fmt.Errorf("dm: %w", err)
	}
	return Linear{Device: f[0], Offset: off}, nil
}

// Params formats l as dm-linear parameters.
func (l Linear) Params() string {
	return fmt.Sprintf("%s %d", l.Device, l.Offset)
}
