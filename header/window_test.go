package header

import (
	"math/rand/v2"
	"testing"
)

// TestWindowGeometry checks the geometry against its definition: the steps
// visit every window once, the windows tile the data area in order, and the
// converted range after done steps is the union of their windows.
func TestWindowGeometry(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		h := &Header{Window: 4096 * uint64(1+r.IntN(8)), Descending: r.IntN(2) == 0}
		h.DataSize = 4096 * uint64(1+r.IntN(40))
		total := h.Windows()
		if total*h.Window < h.DataSize || (total-1)*h.Window >= h.DataSize {
			t.Fatalf("%d windows of %d for %d bytes", total, h.Window, h.DataSize)
		}
		seen := make([]bool, total)
		lo, hi := uint64(0), uint64(0) // union of the windows of steps so far
		for step := range total {
			w := h.WindowAt(step)
			if w >= total || seen[w] {
				t.Fatalf("step %d -> window %d (of %d), seen before: %v", step, w, total, w < total && seen[w])
			}
			seen[w] = true
			if back := h.WindowAt(w); back != step {
				t.Fatalf("window %d -> step %d, want %d", w, back, step)
			}
			if step > 0 && (w < h.WindowAt(step-1)) != h.Descending {
				t.Fatalf("step %d: window %d after %d, descending %v", step, w, h.WindowAt(step-1), h.Descending)
			}
			start, n := h.WindowRange(w)
			if start != int64(w*h.Window) || n <= 0 || n > int64(h.Window) || uint64(start+n) > h.DataSize {
				t.Fatalf("window %d: range [%d, +%d) of %d bytes, windows of %d", w, start, n, h.DataSize, h.Window)
			}
			if n < int64(h.Window) && uint64(start+n) != h.DataSize {
				t.Fatalf("short window %d is not the last", w)
			}
			if step == 0 {
				lo, hi = uint64(start), uint64(start+n)
			} else if uint64(start+n) == lo {
				lo = uint64(start)
			} else if uint64(start) == hi {
				hi = uint64(start + n)
			} else {
				t.Fatalf("step %d: window [%d, +%d) not adjacent to the converted [%d, %d)", step, start, n, lo, hi)
			}
			if gl, gh := h.Converted(step + 1); gl != lo || gh != hi {
				t.Fatalf("Converted(%d) = [%d, %d), the windows give [%d, %d)", step+1, gl, gh, lo, hi)
			}
			if got := h.ConvertedBytes(step + 1); got != hi-lo {
				t.Fatalf("ConvertedBytes(%d) = %d, want %d", step+1, got, hi-lo)
			}
		}
		if lo != 0 || hi != h.DataSize {
			t.Fatalf("all windows cover [%d, %d) of %d bytes", lo, hi, h.DataSize)
		}
		if gl, gh := h.Converted(0); gl != gh {
			t.Fatalf("Converted(0) = [%d, %d)", gl, gh)
		}
	}
}

func TestWindowOpen(t *testing.T) {
	h := &Header{Window: 4096, DataSize: 3 * 4096}
	for _, tc := range []struct {
		mode   Mode
		state  State
		done   uint64
		logged bool
		want   bool
	}{
		{ModeJournal, StateInProgress, 1, true, true},
		{ModeJournal, StateInProgress, 1, false, false},
		{ModeChecksum, StateInProgress, 0, true, true},
		{ModeChecksum, StateInProgress, 0, false, false},
		{ModeShift, StateInProgress, 1, false, true},
		{ModeNone, StateInProgress, 2, false, true},
		{ModeShift, StateInProgress, 3, false, false},
		{ModeNone, StateInProgress, 3, false, false},
		{ModeJournal, StatePaused, 1, true, false},
		{ModeShift, StatePaused, 1, false, false},
		{ModeNone, StateComplete, 3, false, false},
	} {
		h.Mode, h.State = tc.mode, tc.state
		if got := h.WindowOpen(tc.done, tc.logged); got != tc.want {
			t.Errorf("%s %s done %d logged %v: WindowOpen = %v, want %v", tc.mode, tc.state, tc.done, tc.logged, got, tc.want)
		}
	}
}
