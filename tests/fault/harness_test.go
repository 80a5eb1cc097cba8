package fault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
)

// Property names, as in the brief of issue 3 and the counts printed.
const (
	P1 = "P1 recover finishes and is idempotent"
	P2 = "P2 window in flight is old or new"
	P3 = "P3 nothing outside the window changed"
	P4 = "P4 resume completes with the original plaintext"
	P5 = "P5 damage is reported, never silently decrypted"
	P6 = "P6 acknowledged application writes survive"
)

// tally counts crash states and property checks per mode, for the summary
// TestMain prints.
type tally struct {
	states, checks atomic.Int64
}

var (
	talliesMu sync.Mutex
	tallies   = map[string]*tally{}
)

func tallyFor(mode string) *tally {
	talliesMu.Lock()
	defer talliesMu.Unlock()
	if tallies[mode] == nil {
		tallies[mode] = &tally{}
	}
	return tallies[mode]
}

// run is one recorded conversion: its trace and the points where progress
// was known durable.
type run struct {
	f   *fixture
	dom *Domain
	// marks[d] is the crash point from which d windows are durably done:
	// the engine reported them, and it reports only after a step's data
	// and record are flushed. Before marks[0] no header need exist.
	marks []int
	app   *appWriter // online scenarios
}

// record runs the conversion to the end on a fresh crash domain.
func record(t testing.TB, f *fixture, hooks *engine.Hooks) *run {
	t.Helper()
	r := &run{f: f}
	dom, tgt := f.domainTarget(f.images())
	r.dom = dom
	var h engine.Holder
	if f.sc.online {
		r.app = newAppWriter(f, dom, tgt)
		h = r.app
	}
	opts := f.convertOptions(tgt, h, hooks)
	opts.Progress = func(p engine.Progress) {
		for uint64(len(r.marks)) <= p.Done {
			r.marks = append(r.marks, dom.Ops())
		}
	}
	res, err := engine.Convert(context.Background(), tgt, f.cfg, opts)
	if err != nil {
		t.Fatalf("%s: conversion on the recording disk: %v", f.sc, err)
	}
	if res.Header.State != header.StateComplete || int(res.Header.Windows()) != f.windows ||
		int64(res.Header.OldOffset) != f.oldOff || int64(res.Header.NewOffset) != f.newOff {
		t.Fatalf("%s: unexpected header after conversion: %+v", f.sc, res.Header)
	}
	if len(r.marks) != f.windows+1 {
		t.Fatalf("%s: progress reported %d times for %d windows", f.sc, len(r.marks), f.windows)
	}
	if r.app != nil {
		if r.app.failed != nil {
			t.Fatalf("%s: application write: %v", f.sc, r.app.failed)
		}
		// A released window is committed (O1) before the engine reports it.
		for d, m := range r.app.releaseMarks {
			if d < len(r.marks) && m < r.marks[d] {
				r.marks[d] = m
			}
		}
	}
	return r
}

// expect is what a crash at one point must preserve.
type expect struct {
	plain []byte // logical plaintext that must survive
	skip  []bool // per 512-byte sector: no promise (an unacknowledged write)
	lo    int    // windows durably done; -1 when no header need exist
	// extra windows recovery may have rolled forward past lo+1, in shift
	// mode: a progress record durable before its flush returned, or one
	// written by a recovery that then crashed, makes recovery redo the
	// following step too (its source is intact, S2).
	extra int
	// shorn: some sector holds garbage, which the disk model of
	// docs/DESIGN.md excludes (sectors tear whole). Then resume may refuse
	// the device, provided it writes nothing; data must still be right.
	shorn bool
}

func hasGarbage(c Choice) bool {
	for _, p := range c.Writes {
		if len(p.Garbage) > 0 {
			return true
		}
	}
	return false
}

func (r *run) expectAt(k int) expect {
	e := expect{plain: r.f.plain, lo: -1}
	for d, m := range r.marks {
		if m <= k {
			e.lo = d
		}
	}
	if r.app != nil {
		e.plain, e.skip = r.app.expectAt(k)
	}
	return e
}

// violation is one property a crash state broke.
type violation struct {
	prop, state, msg string
}

func (v violation) String() string {
	return fmt.Sprintf("%s\n\tstate: %s\n\t%s", v.prop, v.state, v.msg)
}

