package online

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// OnlineConfig describes the device an online conversion runs under.
type OnlineConfig struct {
	// Name is the device-mapper device that serves the data (the one the
	// filesystem is on). Its live table must be one crypt target with the
	// old mapping or a linear one (plaintext), or, when resuming, a table
	// Composite built.
	Name string
	// Old and New are the mappings (with keys) the engine converts between.
	Old, New sectorcipher.Mapping
	// OldOffset and NewOffset are where the data area starts on the
	// backing device, in bytes. nil OldOffset takes it from Name's table,
	// which must then be a single target; nil NewOffset means the same as
	// the old (every resilience mode but shift).
	OldOffset, NewOffset *int64
	// Logf receives what the holder must tell the operator (aborts). nil
	// writes to stderr.
	Logf func(format string, args ...any)
}

// WindowStat is how long one held window kept I/O waiting.
type WindowStat struct {
	Window uint64
	// Swap is how long Name was suspended to swap its table: all I/O to
	// the device waited that long at most.
	Swap time.Duration
	// Held is from the hold device's suspend to its resume: I/O to the
	// window (and flushes, which device-mapper sends to every target)
	// waited that long at most.
	Held time.Duration
}

// Online holds windows of a device in use for the engine (engine.Holder).
// See docs/DESIGN.md, "Online: the device-mapper stack", for the order of
// the ioctls and why each is safe.
type Online struct {
	ctl   control
	name  string
	logf  func(string, ...any)
	l     *layout
	holds [2]string

	mu      sync.Mutex
	conv    span
	dir     int // +1 ascending, -1 descending, 0 not known yet
	next    int // index into holds of the device the next window uses
	held    *heldWindow
	aborted error
	stats   []WindowStat
	// last is Name's live table as cryptshift last left it, devSize the
	// backing device's size then (checkNeighbours).
	last    []dm.Target
	devSize uint64
	unknown error // why last could not be read
}

type heldWindow struct {
	w      uint64
	s      span
	hold   string
	swap   time.Duration
	heldAt time.Time
}

// NewOnline checks Name's live table against the conversion and returns a
// holder for it. It refuses a table that serves any part of the device
// with something else than the old or new mapping at the expected place:
// that is the wrong device, the wrong key, or the wrong progress.
func NewOnline(cfg OnlineConfig) (*Online, error) {
	return newOnline(sysControl{}, cfg)
}

func newOnline(ctl control, cfg OnlineConfig) (*Online, error) {
	if cfg.Name == "" {
		return nil, errors.New("online: no device name")
	}
	for _, m := range []sectorcipher.Mapping{cfg.Old, cfg.New} {
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("online: %w", err)
		}
	}
	live, err := ctl.table(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("online: %w", err)
	}
	if len(live) == 0 {
		return nil, fmt.Errorf("online: %s has no live table", cfg.Name)
	}
	for _, t := range live {
		if t.Type == "linear" && strings.Contains(t.Params, holdPrefix) {
			return nil, fmt.Errorf("online: %s still routes a window to a hold device from an earlier run; run recover first", cfg.Name)
		}
	}
	first, err := dm.ParseSegment(live[0])
	if err != nil {
		return nil, fmt.Errorf("online: %s: %w", cfg.Name, err)
	}
	// The options come from any crypt target: when resuming a conversion
	// from plaintext downwards, the first target is the old dm-linear part,
	// which has none, and taking its (empty) list would drop the options
	// of the converted part at the next table swap.
	l := &layout{dev: first.Device, size: dm.Size(live), old: cfg.Old, new: cfg.New, extra: dm.TableOptions(live)}
	switch {
	case cfg.OldOffset != nil:
		if *cfg.OldOffset < 0 || *cfg.OldOffset%512 != 0 {
			return nil, fmt.Errorf("online: old data offset %d is not a multiple of 512", *cfg.OldOffset)
		}
		l.oldOff = uint64(*cfg.OldOffset) / 512
	case len(live) == 1:
		l.oldOff = first.Offset
	default:
		return nil, fmt.Errorf("online: %s has %d targets; give the recorded data offsets", cfg.Name, len(live))
	}
	l.newOff = l.oldOff
	if cfg.NewOffset != nil {
		if *cfg.NewOffset < 0 || *cfg.NewOffset%512 != 0 {
			return nil, fmt.Errorf("online: new data offset %d is not a multiple of 512", *cfg.NewOffset)
		}
		l.newOff = uint64(*cfg.NewOffset) / 512
	}
	conv, err := l.converted(live)
	if err != nil {
		return nil, fmt.Errorf("online: %s: %w", cfg.Name, err)
	}
	o := &Online{ctl: ctl, name: cfg.Name, logf: cfg.Logf, l: l, conv: conv}
	if o.logf == nil {
		o.logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	o.holds = holdNames(cfg.Name)
	if err := o.clearStale(o.holds[:]); err != nil {
		return nil, err
	}
	if err := o.remember(); err != nil {
		return nil, err
	}
	return o, nil
}

