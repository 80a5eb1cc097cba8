package online

import (
	"errors"
	"testing"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/header"
)

// headerFor describes the fake conversion of setup: n windows of win
// sectors at offset 2048, done of them converted.
func headerFor(t *testing.T, o *Online, n, win, done uint64) *header.Header {
	t.Helper()
	uuid := [16]byte{9}
	h := &header.Header{UUID: uuid, DataSize: n * win * 512, OldOffset: 2048 * 512, NewOffset: 2048 * 512, Window: win * 512,
		State: header.StatePaused, Done: done,
		Old:    header.Mapping{Cipher: "aes-xts-plain64", KeyBytes: 64, SectorSize: 512},
		New:    header.Mapping{Cipher: "aes-xts-plain64", KeyBytes: 64, SectorSize: 4096},
		OldKCV: header.KCV(o.l.old.Key, uuid), NewKCV: header.KCV(o.l.new.Key, uuid)}
	return h
}

// TestReactivateAfterDeathWhileHeld: the process dies with window 2 held
// (I/O queued); recovery either rolled it forward (done = 3) or found it
// untouched (done = 2). Either way the queued I/O must be served with what
// the disk holds, and name must end on the composite table.
func TestReactivateAfterDeathWhileHeld(t *testing.T) {
	for _, rolled := range []bool{true, false} {
		f, o := setup(t, 5, 64)
		convert(t, f, o, []uint64{0, 1})
		if err := o.Hold(2, 2*64*512, 64*512); err != nil {
			t.Fatal(err)
		}
		done := uint64(2)
		if rolled {
			f.disk[2*64] = "new" // recovery rolled the window forward
			done = 3
		}
		f.check()
		// The process is gone: only recovery's view of the disk remains.
		h := headerFor(t, o, 5, 64, done)
		if err := reactivate(f, "data", h, Keys{Old: o.l.old.Key, New: o.l.new.Key}, "8:16", nil); err != nil {
			t.Fatal(err)
		}
		d := f.devs["data"]
		if d.suspended {
			t.Fatal("data left suspended")
		}
		for _, hd := range holdNames("data") {
			if f.devs[hd] != nil {
				t.Fatalf("hold device %s left behind", hd)
			}
		}
		// setup's table has allow_discards: the composite keeps it.
		want, _ := Composite(h, Keys{Old: o.l.old.Key, New: o.l.new.Key}, "8:16", []string{"allow_discards"})
		if dm.FormatTable(d.live) != dm.FormatTable(want) {
			t.Fatalf("rolled=%v: live table\n%s\nwant\n%s", rolled, dm.FormatTable(d.live), dm.FormatTable(want))
		}
	}
}

var errTest = errors.New("injected")

func TestReactivateAfterAbort(t *testing.T) {
	f, o := setup(t, 4, 64)
	convert(t, f, o, []uint64{0})
	if err := o.Hold(1, 64*512, 64*512); err != nil {
		t.Fatal(err)
	}
	f.disk[64] = "flux"
	o.Abort(1, 64*512, 64*512, errTest)
	f.disk[64] = "new" // recovery finished it from the journal
	h := headerFor(t, o, 4, 64, 2)
	if err := reactivate(f, "data", h, Keys{Old: o.l.old.Key, New: o.l.new.Key}, "8:16", nil); err != nil {
		t.Fatal(err)
	}
	f.check()
	if got := f.served(64); got != "new" {
		t.Fatalf("window 1 served as %s after reactivation", got)
	}
}

func TestReactivateRefusesInProgress(t *testing.T) {
	f, o := setup(t, 4, 64)
	h := headerFor(t, o, 4, 64, 0)
	h.State = header.StateInProgress
	if err := reactivate(f, "data", h, Keys{Old: o.l.old.Key, New: o.l.new.Key}, "8:16", nil); err == nil {
		t.Fatal("in-progress header accepted")
	}
}

func TestSettleLeavesTheCompositeTable(t *testing.T) {
	f, o := setup(t, 4, 64)
	convert(t, f, o, []uint64{0, 1})
	if err := o.Settle(); err != nil {
		t.Fatal(err)
	}
	f.check()
	for _, hd := range holdNames("data") {
		if f.devs[hd] != nil {
			t.Fatalf("hold device %s left behind", hd)
		}
	}
	live := f.devs["data"].live
	if len(live) != 2 || live[0].Length != 128 || live[1].Start != 128 || live[1].Type != "crypt" {
		t.Fatalf("settled table:\n%s", dm.FormatTable(live))
	}
	// A holder over the settled device resumes where it stopped.
	o2, err := newOnline(f, OnlineConfig{Name: "data", Old: o.l.old, New: o.l.new, Logf: t.Logf})
	if err == nil {
		t.Fatal("two targets without recorded offsets accepted")
	}
	off := int64(2048 * 512)
	if o2, err = newOnline(f, OnlineConfig{Name: "data", Old: o.l.old, New: o.l.new, OldOffset: &off, Logf: t.Logf}); err != nil {
		t.Fatal(err)
	}
	convert(t, f, o2, []uint64{2, 3})
	if err := o2.Finish(); err != nil {
		t.Fatal(err)
	}
	if live := f.devs["data"].live; len(live) != 1 {
		t.Fatalf("finished table:\n%s", dm.FormatTable(live))
	}
}
