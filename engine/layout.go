package engine

import (
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/wal"
)

// layoutRequest is what planning a new conversion's layout depends on:
// sizes and options, no devices, so that planLayout is a pure function.
type layoutRequest struct {
	DevSize     int64 // the data device
	MetaDevSize int64 // a separate metadata device; unused with MetaOnData
	MetaOnData  bool
	OldSector   int
	NewSector   int
	Mode        header.Mode
	Online      bool
	Window      int64  // 0 = default
	DataOffset  *int64 // nil = 0
	DataSize    int64  // 0 = as much as fits
	Shift       int64  // 0 = one window
	MetaSize    int64  // 0 = default (metadata on the data device only)
}

// layout is where a new conversion puts everything, in bytes.
type layout struct {
	Window          int64
	OldOff, NewOff  int64 // on the data device
	DataSize        int64
	Descending      bool
	MetaOff         int64 // on the metadata device
	MetaSize        int64
	DigestSize      int64 // the digest table starts at MetaOff
	LogOff, LogSize int64
}

// planLayout validates a new conversion's sizes and places the data, the
// digest table and the log. It never shortens the converted range behind
// the user's back: when the data would not reach the end of what it could
// (a gap for shift, a device that is not a whole number of units) without
// --data-size saying so, it refuses.
func planLayout(r layoutRequest) (layout, error) {
	var l layout
	unit := int64(max(r.OldSector, r.NewSector, align))
	l.Window = int64(DefaultWindow)
	if r.Online {
		l.Window = DefaultOnlineWindow
	}
	if r.Window != 0 {
		l.Window = r.Window
	}
	if l.Window < unit || l.Window%unit != 0 || l.Window > 1<<30 {
		return l, fmt.Errorf("%w: --window %d must be a multiple of %d bytes, at most 1 GiB", errclass.Usage, l.Window, unit)
	}
	if r.DataOffset != nil {
		l.OldOff = *r.DataOffset
	}
	if l.OldOff < 0 || l.OldOff%512 != 0 {
		return l, fmt.Errorf("%w: --data-offset %d must be a non-negative multiple of 512", errclass.Usage, l.OldOff)
	}
	// Metadata area: at the end of the data device, or all of a separate one.
	if r.MetaOnData {
		ms := int64(DefaultMetaSize)
		if r.MetaSize != 0 {
			ms = r.MetaSize
		}
		if ms < minMetaSize || ms%align != 0 {
			return l, fmt.Errorf("%w: --metadata-size %d must be a multiple of 4096 and at least %d", errclass.Usage, ms, minMetaSize)
		}
		l.MetaOff = alignDown(r.DevSize-ms, align)
		if l.MetaOff < 0 {
			return l, fmt.Errorf("%w: device of %d bytes cannot hold a %d-byte metadata area", errclass.Device, r.DevSize, ms)
		}
		l.MetaSize = r.DevSize - l.MetaOff
	} else {
		l.MetaSize = alignDown(r.MetaDevSize, align)
		if l.MetaSize < minMetaSize {
			return l, fmt.Errorf("%w: metadata device of %d bytes is smaller than %d", errclass.Device, r.MetaDevSize, minMetaSize)
		}
	}
	// A journal log must hold two window records to avoid a checkpoint per
	// window: with a small metadata area and no --window, take a smaller
	// window rather than refuse.
	for r.Window == 0 && r.Mode == header.ModeJournal && l.Window > 1<<20 &&
		2*wal.EncodedLen(int(l.Window)) > l.MetaSize-2*header.Size-alignUp(r.DevSize/l.Window*header.DigestEntrySize, align) {
		l.Window /= 2
	}
	dataLimit := r.DevSize // first byte the data may not reach
	if r.MetaOnData {
		dataLimit = l.MetaOff
	}
	var shift int64
	if r.Mode == header.ModeShift {
		shift = l.Window
		if r.Shift != 0 {
			shift = r.Shift
		}
		if shift < l.Window || shift%align != 0 {
			return l, fmt.Errorf("%w: --shift %d must be a multiple of 4096 and at least the window (%d)", errclass.Usage, shift, l.Window)
		}
	} else if r.Shift != 0 {
		return l, fmt.Errorf("%w: --shift only applies to --resilience shift", errclass.Usage)
	}
	if dataLimit-l.OldOff <= 0 {
		return l, fmt.Errorf("%w: --data-offset %d is at or beyond the end of the usable device (%d bytes)", errclass.Usage, l.OldOff, dataLimit)
	}
	l.DataSize = r.DataSize
	if l.DataSize == 0 {
		room := dataLimit - l.OldOff
		if r.Mode == header.ModeShift && l.OldOff < shift {
			return l, fmt.Errorf("%w: --resilience shift moves the data %d bytes towards the end, so the last %d bytes up to %d would not be converted: shrink the filesystem and pass --data-size %d (or less)", errclass.Device, shift, shift, dataLimit, alignDown(room-shift, unit))
		}
		if room%unit != 0 {
			return l, fmt.Errorf("%w: the data area (%d bytes from byte %d) is not a multiple of %d bytes, so its last %d bytes would stay under the old mapping: pass --data-size %d to convert only the whole units", errclass.Device, room, l.OldOff, unit, room%unit, alignDown(room, unit))
		}
		l.DataSize = room
	}
	if l.DataSize <= 0 || l.DataSize%unit != 0 {
		return l, fmt.Errorf("%w: data size %d must be positive and a multiple of %d bytes", errclass.Usage, l.DataSize, unit)
	}
	// Shift moves the data towards lower offsets when there is room before
	// it, otherwise towards higher ones (then windows go from the end).
	l.NewOff = l.OldOff
	if r.Mode == header.ModeShift {
		if l.OldOff >= shift {
			l.NewOff = l.OldOff - shift
		} else {
			l.NewOff = l.OldOff + shift
			l.Descending = true
		}
	}
	for _, off := range []int64{l.OldOff, l.NewOff} {
		if off+l.DataSize > dataLimit {
			where := "the end of the device"
			if r.MetaOnData {
				where = fmt.Sprintf("the metadata area at byte %d", l.MetaOff)
			}
			return l, fmt.Errorf("%w: data [%d, %d) would run into %s: shrink the filesystem and pass --data-size, use --metadata on another device, or a smaller --metadata-size", errclass.Device, off, off+l.DataSize, where)
		}
	}
	nWin := (l.DataSize + l.Window - 1) / l.Window
	l.DigestSize = alignUp(nWin*header.DigestEntrySize, align)
	l.LogOff = l.MetaOff + l.DigestSize
	l.LogSize = alignDown(l.MetaOff+l.MetaSize-2*header.Size-l.LogOff, align)
	need := wal.EncodedLen(0) * 2
	switch r.Mode {
	case header.ModeJournal:
		need = wal.EncodedLen(int(l.Window)) + wal.EncodedLen(0)
	case header.ModeChecksum:
		need = wal.EncodedLen(int(l.Window/unit)*hashEntry) + wal.EncodedLen(0)
	}
	if l.LogSize < need {
		return l, fmt.Errorf("%w: the metadata area (%d bytes) cannot hold the digest table and a %s log record for a %d-byte window: use a larger --metadata-size or a smaller --window", errclass.Usage, l.MetaSize, r.Mode, l.Window)
	}
	return l, nil
}