// checker runs recovery over crash states of one run and checks the
// properties.
type checker struct {
	f     *fixture
	tally *tally
	// stopAfter ends the sweep after that many violations (0: never).
	stopAfter int

	snap [][]byte // scratch for the idempotence check

	mu         sync.Mutex
	violations []violation
	states     int
	checks     int
	refusals   int // resumes that refused a shorn state safely
	damages    int // recoveries that reported damage (P5 exercised)
}

func newChecker(f *fixture) *checker {
	return &checker{f: f, tally: tallyFor(f.sc.mode)}
}

func (c *checker) fail(prop, state, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.violations = append(c.violations, violation{prop, state, fmt.Sprintf(format, args...)})
}

func (c *checker) count(n int) {
	c.mu.Lock()
	c.checks += n
	c.mu.Unlock()
	c.tally.checks.Add(int64(n))
}

func (c *checker) done() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopAfter > 0 && len(c.violations) >= c.stopAfter
}

// report fails t with the first violations found.
func (c *checker) report(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Logf("%s: %d crash states, %d property checks, %d damage reports, %d safe refusals to resume after garbage",
		c.f.sc, c.states, c.checks, c.damages, c.refusals)
	for i, v := range c.violations {
		if i == 5 {
			t.Errorf("... and %d more violations", len(c.violations)-i)
			break
		}
		t.Errorf("%s", v)
	}
}

// safeRecover runs engine.Recover, turning a panic into an error.
func (c *checker) safeRecover(tgt engine.Target, accept bool) (res *engine.RecoverResult, err error, panicked bool) {
	return c.safeRecoverHooks(tgt, accept, nil)
}

// safeRecoverHooks is safeRecover with engine hooks (a mutant recovery).
func (c *checker) safeRecoverHooks(tgt engine.Target, accept bool, hooks *engine.Hooks) (res *engine.RecoverResult, err error, panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			err, panicked = fmt.Errorf("panic: %v", p), true
		}
	}()
	res, err = engine.Recover(context.Background(), tgt, c.f.sc.old.key(), c.f.sc.nw.key(),
		engine.RecoverOptions{AcceptDamage: accept}, c.f.options(nil, hooks))
	return res, err, false
}

// snapshot copies imgs into the checker's scratch, which stays valid until
// the next call: a copy per state is most of the harness's own cost.
func (c *checker) snapshot(imgs [][]byte) [][]byte {
	if len(c.snap) != len(imgs) {
		c.snap = make([][]byte, len(imgs))
	}
	for i, b := range imgs {
		if len(c.snap[i]) != len(b) {
			c.snap[i] = make([]byte, len(b))
		}
		copy(c.snap[i], b)
	}
	return c.snap
}

func sameAll(a, b [][]byte) bool {
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// errClass reduces a recovery outcome to what a second run must repeat.
func errClass(err error) string {
	switch {
	case err == nil:
		return "success"
	case errors.Is(err, errclass.Damaged):
		return "damaged"
	case errors.Is(err, errclass.Header):
		return "no header"
	}
	return "error"
}

// check recovers the crash state imgs (modified in place) and checks every
// property against e. It returns whether the state passed.
func (c *checker) check(imgs [][]byte, e expect, state string) bool {
	c.mu.Lock()
	c.states++
	c.mu.Unlock()
	c.tally.states.Add(1)
	before := c.violationCount()
	c.checkState(imgs, e, state)
	return c.violationCount() == before
}

func (c *checker) violationCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.violations)
}

