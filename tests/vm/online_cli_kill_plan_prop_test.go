package vm

import (
	"math/rand/v2"
	"testing"
)

// TestKillPlansCover checks, for many seeds and chain lengths, that every
// chain killPlans lays out forces what TestOnlineCLIKill's assertions need:
// a kill before a lane's first header, a kill of a conversion that
// restarted after completing, and a kill of a --crypto kernel run (odd
// boots) in progress. It needs no VM.
func TestKillPlansCover(t *testing.T) {
	for seed := uint64(0); seed < 2000; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		boots := 2 + rng.IntN(20)
		finishLast := rng.IntN(2) == 0
		plans := killPlans(rng, boots, finishLast)
		if len(plans) != boots {
			t.Fatalf("seed %d: %d plans for %d boots", seed, len(plans), boots)
		}
		complete := map[string]bool{} // lanes a finish boot left complete
		var preHeader, restarted, kernel bool
		for b, p := range plans {
			restart := map[string]bool{}
			for _, l := range killLanes {
				restart[l] = complete[l]
				complete[l] = false
			}
			allFinish := true
			for _, l := range killLanes {
				a, ok := p.forced[l]
				if !ok || a.kind != laneFinish {
					allFinish = false
				}
				if !ok {
					continue
				}
				switch a.kind {
				case laneFinish:
					complete[l] = true
				case laneFreeze:
					if a.window < 1 || a.window > freezeMax {
						t.Fatalf("seed %d boot %d: %s frozen after window %d, outside [1, %d]", seed, b, l, a.window, freezeMax)
					}
					if l == "shift" && b%2 == 1 {
						kernel = true
					}
					restarted = restarted || restart[l]
				case lanePreHeader:
					// Only a lane that starts afresh has no header to find.
					if restart[l] {
						preHeader, restarted = true, true
					}
				}
			}
			want := triggerStart
			switch {
			case allFinish:
				want = triggerFinished
			case len(p.forced) > 0:
				want = triggerPlan
			}
			if p.trigger != want {
				t.Fatalf("seed %d boot %d: trigger %s, want %s (%v)", seed, b, p.trigger, want, p)
			}
		}
		if !preHeader || !restarted || !kernel {
			t.Fatalf("seed %d, %d boots: before a header %v, after a restart %v, --crypto kernel %v: %v",
				seed, boots, preHeader, restarted, kernel, plans)
		}
		if finishLast && boots >= 4 && plans[boots-1].trigger != triggerFinished {
			t.Fatalf("seed %d, %d boots: the last kill boot does not finish every conversion: %v", seed, boots, plans[boots-1])
		}
	}
}
