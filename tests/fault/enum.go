package fault

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
)

// PointKind classifies a crash point by the operations around it; a point
// can have several kinds (after one flush and before another).
type PointKind uint8

const (
	PointStart         PointKind = 1 << iota // k == 0
	PointBeforeFlush                         // the next op is a flush
	PointAfterFlush                          // the previous op was a flush
	PointBetweenWrites                       // between two writes
	PointEnd                                 // k == Ops()
)

// CrashPoint is a crash right after the first K ops.
type CrashPoint struct {
	K    int
	Kind PointKind
}

// CrashPoints lists every crash point 0..Ops() with its kind, so a caller
// can pick, say, only the points around flushes (where most crash bugs show)
// for a fast run and every point for a thorough one.
func (d *Domain) CrashPoints() []CrashPoint {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.ops)
	pts := make([]CrashPoint, 0, n+1)
	for k := 0; k <= n; k++ {
		var kind PointKind
		if k == 0 {
			kind |= PointStart
		}
		if k == n {
			kind |= PointEnd
		}
		if k < n && d.ops[k].Kind == OpFlush {
			kind |= PointBeforeFlush
		}
		if k > 0 && d.ops[k-1].Kind == OpFlush {
			kind |= PointAfterFlush
		}
		if k > 0 && k < n && d.ops[k-1].Kind == OpWrite && d.ops[k].Kind == OpWrite {
			kind |= PointBetweenWrites
		}
		pts = append(pts, CrashPoint{K: k, Kind: kind})
	}
	return pts
}

// FlushPoints returns the crash points next to a flush, plus the start and
// the end: the fast-path selection.
func (d *Domain) FlushPoints() []int {
	var ks []int
	for _, p := range d.CrashPoints() {
		if p.Kind&^PointBetweenWrites != 0 {
			ks = append(ks, p.K)
		}
	}
	return ks
}

// EnumOptions bound the crash states enumerated per crash point.
type EnumOptions struct {
	// MaxStates caps the states per crash point (default 64). Beyond it, a
	// seeded sample is taken, always keeping "none", "all" and "reverse".
	MaxStates int
	// MaxSubset: every subset of the pending writes is enumerated when
	// there are at most this many (default 5; negative: never). With more,
	// random subsets (and orders, for overlapping writes) fill up to
	// MaxStates.
	MaxSubset int
	// Torn adds states where one write tears at sector granularity.
	Torn bool
	// Shorn adds states where torn sectors hold garbage.
	Shorn bool
	// Seed makes sampling and garbage deterministic.
	Seed uint64
}

// State is one enumerated crash state.
type State struct {
	K      int
	Choice Choice
	Desc   string
}

