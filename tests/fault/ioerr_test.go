package fault

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
)

// ioFault is one way to make the nth call of its kind fail on a disk.
type ioFault struct {
	name  string
	arm   func(d *Disk, n int)
	calls func(d *Disk) int64 // calls of that kind so far
}

var ioFaults = []ioFault{
	{"write", func(d *Disk, n int) { d.FailWrite(n, false) }, func(d *Disk) int64 { return d.failWrite.calls }},
	{"flush", func(d *Disk, n int) { d.FailFlush(n, false) }, func(d *Disk) int64 { return d.failFlush.calls }},
	// 1000 bytes: the write stops inside a sector, not at a boundary.
	{"short write", func(d *Disk, n int) { d.ShortWrite(n, 1000) }, func(d *Disk) int64 { return d.short.calls }},
	{"read", func(d *Disk, n int) { d.FailRead(n, false) }, func(d *Disk) int64 { return d.failRead.calls }},
}

// TestIOErrorsStopAndRecover fails, in turn, every write, flush and read
// the conversion makes (and cuts every write short), on each disk. Convert
// must stop with an error wrapping errclass.IO, and the state it leaves,
// once the disk works again, must pass the crash properties: recover, then
// resume to the original plaintext.
func TestIOErrorsStopAndRecover(t *testing.T) {
	base := func(mode string, old, nw sideSpec, sep, up bool) scenario {
		return scenario{mode: mode, old: old, nw: nw, sepMeta: sep, up: up, window: 12 * kib, windows: 4, tail: 4 * kib}
	}
	for _, sc := range []scenario{
		base("journal", xts512, essiv512, false, false),
		base("checksum", essiv512, xts4096, true, false),
		base("shift", plain512, xts512, false, true),
		base("shift", xts4096, plain512, true, false),
		base("none", xts512, plain512, false, false),
		kernelCrypto(base("shift", xts512, xts4096, true, false)),
		kernelCrypto(base("checksum", xts512, essiv512, false, false)),
	} {
		t.Run(sc.String(), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, sc)
			// A clean run counts the calls of each kind on each disk.
			dom, tgt := f.domainTarget(f.images())
			if _, err := engine.Convert(context.Background(), tgt, f.cfg, f.convertOptions(tgt, nil, nil)); err != nil {
				t.Fatal(err)
			}
			c := newChecker(f)
			// Counted apart: these are states an error left, not crashes.
			c.tally = tallyFor("io-errors/" + sc.mode)
			c.stopAfter = 5
			stride := 1
			if testing.Short() {
				stride = 7
			}
			runs := 0
			for di, disk := range dom.Disks() {
				for _, fk := range ioFaults {
					total := int(fk.calls(disk))
					if total == 0 {
						t.Fatalf("disk%d: no %s calls in a whole conversion", di, fk.name)
					}
					for n := 1; n <= total && !c.done(); n += stride {
						runs++
						c.ioRun(t, di, fk, n)
					}
				}
			}
			c.report(t)
			t.Logf("%d runs with an injected fault", runs)
			if c.states == 0 && len(c.violations) == 0 {
				t.Fatal("no state after an I/O error was checked")
			}
		})
	}
}

// ioRun converts with the nth call of kind fk on disk di failing, then
// checks what is left on the disks.
func (c *checker) ioRun(t *testing.T, di int, fk ioFault, n int) {
	f := c.f
	desc := fmt.Sprintf("%s %d on disk%d fails", fk.name, n, di)
	dom, tgt := f.domainTarget(f.images())
	disks := dom.Disks()
	fk.arm(disks[di], n)
	var marks []int
	opts := f.convertOptions(tgt, nil, nil)
	opts.Progress = func(p engine.Progress) {
		for uint64(len(marks)) <= p.Done {
			marks = append(marks, dom.Ops())
		}
	}
	_, err := engine.Convert(context.Background(), tgt, f.cfg, opts)
	c.count(1)
	if !errors.Is(err, errclass.IO) || !errors.Is(err, ErrInjected) {
		c.fail("I/O error surfaces as ErrIO", desc, "convert returned %v", err)
		return
	}
	imgs := make([][]byte, len(disks))
	for i, d := range disks {
		d.ClearFaults()
		imgs[i] = d.Contents()
	}
	e := expect{plain: f.plain, lo: len(marks) - 1}
	if f.sc.mode == "shift" {
		e.extra = 1
	}
	c.check(imgs, e, desc+": "+err.Error())
}

func kernelCrypto(sc scenario) scenario {
	sc.kernel = true
	return sc
}