func (c *checker) checkState(imgs [][]byte, e expect, state string) {
	f := c.f
	tgt := f.memTarget(imgs)
	res, err, panicked := c.safeRecover(tgt, false)
	c.count(1)
	if panicked {
		c.fail(P1, state, "recover: %v", err)
		return
	}
	var dmg *engine.DamageError
	done := 0
	switch {
	case err == nil:
		done = int(res.Header.Done)
	case errors.Is(err, errclass.Header) && e.lo < 0:
		// The first header never became durable: no conversion exists.
	case errors.Is(err, errclass.Damaged):
		c.count(1)
		c.mu.Lock()
		c.damages++
		c.mu.Unlock()
		if !errors.As(err, &dmg) {
			c.fail(P5, state, "ErrDamaged without a DamageError: %v", err)
			return
		}
		if f.sc.mode != "checksum" && f.sc.mode != "none" {
			c.fail(P5, state, "%s mode reported damage, which it never may: %v", f.sc.mode, err)
			return
		}
	default:
		c.fail(P1, state, "recover failed (durably done: %d windows): %v", e.lo, err)
		return
	}

	// P1: a second run changes nothing and says the same.
	snap := c.snapshot(imgs)
	_, err2, panicked := c.safeRecover(tgt, false)
	c.count(1)
	if panicked || errClass(err2) != errClass(err) {
		c.fail(P1, state, "second recover: %v (first: %v)", err2, err)
		return
	}
	if !sameAll(snap, imgs) {
		c.fail(P1, state, "second recover changed the disk (first: %v)", err)
		return
	}
	// P1: a recovered conversion has both header copies authentic and
	// current, so that a copy decaying later can never fall back to a
	// torn or stale one (recovery rewrites it when no checkpoint did).
	if err == nil {
		c.count(1)
		if msg := copiesCurrent(tgt, c.f.sc.old.key(), c.f.sc.nw.key()); msg != "" {
			c.fail(P1, state, "after recovery: %s", msg)
			return
		}
	}

	// P5: damage is named, confined to the window in flight, and, in
	// checksum mode, only claimed for units that really are neither.
	var damaged func(sector int64) bool
	if dmg != nil {
		if !c.checkDamage(imgs, e, dmg, state) {
			return
		}
		damaged = func(s int64) bool {
			for _, r := range dmg.Sectors {
				if uint64(s) >= r.Start && uint64(s) < r.End {
					return true
				}
			}
			return false
		}
		res, err = engine.Recover(context.Background(), tgt, f.sc.old.key(), f.sc.nw.key(),
			engine.RecoverOptions{AcceptDamage: true}, f.options(nil, nil))
		c.count(1)
		if err != nil {
			c.fail(P5, state, "recover --accept-damage: %v (after %v)", err, dmg)
			return
		}
		done = int(res.Header.Done)
		snap = c.snapshot(imgs)
		_, err2, _ := c.safeRecover(tgt, false)
		c.count(1)
		if err2 != nil || !sameAll(snap, imgs) {
			c.fail(P1, state, "recover after --accept-damage was not a no-op: %v", err2)
			return
		}
	}

	// P2: only the window of step e.lo may have moved on, by one.
	c.count(1)
	// Shift redoes the step at the recorded progress even when it had not
	// started, so the bound is one past the durable progress, or past 0.
	// Resilience none counts a window accepted as damaged as done (it is
	// never converted again), which may be one past the one in flight.
	accepted := 0
	if dmg != nil && f.sc.mode == "none" {
		accepted = 1
	}
	if done < max(e.lo, 0) || done > max(e.lo, 0)+1+e.extra+accepted {
		c.fail(P2, state, "recovered progress %d windows, but %d were durably done and only one can be in flight", done, e.lo)
		return
	}
	// P2, P3: every window holds exactly the expected plaintext through
	// the mapping its progress says, except for named damage.
	for w := 0; w < f.windows; w++ {
		prop := P3
		if f.stepOf(w) == max(e.lo, 0) {
			prop = P2
		}
		c.count(1)
		if msg, sec := c.windowDiff(imgs[0], w, f.stepOf(w) < done, e, damaged); msg != "" {
			c.fail(c.propFor(prop, e, sec), state, "after recovery (progress %d): %s", done, msg)
			return
		}
	}

	// P4: resuming finishes the conversion with the original plaintext.
	var h engine.Holder
	if f.sc.online {
		// Online, the application has written converted windows, so the
		// offline identity check would rightly refuse; resume online.
		h = passiveHolder{}
	}
	if e.shorn {
		snap = c.snapshot(imgs)
	}
	cres, err := engine.Convert(context.Background(), tgt, f.cfg, f.convertOptions(tgt, h, nil))
	c.count(1)
	switch {
	case err == nil:
	case errors.Is(err, errclass.Refused) && done == f.windows:
		// Already complete: nothing left to resume.
	case e.shorn && (errors.Is(err, errclass.Device) || errors.Is(err, errclass.Header)):
		// Garbage in the metadata (a digest entry sharing the sector of
		// the one being written) makes resume doubt the device: safe, as
		// long as it refuses before writing.
		c.count(1)
		if !sameAll(snap, imgs) {
			c.fail(P4, state, "resume refused (%v) but changed the disk", err)
		}
		c.mu.Lock()
		c.refusals++
		c.mu.Unlock()
		return
	default:
		c.fail(P4, state, "resume after recovery (progress %d): %v", done, err)
		return
	}
	if err == nil && cres.Header.State != header.StateComplete {
		c.fail(P4, state, "resume ended in state %s", cres.Header.State)
		return
	}
	for w := 0; w < f.windows; w++ {
		c.count(1)
		if msg, sec := c.windowDiff(imgs[0], w, true, e, damaged); msg != "" {
			c.fail(c.propFor(P4, e, sec), state, "after resume: %s", msg)
			return
		}
	}
}