// States enumerates crash states at point k, deterministically, in this
// order: none persisted; all in order; all in reverse order (only when two
// pending writes on one disk overlap, since otherwise it is the same image);
// each single write dropped; every other subset (small pending sets); torn
// and shorn patterns of each write (first half, second half, alternating,
// seeded random); then random fill. Duplicates are removed.
func (d *Domain) States(k int, o EnumOptions) ([]State, error) {
	if o.MaxStates <= 0 {
		o.MaxStates = 64
	}
	if o.MaxSubset == 0 {
		o.MaxSubset = 5
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkPoint(k); err != nil {
		return nil, err
	}
	d.seek(k)
	pending := d.pendingLocked()
	e := &enumerator{d: d, pending: pending, seen: map[string]bool{}, seed: o.Seed}
	rng := rand.New(rand.NewPCG(o.Seed, uint64(k)))

	n := len(pending)
	e.add(nil) // none
	e.add(e.subset(func(int) bool { return true }))
	if d.anyOverlap(pending) {
		rev := e.subset(func(int) bool { return true })
		slices.Reverse(rev)
		e.add(rev)
	}
	core := len(e.states)
	if n >= 2 {
		for i := range n {
			e.add(e.subset(func(j int) bool { return j != i }))
		}
	}
	if n <= o.MaxSubset {
		for mask := 1; mask < 1<<n-1; mask++ {
			e.add(e.subset(func(j int) bool { return mask&(1<<j) != 0 }))
		}
	}
	for i, w := range pending {
		ns := sectors(d.ops[w])
		var patterns []Persist
		if o.Torn && ns >= 2 {
			h := ns / 2
			patterns = append(patterns,
				torn(w, seq(0, h), nil),
				torn(w, seq(h, ns), nil),
				torn(w, every(ns, 2), nil),
				torn(w, randomNew(rng, ns), nil))
		}
		if o.Shorn && ns >= 1 {
			h := ns / 2
			g, nw := randomShorn(rng, ns)
			patterns = append(patterns,
				torn(w, nil, seq(0, ns)),
				torn(w, seq(0, h), []int{h}),
				torn(w, nw, g))
		}
		for _, p := range patterns {
			// The others all made it; or the write was in flight when the
			// power went and nothing after it made it.
			e.add(e.withTorn(p, func(j int) bool { return j != i }))
			e.add(e.withTorn(p, func(j int) bool { return j < i }))
		}
	}

	if len(e.states) > o.MaxStates {
		keep := min(core, o.MaxStates)
		rest := rng.Perm(len(e.states) - core)[:o.MaxStates-keep]
		slices.Sort(rest)
		sampled := e.states[:keep:keep]
		for _, r := range rest {
			sampled = append(sampled, e.states[core+r])
		}
		e.states = sampled
	} else if n > o.MaxSubset {
		e.randomFill(rng, o)
	}
	for i := range e.states {
		e.states[i].K = k
		e.states[i].Desc = d.describeLocked(k, pending, e.states[i].Choice)
	}
	return e.states, nil
}

type enumerator struct {
	d       *Domain
	pending []int
	seen    map[string]bool
	states  []State
	seed    uint64
}

func (e *enumerator) subset(keep func(i int) bool) []Persist {
	var ws []Persist
	for i, w := range e.pending {
		if keep(i) {
			ws = append(ws, Persist{Op: w})
		}
	}
	return ws
}

// withTorn is the subset chosen by keep, in trace order, with p's write
// (which keep excludes) torn in its trace position.
func (e *enumerator) withTorn(p Persist, keep func(i int) bool) []Persist {
	var ws []Persist
	for i, w := range e.pending {
		switch {
		case w == p.Op:
			ws = append(ws, p)
		case keep(i):
			ws = append(ws, Persist{Op: w})
		}
	}
	return ws
}

func (e *enumerator) add(ws []Persist) {
	key := choiceKey(ws)
	if e.seen[key] {
		return
	}
	e.seen[key] = true
	e.states = append(e.states, State{Choice: Choice{Writes: ws, Seed: e.seed}})
}

// choiceKey identifies a choice for deduplication; a torn write whose
// pattern is all-new or all-old is keyed as the plain write or a drop.
func choiceKey(ws []Persist) string {
	var b strings.Builder
	for _, p := range ws {
		fmt.Fprintf(&b, "%d", p.Op)
		if p.Torn {
			fmt.Fprintf(&b, "t%vg%v", p.New, p.Garbage)
		}
		b.WriteByte(';')
	}
	return b.String()
}

// randomFill adds seeded random subsets (shuffled when order can matter,
// sometimes with a torn write) until MaxStates or too many repeats.
func (e *enumerator) randomFill(rng *rand.Rand, o EnumOptions) {
	overlap := e.d.anyOverlap(e.pending)
	for tries := 0; len(e.states) < o.MaxStates && tries < 8*o.MaxStates; tries++ {
		var ws []Persist
		for _, w := range e.pending {
			if rng.IntN(2) == 0 {
				continue
			}
			p := Persist{Op: w}
			ns := sectors(e.d.ops[w])
			switch r := rng.IntN(8); {
			case o.Shorn && r == 0 && ns >= 1:
				g, nw := randomShorn(rng, ns)
				p = torn(w, nw, g)
			case o.Torn && r <= 1 && ns >= 2:
				p = torn(w, randomNew(rng, ns), nil)
			}
			ws = append(ws, p)
		}
		if overlap {
			rng.Shuffle(len(ws), func(i, j int) { ws[i], ws[j] = ws[j], ws[i] })
		}
		e.add(ws)
	}
}

// anyOverlap reports whether two of the writes share a byte on one disk.
func (d *Domain) anyOverlap(ws []int) bool {
	for i, a := range ws {
		for _, b := range ws[i+1:] {
			x, y := d.ops[a], d.ops[b]
			if x.Disk == y.Disk && x.Off < y.Off+int64(len(y.Data)) && y.Off < x.Off+int64(len(x.Data)) {
				return true
			}
		}
	}
	return false
}

func torn(op int, nw, garbage []int) Persist {
	return Persist{Op: op, Torn: true, New: nw, Garbage: garbage}
}

func seq(lo, hi int) []int {
	s := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		s = append(s, i)
	}
	return s
}

func every(n, step int) []int {
	var s []int
	for i := 0; i < n; i += step {
		s = append(s, i)
	}
	return s
}

// randomNew picks a proper, non-empty subset of n >= 2 sectors: all or
// none would not be a tear.
func randomNew(rng *rand.Rand, n int) []int {
	var s []int
	for i := range n {
		if rng.IntN(2) == 0 {
			s = append(s, i)
		}
	}
	switch len(s) {
	case 0:
		s = []int{rng.IntN(n)}
	case n:
		x := rng.IntN(n)
		s = slices.Delete(s, x, x+1)
	}
	return s
}

// randomShorn gives each of n sectors a state old, new or garbage, with at
// least one garbage sector.
func randomShorn(rng *rand.Rand, n int) (garbage, nw []int) {
	for i := range n {
		switch rng.IntN(3) {
		case 0:
			garbage = append(garbage, i)
		case 1:
			nw = append(nw, i)
		}
	}
	if len(garbage) == 0 {
		x := rng.IntN(n)
		garbage = []int{x}
		if i := slices.Index(nw, x); i >= 0 {
			nw = slices.Delete(nw, i, i+1)
		}
	}
	return garbage, nw
}
