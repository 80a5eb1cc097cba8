package dm

import (
	"bytes"
	"fmt"
)

// SameService reports whether two tables serve every sector from the same
// place with the same mapping, ignoring options that do not change the
// on-disk format (allow_discards, workqueue choices). When they differ, why
// names the first difference, without printing keys.
func SameService(live, want []Target) (same bool, why string) {
	if len(live) != len(want) {
		return false, fmt.Sprintf("%d targets, expected %d", len(live), len(want))
	}
	for i := range live {
		a, b := live[i], want[i]
		if a.Start != b.Start || a.Length != b.Length {
			return false, fmt.Sprintf("target %d covers sectors %d+%d, expected %d+%d", i, a.Start, a.Length, b.Start, b.Length)
		}
		sa, err := ParseSegment(a)
		if err != nil {
			return false, fmt.Sprintf("target %d: %v", i, err)
		}
		sb, err := ParseSegment(b)
		if err != nil {
			return false, fmt.Sprintf("expected target %d: %v", i, err)
		}
		if sa.Device != sb.Device || sa.Offset != sb.Offset {
			return false, fmt.Sprintf("target %d reads %s at sector %d, expected %s at %d", i, sa.Device, sa.Offset, sb.Device, sb.Offset)
		}
		ma, mb := sa.Mapping, sb.Mapping
		switch {
		case ma.Spec != mb.Spec:
			return false, fmt.Sprintf("target %d uses %s, expected %s", i, ma.Spec, mb.Spec)
		case !bytes.Equal(ma.Key, mb.Key):
			return false, fmt.Sprintf("target %d uses another key than expected", i)
		case !ma.Spec.IsNone() && (ma.SectorSize != mb.SectorSize || ma.IVOffset != mb.IVOffset || ma.IVLargeSectors != mb.IVLargeSectors):
			return false, fmt.Sprintf("target %d has sector size %d, iv_offset %d, iv_large_sectors %v; expected %d, %d, %v",
				i, ma.SectorSize, ma.IVOffset, ma.IVLargeSectors, mb.SectorSize, mb.IVOffset, mb.IVLargeSectors)
		}
	}
	return true, ""
}