// holdPrefix starts the names of hold devices and private kernel crypto
// devices: dm gives the devices so named the udev flags of private devices.
const holdPrefix = dm.PrivatePrefix

// holdNames are the two hold devices of the served device name.
func holdNames(name string) [2]string {
	id := sha256.Sum256([]byte(name))
	var h [2]string
	for i := range h {
		h[i] = fmt.Sprintf("%s%s-hold%d", holdPrefix, hex.EncodeToString(id[:4]), i)
	}
	return h
}

// clearStale removes hold or kernel crypto devices an earlier run left
// behind. Name does not route to them (checked above for hold devices;
// never for the others), so they serve nothing.
func (o *Online) clearStale(names []string) error {
	for _, h := range names {
		inf, err := o.ctl.info(h)
		if err != nil {
			return err
		}
		if !inf.Exists {
			continue
		}
		if inf.OpenCount > 0 {
			return fmt.Errorf("online: %s from an earlier run is still open", h)
		}
		if inf.Suspended {
			// Remove waits for nothing on a suspended device with no
			// opener, but resume first so no queued I/O is dropped silently.
			_ = o.ctl.resume(h, dm.NoFlush|dm.SkipLockfs)
		}
		if err := o.ctl.remove(h); err != nil {
			return fmt.Errorf("online: remove stale %s: %w", h, err)
		}
	}
	return nil
}

// Layout reports the backing device ("major:minor") and the data area, in
// bytes, as the holder understood them from the table.
func (o *Online) Layout() (device string, oldOffset, newOffset, size int64) {
	return o.l.dev, int64(o.l.oldOff * 512), int64(o.l.newOff * 512), int64(o.l.size * 512)
}

// Stats returns the measured stall of every window released so far.
func (o *Online) Stats() []WindowStat {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]WindowStat(nil), o.stats...)
}

func (o *Online) span(start, length int64) (span, error) {
	if start < 0 || length <= 0 || start%512 != 0 || length%512 != 0 {
		return span{}, fmt.Errorf("online: window [%d, +%d) is not in whole sectors", start, length)
	}
	s := span{uint64(start) / 512, uint64(start+length) / 512}
	if s.hi > o.l.size {
		return span{}, fmt.Errorf("online: window [%d, +%d) runs past the device (%d bytes)", start, length, o.l.size*512)
	}
	return s, nil
}

// direction decides, from what is converted, whether win continues the
// conversion upwards or downwards; any other window is refused, since the
// table would then serve a window that is not converted with the new key.
func (o *Online) direction(win span) (int, error) {
	asc := o.conv.empty() && win.lo == 0 || !o.conv.empty() && o.conv.lo == 0 && o.conv.hi == win.lo
	desc := o.conv.empty() && win.hi == o.l.size || !o.conv.empty() && o.conv.hi == o.l.size && o.conv.lo == win.hi
	switch {
	case o.dir > 0 && asc, o.dir == 0 && asc && !desc:
		return 1, nil
	case o.dir < 0 && desc, o.dir == 0 && desc && !asc:
		return -1, nil
	case o.dir == 0 && asc && desc:
		return 0, nil // the only window: either way
	}
	return 0, fmt.Errorf("online: window [%d, %d) is not next to the converted sectors [%d, %d)", win.lo, win.hi, o.conv.lo, o.conv.hi)
}

