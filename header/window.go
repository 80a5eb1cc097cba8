package header

// The geometry of a conversion: which window a processing step converts,
// which bytes a window covers, what a given progress has converted, and
// whether a stopped conversion may have left a window half written. Every
// room (engine, fsck, the online code, the fault tests) asks the header, so
// that each of these rules is written once.

// Windows is the number of windows the data area is cut into.
func (h *Header) Windows() uint64 {
	if h.Window == 0 {
		return 0
	}
	// Not (DataSize+Window-1)/Window: that wraps for a data size within a
	// window of 2^64 and yields too few windows.
	n := h.DataSize / h.Window
	if h.DataSize%h.Window != 0 {
		n++
	}
	return n
}

// WindowAt is the window that processing step step converts. Steps go up
// the data area, except in a shift towards higher offsets (Descending),
// where each window's destination overlaps the next higher window's source,
// so the top window must go first. The mapping is its own inverse: it also
// gives the step of a window.
func (h *Header) WindowAt(step uint64) uint64 {
	if h.Descending {
		return h.Windows() - 1 - step
	}
	return step
}

// WindowRange is window w's byte range [start, start+n) in the logical data
// area; only the last window may be short. Check bounds the data area below
// 2^63, so both fit the int64 offsets of blockdev.
func (h *Header) WindowRange(w uint64) (start, n int64) {
	s := w * h.Window
	return int64(s), int64(min(h.Window, h.DataSize-s))
}

// Converted is the byte range [lo, hi) of the logical data area that the
// first done steps have converted: a prefix ascending, a suffix descending
// (whose first step is the short last window, if there is one).
func (h *Header) Converted(done uint64) (lo, hi uint64) {
	total := h.Windows()
	switch {
	case done == 0:
		return 0, 0
	case done >= total:
		return 0, h.DataSize
	case h.Descending:
		return (total - done) * h.Window, h.DataSize
	}
	return 0, done * h.Window
}

// WindowOpen reports whether a conversion that stopped with progress done
// (the header's, advanced by its log records) may have left window
// WindowAt(done) partly written, so that recovery has work to do on it.
// logged says that the last log record after the checkpoint is a journal or
// checksum record: a copy of that window's old state, written before it was
// touched. Only an in-progress header can have a window in flight. Journal
// and checksum modes write their record before the window, so no record
// means the window was not started. Shift and none write the window before
// its progress record, so with windows left the next one may have started
// whatever the log says (docs/DESIGN.md, "Per-window protocol").
func (h *Header) WindowOpen(done uint64, logged bool) bool {
	if h.State != StateInProgress || done >= h.Windows() {
		return false
	}
	switch h.Mode {
	case ModeShift, ModeNone:
		return true
	}
	return logged
}

// ConvertedBytes is how many bytes of the data area the first done steps
// have converted (the length of Converted).
func (h *Header) ConvertedBytes(done uint64) uint64 {
	lo, hi := h.Converted(done)
	return hi - lo
}
