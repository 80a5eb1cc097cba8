package fault

import (
	"testing"

	"github.com/cryptshift/cryptshift/engine"
)

// TestMutationDroppedFlushIsCaught removes one flush point at a time from
// the engine (Hooks.DropFlush) and requires the enumerator to find a
// violated property: a harness that passes an engine missing a flush the
// crash argument needs has gone blind.
func TestMutationDroppedFlushIsCaught(t *testing.T) {
	small := func(mode string, old, nw sideSpec) scenario {
		return scenario{mode: mode, old: old, nw: nw, window: 12 * kib, windows: 4}
	}
	online := small("journal", xts512, xts4096)
	// Separate metadata: the application's flush of the data disk would
	// otherwise make the progress record durable too.
	online.sepMeta, online.online = true, true
	// Through the simulated kernel crypto devices, with the metadata on its
	// own disk so the progress record's flush cannot stand in for the data's.
	kernel := small("shift", xts512, xts4096)
	kernel.sepMeta, kernel.kernel = true, true
	for _, tc := range []struct {
		point string
		sc    scenario
	}{
		{"journal-record", small("journal", xts512, essiv512)},
		{"journal-data", small("journal", plain512, xts4096)},
		{"checksum-record", small("checksum", xts512, xts4096)},
		{"checksum-record", small("checksum", essiv512, plain512)},
		{"progress-record", small("shift", plain512, xts512)},
		{"window-data", small("shift", xts4096, plain512)},
		{"window-data", small("none", xts512, xts512b)},
		{"online-commit", online},
		{"window-data", kernel},
	} {
		t.Run(tc.point+"/"+tc.sc.String(), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.sc)
			r := record(t, f, &engine.Hooks{DropFlush: map[string]bool{tc.point: true}})
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