// Hold implements engine.Holder. Order (docs/DESIGN.md):
//  1. the spare hold device gets the window with the old mapping and is
//     resumed (nothing uses it yet);
//  2. Name's inactive table becomes [new | window -> hold | old], with the
//     previous window folded into the new part; Name is suspended with
//     NoFlush|SkipLockfs and resumed, which swaps the table;
//  3. the hold device is suspended with a flush and SkipLockfs: I/O in
//     flight to the window completes, new I/O to it queues.
func (o *Online) Hold(w uint64, start, length int64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.aborted != nil {
		return fmt.Errorf("online: an earlier window was aborted: %w", o.aborted)
	}
	if o.held != nil {
		return fmt.Errorf("online: hold of window %d while window %d is held", w, o.held.w)
	}
	if err := o.checkNeighbours(); err != nil {
		return err
	}
	win, err := o.span(start, length)
	if err != nil {
		return err
	}
	dir, err := o.direction(win)
	if err != nil {
		return err
	}
	hold := o.holds[o.next]
	holdTable := o.l.windowTable(o.l.old, o.l.oldOff, win)
	inf, err := o.ctl.info(hold)
	if err != nil {
		return err
	}
	if !inf.Exists {
		if err := o.ctl.create(hold, "", holdTable); err != nil {
			return err
		}
		if inf, err = o.ctl.info(hold); err != nil {
			return err
		}
	} else {
		// The spare hold device served the window before last, and Name
		// stopped routing to it at the previous swap.
		if inf.OpenCount > 0 {
			return fmt.Errorf("online: %s is still open; cannot reuse it", hold)
		}
		if err := o.ctl.load(hold, holdTable); err != nil {
			return err
		}
		if err := o.ctl.resume(hold, dm.NoFlush|dm.SkipLockfs); err != nil {
			return err
		}
	}
	holdDev := fmt.Sprintf("%d:%d", inf.Major, inf.Minor)
	if err := o.ctl.load(o.name, o.l.table(o.conv, win, holdDev)); err != nil {
		return o.explainFailure(err, false)
	}
	t0 := time.Now()
	if err := o.ctl.suspend(o.name, dm.NoFlush|dm.SkipLockfs); err != nil {
		return o.explainFailure(err, true)
	}
	if err := o.ctl.resume(o.name, dm.NoFlush|dm.SkipLockfs); err != nil {
		return err
	}
	swap := time.Since(t0)
	// An error here only stops the next Hold (checkNeighbours); this
	// window goes on, since Name routes it to hold now.
	_ = o.remember()
	// From here Name routes the window to hold: if suspending it fails, the
	// window is still served with the old mapping and nothing was written.
	o.held = &heldWindow{w: w, s: win, hold: hold, swap: swap}
	o.next = 1 - o.next
	if err := o.ctl.suspend(hold, dm.SkipLockfs); err != nil {
		o.held = nil
		return err
	}
	o.held.heldAt = time.Now()
	if o.dir == 0 {
		o.dir = dir
	}
	return nil
}

// Release implements engine.Holder: the hold device gets the window with
// the new mapping and is resumed, so the I/O that waited goes on under the
// new key. The next Hold folds the window into Name's converted part.
func (o *Online) Release(w uint64, start, length int64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	hw := o.held
	if hw == nil || hw.w != w {
		return fmt.Errorf("online: release of window %d, which is not held", w)
	}
	err := o.ctl.load(hw.hold, o.l.windowTable(o.l.new, o.l.newOff, hw.s))
	if err == nil {
		err = o.ctl.resume(hw.hold, dm.NoFlush|dm.SkipLockfs)
	}
	if err != nil {
		// The window is committed on disk but cannot be served with the
		// new mapping: failing I/O is the only safe thing left.
		o.failWindow(hw, err)
		return fmt.Errorf("online: release window %d: %w", w, err)
	}
	o.stats = append(o.stats, WindowStat{Window: w, Swap: hw.swap, Held: time.Since(hw.heldAt)})
	o.held = nil
	if o.conv.empty() {
		o.conv = hw.s
	} else {
		o.conv = span{min(o.conv.lo, hw.s.lo), max(o.conv.hi, hw.s.hi)}
	}
	return nil
}

