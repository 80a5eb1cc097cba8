package fault

import (
	"testing"

	"github.com/cryptshift/cryptshift/engine"
)

// mutant is a flush point to drop and the conversion to drop it from.
type mutant struct {
	point engine.FlushPoint
	sc    scenario
}

// unmutated are the flush points no mutation test drops, and why no crash
// state could show the loss.
var unmutated = map[engine.FlushPoint]string{
	// The last write of a decryption: lost, it leaves the record, and the
	// next recover finds the head in place and removes it again.
	engine.FlushDecryptRecordWipe: "the last write of a decryption; a lost removal is redone by recover",
	// The table is zeroed so that "no entry" is exact for verify. Entries
	// an earlier conversion left fail the new conversion's MAC key, and
	// every window's entry is rewritten and flushed with the window, so a
	// crash cannot make a stale entry pass for a current one.
	engine.FlushCreateDigestTable: "stale digest entries fail the new MAC key",
	// Dropped and caught by TestCrashAcceptDamage (accept_test.go), which
	// needs its own damaged starting states.
	engine.FlushAcceptDamage: "dropped in TestCrashAcceptDamage",
	// Accepting a changed window commits nothing after its entry: losing
	// the entry only makes the next run refuse again.
	engine.FlushAcceptIdentity: "nothing is committed after it; a lost entry makes the next run refuse again",
	// The last write of a LUKS2 conversion: lost, it leaves the token
	// saying the areas are overwritten, and recovery commits it again.
	engine.FlushLUKSEndCommit: "the last write; a lost end commit leaves the token, which recovery removes again",
	// The last write of a LUKS1 conversion: lost, it leaves the tag under
	// the normal magic, and recovery wipes (again) and clears it.
	engine.FlushLUKS1EndCommit: "the last write; a lost tag clearing leaves the tag, which recovery clears again",
}

// conversionMutants are the conversion's flush points, each dropped from a
// conversion where no later flush of the same disk stands in for it.
func conversionMutants() []mutant {
	small := func(mode string, old, nw sideSpec) scenario {
		return scenario{mode: mode, old: old, nw: nw, window: 12 * kib, windows: 4}
	}
	// With the metadata on its own disk, the next record's flush does not
	// reach the data disk.
	sep := func(mode string, old, nw sideSpec) scenario {
		sc := small(mode, old, nw)
		sc.sepMeta = true
		return sc
	}
	online := small("journal", xts512, xts4096)
	// Separate metadata: the application's flush of the data disk would
	// otherwise make the progress record durable too.
	online.sepMeta, online.online = true, true
	// Through the simulated kernel crypto devices, with the metadata on its
	// own disk so the progress record's flush cannot stand in for the data's.
	kernel := small("shift", xts512, xts4096)
	kernel.sepMeta, kernel.kernel = true, true
	// Kernel crypto's journal and checksum: the record's flush, and the
	// flush of the window written through the new device.
	kmut := func(mode string, old, nw sideSpec) scenario {
		sc := sep(mode, old, nw)
		sc.kernel = true
		return sc
	}
	return []mutant{
		{engine.FlushJournalRecord, kmut("journal", xts512, essiv512)},
		{engine.FlushJournalData, kmut("journal", plain512, xts4096)},
		{engine.FlushChecksumRecord, kmut("checksum", xts512, xts4096)},
		{engine.FlushChecksumData, kmut("checksum", essiv512, plain512)},
		{engine.FlushHeaderCommit, small("journal", xts512, essiv512)},
		{engine.FlushHeaderCommit, small("shift", xts512, xts4096)},
		{engine.FlushJournalRecord, small("journal", xts512, essiv512)},
		{engine.FlushJournalData, small("journal", plain512, xts4096)},
		{engine.FlushChecksumRecord, small("checksum", xts512, xts4096)},
		{engine.FlushChecksumRecord, small("checksum", essiv512, plain512)},
		{engine.FlushChecksumData, sep("checksum", xts512, xts4096)},
		{engine.FlushProgressRecord, small("shift", plain512, xts512)},
		{engine.FlushWindowData, small("shift", xts4096, plain512)},
		{engine.FlushWindowData, small("none", xts512, xts512b)},
		{engine.FlushOnlineCommit, online},
		{engine.FlushWindowData, kernel},
	}
}

// recoveryMutants are recovery's flush points, each dropped from the
// recovery of a conversion with a window in flight.
func recoveryMutants() []mutant {
	small := func(mode string, old, nw sideSpec, sep bool) scenario {
		return scenario{mode: mode, old: old, nw: nw, sepMeta: sep, window: 12 * kib, windows: 4}
	}
	return []mutant{
		// Metadata on the data disk, where the checkpoint's own flushes
		// would make the window durable if only they came first; and on its
		// own disk, where nothing else ever flushes the data disk.
		{engine.FlushRecoverJournalData, small("journal", xts512, essiv512, false)},
		{engine.FlushRecoverJournalData, small("journal", plain512, xts4096, true)},
		{engine.FlushRecoverChecksumData, small("checksum", xts512, xts4096, false)},
		{engine.FlushRecoverChecksumData, small("checksum", essiv512, plain512, true)},
	}
}

