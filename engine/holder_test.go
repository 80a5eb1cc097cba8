package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
)

// fakeHolder checks, at each Release, that the window is already committed
// durably enough for status (which reads only the disk) to see it done.
type fakeHolder struct {
	t       *testing.T
	tgt     Target
	held    *uint64
	events  []string
	aborted []uint64
}

func (f *fakeHolder) Hold(w uint64, start, n int64) error {
	if f.held != nil {
		f.t.Errorf("hold %d while %d held", w, *f.held)
	}
	f.held = &w
	f.events = append(f.events, fmt.Sprintf("hold %d", w))
	return nil
}

func (f *fakeHolder) Release(w uint64, start, n int64) error {
	st, err := ReadStatus(f.tgt)
	if err != nil {
		f.t.Fatal(err)
	}
	// Steps, not windows: shift may run descending.
	step := uint64(len(f.events)) / 2
	if st.Done < step+1 || (st.Open != nil && *st.Open == w) {
		f.t.Errorf("release of window %d (step %d) before it was committed: status done %d", w, step, st.Done)
	}
	f.held = nil
	f.events = append(f.events, fmt.Sprintf("release %d", w))
	return nil
}

func (f *fakeHolder) Abort(w uint64, start, n int64, cause error) {
	f.held = nil
	f.aborted = append(f.aborted, w)
}

func TestHolderSeesCommittedWindows(t *testing.T) {
	for _, mode := range []string{"journal", "checksum", "shift", "none"} {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t, sides[1], sides[3], 0, 4*testWindow, 4<<20)
			h := &fakeHolder{t: t, tgt: f.target()}
			res, err := Convert(context.Background(), f.target(), f.config(mode), Options{Holder: h})
			if err != nil {
				t.Fatal(err)
			}
			f.check(t, res.Header)
			want := "[hold 0 release 0 hold 1 release 1 hold 2 release 2 hold 3 release 3]"
			if res.Header.Descending {
				want = "[hold 3 release 3 hold 2 release 2 hold 1 release 1 hold 0 release 0]"
			}
			if fmt.Sprint(h.events) != want {
				t.Fatalf("events %v, want %s", h.events, want)
			}
		})
	}
}

// failingDev fails every write from the nth on.
type failingDev struct {
	*blockdev.Mem
	n int
}

func (d *failingDev) WriteAt(p []byte, off int64) (int, error) {
	if d.n--; d.n < 0 {
		return 0, errors.New("injected write error")
	}
	return d.Mem.WriteAt(p, off)
}

func TestHolderAbortsOnError(t *testing.T) {
	f := newFixture(t, sides[1], sides[3], 0, 4*testWindow, 4<<20)
	// Writes: digest table, two header copies (paused), two more (in
	// progress), then per journal window a record header, payload, window,
	// digest, progress record: fail in window 1.
	dev := &failingDev{Mem: f.dev, n: 3 + 2 + 5 + 2}
	tgt := Target{Data: dev, Meta: dev, MetaOnData: true}
	h := &fakeHolder{t: t, tgt: tgt}
	_, err := Convert(context.Background(), tgt, f.config("journal"), Options{Holder: h})
	if !errors.Is(err, errclass.IO) {
		t.Fatalf("want errclass.IO, got %v", err)
	}
	if fmt.Sprint(h.aborted) != "[1]" {
		t.Fatalf("aborted %v, want [1]; events %v", h.aborted, h.events)
	}
	// After the fault clears, recovery and resume finish the job.
	if _, err := Recover(context.Background(), f.target(), f.old.key, f.new_.key, RecoverOptions{}, Options{}); err != nil {
		t.Fatal(err)
	}
	res, err := Convert(context.Background(), f.target(), f.config("journal"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t, res.Header)
}