// Abort implements engine.Holder: the held window's device gets an error
// table and is resumed, so queued and later I/O to it fails rather than
// be served with a key that may be wrong for what is on disk.
func (o *Online) Abort(w uint64, start, length int64, cause error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.aborted = fmt.Errorf("window %d: %w", w, cause)
	hw := o.held
	if errors.Is(cause, errInterfered) {
		// Hold refused before touching anything: Name is as the neighbour
		// left it, and stays so.
		o.logf("cryptshift: STOPPED before window %d: %v", w, cause)
		return
	}
	if hw == nil || hw.w != w {
		// Hold failed before Name routed the window elsewhere: it is still
		// served with the old mapping, and the engine wrote nothing to it.
		o.logf("cryptshift: ABORT of window %d (%v): the window was not held; %s serves it as before", w, cause, o.name)
		o.resumeName()
		return
	}
	o.failWindow(hw, cause)
}

// failWindow switches the held window to an error target; called with mu.
func (o *Online) failWindow(hw *heldWindow, cause error) {
	o.logf("cryptshift: ABORT: window %d (sectors %d-%d of %s) now FAILS all I/O: %v", hw.w, hw.s.lo, hw.s.hi, o.name, cause)
	o.logf("cryptshift: the data is safe on disk; run `cryptshift recover` to finish the window, then resume the conversion")
	err := o.ctl.load(hw.hold, []dm.Target{{Start: 0, Length: hw.s.hi - hw.s.lo, Type: "error"}})
	if err == nil {
		err = o.ctl.resume(hw.hold, dm.NoFlush|dm.SkipLockfs)
	}
	if err != nil {
		o.logf("cryptshift: could not switch %s to an error table (%v): I/O to the window stays queued; do not resume it by hand", hw.hold, err)
	}
	o.held = nil
	o.resumeName()
}

// resumeName resumes Name if a failed swap left it suspended.
func (o *Online) resumeName() {
	if inf, err := o.ctl.info(o.name); err == nil && inf.Suspended {
		if err := o.ctl.resume(o.name, dm.NoFlush|dm.SkipLockfs); err != nil {
			o.logf("cryptshift: %s is left suspended: %v", o.name, err)
		}
	}
}

// Finish serves the whole device with the new mapping as a single target
// and removes the hold devices. Every window must have been released.
func (o *Online) Finish() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conv != (span{0, o.l.size}) {
		return fmt.Errorf("online: only sectors [%d, %d) of %d are converted", o.conv.lo, o.conv.hi, o.l.size)
	}
	return o.settle()
}

// Settle folds the last released window into Name's table and removes the
// hold devices, so that a paused conversion leaves Name with exactly the
// table recovery would build for the recorded progress (new over the
// converted part, old over the rest) and nothing else.
func (o *Online) Settle() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.settle()
}

func (o *Online) settle() error {
	if o.aborted != nil {
		return fmt.Errorf("online: cannot settle after an abort: %w", o.aborted)
	}
	if o.held != nil {
		return fmt.Errorf("online: window %d is still held", o.held.w)
	}
	if err := o.checkNeighbours(); err != nil {
		return err
	}
	if err := o.ctl.load(o.name, o.l.table(o.conv, span{}, "")); err != nil {
		return err
	}
	if err := o.ctl.suspend(o.name, dm.NoFlush|dm.SkipLockfs); err != nil {
		return err
	}
	if err := o.ctl.resume(o.name, dm.NoFlush|dm.SkipLockfs); err != nil {
		return err
	}
	for _, h := range o.holds {
		inf, err := o.ctl.info(h)
		if err != nil {
			return err
		}
		if inf.Exists {
			if err := o.ctl.remove(h); err != nil {
				return err
			}
		}
	}
	return nil
}

// ActivateRecovered creates name serving the data area of a recovered
// conversion: Composite's table over device, which may be a path or
// "major:minor", with options (format-neutral crypt options) on every
// crypt target.
func ActivateRecovered(name string, h *header.Header, keys Keys, device string, options []string) error {
	return activateRecovered(name, "", h, keys, device, options)
}

// activateRecovered is ActivateRecovered with the device-mapper UUID
// given ("": RecoveredUUID's).
func activateRecovered(name, uuid string, h *header.Header, keys Keys, device string, options []string) error {
	if uuid == "" {
		uuid = RecoveredUUID(h, name)
	}
	if strings.HasPrefix(device, "/") {
		d, err := dm.DevNo(device)
		if err != nil {
			return err
		}
		device = d
	}
	table, err := Composite(h, keys, device, options)
	if err != nil {
		return err
	}
	return sysControl{}.create(name, uuid, table)
}