// checkDamage checks a DamageError against the state before it is accepted.
func (c *checker) checkDamage(imgs [][]byte, e expect, dmg *engine.DamageError, state string) bool {
	f := c.f
	c.count(1)
	step := f.stepOf(int(dmg.Window))
	if int(dmg.Window) >= f.windows || step < max(e.lo, 0) || step > e.lo+1 || len(dmg.Sectors) == 0 {
		c.fail(P5, state, "damage reported outside the window in flight (durably done %d): %v", e.lo, dmg)
		return false
	}
	start, n := f.windowRange(int(dmg.Window))
	for _, r := range dmg.Sectors {
		if int64(r.Start) < start/512 || int64(r.End) > (start+n)/512 || r.Start >= r.End {
			c.fail(P5, state, "damaged range %d-%d is not inside window %d: %v", r.Start, r.End, dmg.Window, dmg)
			return false
		}
	}
	if f.sc.mode != "checksum" {
		return true
	}
	// A unit reported as neither old nor new must really be neither:
	// otherwise recovery gives up data it could have kept.
	for _, r := range dmg.Sectors {
		for s := int64(r.Start); s < int64(r.End); s += f.unit / 512 {
			c.count(1)
			if c.unitIs(imgs[0], s*512, f.oldOff, e, false) || c.unitIs(imgs[0], s*512, f.newOff, e, true) {
				c.fail(P5, state, "unit at sector %d reported damaged but holds valid ciphertext", s)
				return false
			}
		}
	}
	return true
}

// unitIs reports whether the unit at logical byte lo decrypts to the
// expected plaintext through one of the mappings.
func (c *checker) unitIs(data []byte, lo, off int64, e expect, isNew bool) bool {
	f := c.f
	buf := bytes.Clone(data[off+lo : off+lo+f.unit])
	ci := f.oldC
	if isNew {
		ci = f.newC
	}
	ci.Decrypt(buf, uint64(lo)/512)
	return bytes.Equal(buf, e.plain[lo:lo+f.unit])
}

// propFor names a lost application block as such.
func (c *checker) propFor(prop string, e expect, sec int64) string {
	if _, ok := parseBlock(e.plain[sec*512 : sec*512+512]); ok {
		return P6
	}
	return prop
}

// windowDiff decrypts window w of data through the new (or old) mapping
// and describes the first sector that differs from the expectation.
func (c *checker) windowDiff(data []byte, w int, isNew bool, e expect, damaged func(int64) bool) (string, int64) {
	f := c.f
	start, n := f.windowRange(w)
	off, ci, which := f.oldOff, f.oldC, "old"
	if isNew {
		off, ci, which = f.newOff, f.newC, "new"
	}
	buf := bytes.Clone(data[off+start : off+start+n])
	ci.Decrypt(buf, uint64(start)/512)
	for s := int64(0); s < n; s += 512 {
		sec := (start + s) / 512
		if (damaged != nil && damaged(sec)) || (e.skip != nil && e.skip[sec]) {
			continue
		}
		if !bytes.Equal(buf[s:s+512], e.plain[start+s:start+s+512]) {
			return fmt.Sprintf("window %d (step %d) through the %s mapping: sector %d holds %s",
				w, f.stepOf(w), which, sec, describeSector(buf[s:s+512])), sec
		}
	}
	return "", 0
}

// describeSector says what a wrong sector seems to hold.
func describeSector(b []byte) string {
	if blk, ok := parseBlock(b); ok {
		return fmt.Sprintf("application block for sector %d gen %d", blk.sector, blk.gen)
	}
	if bytes.HasPrefix(b, []byte("sector ")) {
		return fmt.Sprintf("plaintext of %q", b[:15])
	}
	return fmt.Sprintf("unrecognised bytes % x...", b[:8])
}

