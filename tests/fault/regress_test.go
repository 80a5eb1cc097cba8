package fault

import (
	"testing"
)

// headerSlotWrite finds the trace index of the first write to header slot
// 0 (the last 4096 bytes of the metadata disk): the first copy of the first
// commit.
func headerSlotWrite(t *testing.T, r *run) int {
	t.Helper()
	meta := len(r.dom.Disks()) - 1
	size := r.dom.Disks()[meta].Size()
	for i := 0; i < r.dom.Ops(); i++ {
		if op := r.dom.Op(i); op.Kind == OpWrite && op.Disk == meta && op.Off == size-4096 {
			return i
		}
	}
	t.Fatal("no write to header slot 0")
	return 0
}

// TestRegressionTornFirstHeader keeps the first bug the enumerator found: a
// crash while the first header copy of a new conversion was being written
// left slot 0 torn and slot 1 blank, and convert then refused the device as
// having a corrupt header, although no window had been touched; nothing
// would ever convert it again. Every torn and shorn outcome of that write
// must leave a device that recovery calls unconverted and convert finishes.
func TestRegressionTornFirstHeader(t *testing.T) {
	for _, sc := range []scenario{
		{mode: "journal", old: xts512, nw: essiv512, window: 12 * kib, windows: 2},
		{mode: "shift", old: plain512, nw: xts4096, sepMeta: true, window: 12 * kib, windows: 2},
	} {
		t.Run(sc.String(), func(t *testing.T) {
			f := newFixture(t, sc)
			r := record(t, f, nil)
			w := headerSlotWrite(t, r)
			c := newChecker(f)
			for _, p := range []Persist{
				{Op: w, Torn: true, New: seq(0, 4)},
				{Op: w, Torn: true, New: every(8, 2)},
				{Op: w, Torn: true, New: seq(0, 1), Garbage: seq(4, 8)},
			} {
				ch, imgs := tornAt(t, r, w, p)
				desc := r.dom.Describe(w+1, ch)
				if !c.check(imgs, r.expectAt(w+1), desc) {
					c.report(t)
					return
				}
			}
			if c.checks == 0 {
				t.Fatal("no property was checked")
			}
		})
	}
}

// TestRegressionJournalCheckpointRace keeps the second finding: journal
// mode transforms the window in a goroutine while appendRecord runs, and
// when the record did not fit, the checkpoint that replaced the header
// raced with the transform reading the sector sizes from it. The race
// detector (CI runs this package with -race -short) sees it only if the log
// really wraps mid-conversion, which this checks.
func TestRegressionJournalCheckpointRace(t *testing.T) {
	sc := scenario{mode: "journal", old: xts512, nw: cbc4096, window: 64 * kib, windows: 16}
	f := newFixture(t, sc)
	r := record(t, f, nil)
	slot := r.dom.Disks()[0].Size() - 4096
	commits := 0
	for i := 0; i < r.dom.Ops(); i++ {
		if op := r.dom.Op(i); op.Kind == OpWrite && (op.Off == slot || op.Off == slot-4096) {
			commits++
		}
	}
	// Two copies when it starts, two when it completes; more is a
	// checkpoint because the log was full.
	if commits <= 4 {
		t.Fatalf("%d header writes: the log never wrapped, so the race cannot show", commits)
	}
}

// lastHeaderWrite finds the trace index of the last write to either header
// slot of the metadata disk: the second copy of the final checkpoint.
func lastHeaderWrite(t *testing.T, r *run) int {
	t.Helper()
	meta := len(r.dom.Disks()) - 1
	size := r.dom.Disks()[meta].Size()
	last := -1
	for i := 0; i < r.dom.Ops(); i++ {
		if op := r.dom.Op(i); op.Kind == OpWrite && op.Disk == meta && (op.Off == size-4096 || op.Off == size-8192) {
			last = i
		}
	}
	if last < 0 {
		t.Fatal("no header write")
	}
	return last
}

// TestRegressionTornLastCheckpoint keeps a real-kernel finding (tests/vm
// TestOnlineCLILogWrites, seed 1796221953996074179): a crash tore the
// second copy of the checkpoint that completed the conversion, and
// recovery, finding no window in flight, wrote nothing, so the torn copy
// stayed and verify reported a damaged header for good. Recovery must leave
// both copies current, and survive a crash during the rewrite.
func TestRegressionTornLastCheckpoint(t *testing.T) {
	for _, sc := range []scenario{
		{mode: "journal", old: xts512, nw: essiv512, window: 12 * kib, windows: 2},
		{mode: "checksum", old: xts512, nw: xts4096, sepMeta: true, window: 12 * kib, windows: 2},
	} {
		t.Run(sc.String(), func(t *testing.T) {
			f := newFixture(t, sc)
			r := record(t, f, nil)
			w := lastHeaderWrite(t, r)
			c := newChecker(f)
			torn := 0
			for _, p := range []Persist{
				{Op: w, Torn: true, New: seq(0, 4)},
				{Op: w, Torn: true, New: every(8, 2)},
				{Op: w, Torn: true, New: seq(0, 1), Garbage: seq(4, 8)},
			} {
				ch, imgs := tornAt(t, r, w, p)
				if copiesCurrent(f.memTarget(imgs), sc.old.key(), sc.nw.key()) != "" {
					torn++ // the state really has a damaged copy to heal
				}
				desc := r.dom.Describe(w+1, ch)
				e := r.expectAt(w + 1)
				c.nested(imgs, e, desc, EnumOptions{MaxStates: 16, Torn: true, Shorn: true, Seed: 3}, nil)
				if !c.check(imgs, e, desc) {
					c.report(t)
					return
				}
			}
			if torn == 0 {
				t.Fatal("no state had a damaged header copy: the test checks nothing")
			}
			c.report(t)
		})
	}
}

// tornAt is the crash state just after write w in which everything pending
// reached the medium, write w only as p says (torn or shorn).
func tornAt(t *testing.T, r *run, w int, p Persist) (Choice, [][]byte) {
	t.Helper()
	pending, err := r.dom.Pending(w + 1)
	if err != nil {
		t.Fatal(err)
	}
	var ch Choice
	for _, op := range pending {
		if op == w {
			ch.Writes = append(ch.Writes, p)
		} else {
			ch.Writes = append(ch.Writes, Persist{Op: op})
		}
	}
	imgs, err := r.dom.Image(w+1, ch)
	if err != nil {
		t.Fatal(err)
	}
	return ch, imgs
}
