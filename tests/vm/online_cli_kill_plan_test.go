package vm

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
)

// What the kill of one boot of TestOnlineCLIKill must find a lane doing.
// Left to a random delay alone, whether a chain of boots ever interrupts a
// conversion before its first header, one that restarted after completing,
// or one that runs with --crypto kernel is luck; each of those is forced
// in some boot of every chain, and the remaining lanes and boots stay
// seeded-random.
const (
	// laneFree: the lane converts until the kill, wherever it lands.
	laneFree = iota
	// laneFinish: the kill waits until the conversion has exited.
	laneFinish
	// laneFreeze: once the lane reports window N durable, its metadata
	// device is suspended, so the kill finds the conversion at window N
	// or later and never complete.
	laneFreeze
	// lanePreHeader: the metadata device is suspended before the
	// conversion starts, so it cannot write its first header (its first
	// metadata I/O blocks) whenever the kill comes.
	lanePreHeader
)

// laneAct is one lane's forced part in a boot.
type laneAct struct {
	kind   int
	window int // laneFreeze: the window after which the metadata freezes
}

// bootPlan is how one boot of the chain ends: the console line that arms
// the kill, the seeded delay after it, and the lanes forced into a state.
type bootPlan struct {
	trigger string
	delay   time.Duration
	forced  map[string]laneAct
}

// Kill triggers printed by the boot script (killBootScript).
const (
	triggerStart    = "KILL-POINT-REACHED"   // just before the conversions start
	triggerPlan     = "PLAN-REACHED"         // every frozen or pre-header lane is in place
	triggerFinished = "CONVERSIONS-FINISHED" // every conversion has exited
)

// freezeMax bounds the window a lane freezes after: the guest polls the
// progress every 0.1 s and suspends the metadata device right after, and
// the rest of the conversion (at least three quarters of it) takes far
// longer than that, so a frozen lane is never found complete. A low bound
// also keeps the boot short: the kill waits for the freeze.
const freezeMax = killDataSize / killWindow / 4

// killPlans lays out the kill boots of one chain. Boot c (even, seeded)
// lets every conversion finish; boot c+1 restarts every lane (the reverse
// conversion on its other metadata slice) and is killed with the shift
// lane frozen at a seeded window of a --crypto kernel run (odd boots run
// the shift lane with the kernel's crypto), one of the other lanes before
// its first header, and the third free. Every other boot is killed at a
// seeded delay after the conversions start. finishLast also lets the last
// kill boot finish every conversion, so that the final boot reruns
// conversions already complete: the schedule of the seed issue 17 found.
func killPlans(rng *rand.Rand, boots int, finishLast bool) []bootPlan {
	if boots < 2 {
		panic("killPlans: the forced boots need at least two kill boots")
	}
	plans := make([]bootPlan, boots)
	for i := range plans {
		plans[i] = bootPlan{trigger: triggerStart, delay: RandomDelay(rng, 200*time.Millisecond, 9*time.Second)}
	}
	last := boots
	if finishLast {
		last = boots - 1
	}
	// Even c with c+1 < last: c+1 is an odd boot, so shift runs kernel crypto.
	c := 2 * rng.IntN(max(last/2, 1))
	finish := func(b int) {
		plans[b] = bootPlan{trigger: triggerFinished, delay: RandomDelay(rng, 0, 500*time.Millisecond), forced: map[string]laneAct{}}
		for _, l := range killLanes {
			plans[b].forced[l] = laneAct{kind: laneFinish}
		}
	}
	finish(c)
	pre := []string{"journal", "checksum"}[rng.IntN(2)]
	plans[c+1] = bootPlan{trigger: triggerPlan, delay: RandomDelay(rng, 0, 4*time.Second), forced: map[string]laneAct{
		"shift": {kind: laneFreeze, window: 1 + rng.IntN(freezeMax)},
		pre:     {kind: lanePreHeader},
	}}
	if finishLast && boots-1 > c+1 {
		finish(boots - 1)
	}
	return plans
}

// script is the shell assignment the boot script reads its plan from:
// PLAN_<lane> for each forced lane and PLANNED, the lanes the PLAN-REACHED
// trigger waits for.
func (p bootPlan) script() string {
	var b strings.Builder
	var waited []string
	for _, l := range p.lanes() {
		a := p.forced[l]
		switch a.kind {
		case laneFinish:
			fmt.Fprintf(&b, "PLAN_%s=finish\n", l)
		case laneFreeze:
			fmt.Fprintf(&b, "PLAN_%s=freeze:%d\n", l, a.window)
			waited = append(waited, l)
		case lanePreHeader:
			fmt.Fprintf(&b, "PLAN_%s=pre\n", l)
			waited = append(waited, l)
		}
	}
	fmt.Fprintf(&b, "PLANNED=%q\n", strings.Join(waited, " "))
	return b.String()
}

func (p bootPlan) lanes() []string {
	var ls []string
	for l := range p.forced {
		ls = append(ls, l)
	}
	sort.Strings(ls)
	return ls
}

func (p bootPlan) String() string {
	var parts []string
	for _, l := range p.lanes() {
		a := p.forced[l]
		switch a.kind {
		case laneFinish:
			parts = append(parts, l+" finishes")
		case laneFreeze:
			parts = append(parts, fmt.Sprintf("%s frozen after window %d", l, a.window))
		case lanePreHeader:
			parts = append(parts, l+" before its header")
		}
	}
	s := fmt.Sprintf("kill %v after %s", p.delay.Round(time.Millisecond), p.trigger)
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}