// TestMutationCoversEveryFlushPoint: every flush point is dropped by a
// mutation test, or listed in unmutated with the reason it cannot be.
func TestMutationCoversEveryFlushPoint(t *testing.T) {
	covered := map[engine.FlushPoint]bool{}
	for _, m := range append(conversionMutants(), recoveryMutants()...) {
		covered[m.point] = true
	}
	for _, m := range luksMutants() {
		covered[m.point] = true
	}
	for _, p := range decryptMutants() {
		covered[p] = true
	}
	for _, m := range luks1Mutants() {
		covered[m.point] = true
	}
	for _, p := range engine.FlushPoints() {
		_, exempt := unmutated[p]
		if covered[p] == exempt {
			t.Errorf("flush point %s: dropped by a mutation test %v, listed as unmutated %v (want exactly one)", p, covered[p], exempt)
		}
	}
}

// TestMutationDroppedFlushIsCaught removes one flush point at a time from
// the engine (Hooks.DropFlush) and requires the enumerator to find a
// violated property: a harness that passes an engine missing a flush the
// crash argument needs has gone blind.
func TestMutationDroppedFlushIsCaught(t *testing.T) {
	for _, tc := range conversionMutants() {
		t.Run(string(tc.point)+"/"+tc.sc.String(), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.sc)
			r := record(t, f, &engine.Hooks{DropFlush: map[engine.FlushPoint]bool{tc.point: true}})
			c := newChecker(f)
			// Counted apart: these states run against a broken engine.
			c.tally = tallyFor("mutants")
			c.stopAfter = 1
			c.sweep(r, sweepOpts{enum: EnumOptions{MaxStates: 24, Torn: true, Seed: 1}})
			if len(c.violations) == 0 {
				t.Fatalf("flush point %s dropped, yet %d crash states passed every property", tc.point, c.states)
			}
			t.Logf("caught after %d states: %s", c.states, c.violations[0])
		})
	}
}

// TestMutationDroppedRecoveryFlushIsCaught does the same for recovery's
// flush points, which only run after a crash: crash states of a correct
// conversion are recovered by a mutant that skips the flush of the window
// it rolled forward, that recovery is crashed at each of its points (the
// harness's nested crashes), and a correct engine must find a violated
// property in what it leaves. As the control, the same states recovered
// by the unmutated engine must pass every property, so the catch is the
// dropped flush's doing and not the harness's.
func TestMutationDroppedRecoveryFlushIsCaught(t *testing.T) {
	for _, tc := range recoveryMutants() {
		t.Run(string(tc.point)+"/"+tc.sc.String(), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.sc)
			r := record(t, f, nil)
			// The outer states are crashes next to a flush during step 1,
			// from its record to its progress being reported: recovery
			// rolls window 1 forward in those where its record reached the
			// disk. Each has its recovery crashed at every point.
			var points []int
			for _, k := range r.dom.FlushPoints() {
				if k >= r.marks[1] && k <= r.marks[2] {
					points = append(points, k)
				}
			}
			o := sweepOpts{
				points:    points,
				enum:      EnumOptions{MaxStates: 3, Torn: true, Seed: 1},
				nestEvery: 1,
				nestEnum:  EnumOptions{MaxStates: 4, Torn: true, Seed: 2},
			}
			if testing.Short() {
				// Fewer states per crash point (the race detector is slow),
				// still at every crash point of the step and of each recovery.
				o.enum.MaxStates, o.nestEnum.MaxStates = 2, 3
			}

			ctl := newChecker(f)
			ctl.sweep(r, o)
			if len(ctl.violations) > 0 {
				ctl.report(t)
				t.Fatalf("control: the unmutated recovery failed")
			}

			o.nestHooks = &engine.Hooks{DropFlush: map[engine.FlushPoint]bool{tc.point: true}}
			c := newChecker(f)
			c.tally = tallyFor("mutants")
			c.stopAfter = 1
			c.sweep(r, o)
			if len(c.violations) == 0 {
				t.Fatalf("flush point %s dropped, yet %d crash states passed every property (control: %d)", tc.point, c.states, ctl.states)
			}
			t.Logf("caught after %d states: %s", c.states, c.violations[0])
			t.Logf("control, nothing dropped: %d crash states, %d property checks, no violation", ctl.states, ctl.checks)
		})
	}
}
