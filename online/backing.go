package dm

import (
	"fmt"

	"github.com/cryptshift/cryptshift/blockdev"
)

// Backing describes the device under a served device-mapper device.
type Backing struct {
	Path   string // node opened
	DevNo  string // "major:minor", as tables name it
	Offset int64  // bytes: where the data area starts on the device
	Size   int64  // bytes: the data area, i.e. the served device's size
	// Table is the served device's live table (keys included), for callers
	// that need more than a single target tells.
	Table []Target
}

// nodeDir is where BlockDevicePath makes a node when devtmpfs has none.
const nodeDir = "/run/cryptshift"

// OpenBacking finds the device under name (from its live table) and opens
// it with O_DIRECT and without O_EXCL, which device-mapper already holds:
// the engine reads and writes the window there while name serves the rest.
// Offset is the data area origin of name's first target; in every mode but
// shift, all targets agree on it.
func OpenBacking(name string) (*blockdev.File, Backing, error) {
	ts, err := Table(name)
	if err != nil {
		return nil, Backing{}, err
	}
	if len(ts) == 0 {
		return nil, Backing{}, fmt.Errorf("dm: %s has no live table", name)
	}
	seg, err := ParseSegment(ts[0])
	if err != nil {
		return nil, Backing{}, fmt.Errorf("dm: %s: %w", name, err)
	}
	for _, t := range ts[1:] {
		s, err := ParseSegment(t)
		if err != nil {
			return nil, Backing{}, fmt.Errorf("dm: %s: %w", name, err)
		}
		if s.Device != seg.Device {
			return nil, Backing{}, fmt.Errorf("dm: %s spans devices %s and %s", name, seg.Device, s.Device)
		}
	}
	path, err := BlockDevicePath(seg.Device, nodeDir)
	if err != nil {
		return nil, Backing{}, err
	}
	f, err := blockdev.Open(path, blockdev.Options{Direct: true})
	if err != nil {
		return nil, Backing{}, fmt.Errorf("dm: open backing device of %s: %w", name, err)
	}
	devno := seg.Device
	if d, err := DevNo(path); err == nil {
		devno = d
	}
	return f, Backing{Path: path, DevNo: devno, Offset: int64(seg.Offset) * 512, Size: int64(Size(ts)) * 512, Table: ts}, nil
}