// copiesCurrent says what is wrong with t's header copies, or "" when both
// are authentic and hold the authenticated header (apart from seq).
func copiesCurrent(t engine.Target, oldKey, newKey []byte) string {
	op, err := engine.OpenRecorded(t, oldKey, newKey)
	if err != nil {
		return fmt.Sprintf("open: %v", err)
	}
	cur := *op.Header()
	cur.Seq = 0
	for i, cp := range op.Copies() {
		if !op.CopyAuthentic(i) {
			return fmt.Sprintf("header copy %d is not authentic (%v)", i, cp.Err)
		}
		h := *cp.Header
		h.Seq = 0
		if h != cur {
			return fmt.Sprintf("header copy %d is stale: %d windows %s, current %d %s", i, h.Done, h.State, cur.Done, cur.State)
		}
	}
	return ""
}

// sweepOpts is how thoroughly a run is crashed.
type sweepOpts struct {
	points    []int // crash points; nil: all
	enum      EnumOptions
	seeds     int // enumerations per point with different seeds (>= 1)
	nestEvery int // crash recovery itself in every nth state (0: never)
	nestEnum  EnumOptions
	// nestHooks are the hooks of the recovery that is crashed (a mutant,
	// in mutation_test.go); the recoveries that check its states never
	// have any.
	nestHooks *engine.Hooks
}

// sweep enumerates crash states of r and checks each.
func (c *checker) sweep(r *run, o sweepOpts) {
	points := o.points
	if points == nil {
		for k := 0; k <= r.dom.Ops(); k++ {
			points = append(points, k)
		}
	}
	seen := map[string]bool{}
	n := 0
	for _, k := range points {
		e := r.expectAt(k)
		for s := range max(o.seeds, 1) {
			eo := o.enum
			eo.Seed += uint64(s) * 0x9e3779b9
			states, err := r.dom.States(k, eo)
			if err != nil {
				c.fail(P1, fmt.Sprintf("k=%d", k), "enumerate: %v", err)
				return
			}
			for _, st := range states {
				key := fmt.Sprint(k, st.Desc, st.Choice.Seed)
				if s > 0 && seen[key] {
					continue
				}
				seen[key] = true
				imgs, err := r.dom.Image(k, st.Choice)
				if err != nil {
					c.fail(P1, st.Desc, "image: %v", err)
					return
				}
				n++
				es := e
				es.shorn = hasGarbage(st.Choice)
				if c.f.sc.mode == "shift" {
					// The progress record can reach the disk before its
					// flush returns; recovery then redoes the next step.
					es.extra = 1
				}
				if o.nestEvery > 0 && n%o.nestEvery == 0 {
					c.nested(imgs, es, st.Desc, o.nestEnum, o.nestHooks)
				}
				c.check(imgs, es, st.Desc)
				if c.done() {
					return
				}
			}
		}
	}
}

// nested records recovery of a crash state on a recording domain, crashes
// it at each of its points, and checks the states that leaves: recovery
// must survive its own crashes. The recorded recovery runs with hooks (nil
// but in mutation tests). imgs is not modified.
func (c *checker) nested(imgs [][]byte, e expect, state string, eo EnumOptions, hooks *engine.Hooks) {
	dom, tgt := c.f.domainTarget(imgs)
	if _, _, panicked := c.safeRecoverHooks(tgt, false, hooks); panicked {
		return // check reports it on the outer state
	}
	for k := 1; k <= dom.Ops(); k++ {
		states, err := dom.States(k, eo)
		if err != nil {
			c.fail(P1, state, "enumerate recovery: %v", err)
			return
		}
		for _, st := range states {
			img2, err := dom.Image(k, st.Choice)
			if err != nil {
				c.fail(P1, state, "image: %v", err)
				return
			}
			e2 := e
			e2.shorn = e.shorn || hasGarbage(st.Choice)
			if c.f.sc.mode == "shift" {
				e2.extra++
			}
			c.check(img2, e2, state+" | recovery crashed at "+st.Desc)
			if c.done() {
				return
			}
		}
	}
}

// passiveHolder serves an online resume without writing.
type passiveHolder struct{}

func (passiveHolder) Hold(uint64, int64, int64) error    { return nil }
func (passiveHolder) Release(uint64, int64, int64) error { return nil }
func (passiveHolder) Abort(uint64, int64, int64, error)  {}

// flushPointsPlus is the points next to flushes plus every stride-th other
// point, for runs too long to crash everywhere.
func flushPointsPlus(dom *Domain, stride int) []int {
	pts := dom.FlushPoints()
	for k := 0; k <= dom.Ops(); k += max(stride, 1) {
		pts = append(pts, k)
	}
	slices.Sort(pts)
	return slices.Compact(pts)
}
