package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/wal"
)

// RecoverOptions tune what recovery may do.
type RecoverOptions struct {
	// AcceptDamage lets recovery finish a window in which it found sectors
	// it cannot restore: they are left as they are (and reported), so that
	// the conversion can go on. Without it such a window stays open.
	AcceptDamage bool
}

// RecoverResult says what recovery found and did.
type RecoverResult struct {
	Header  *header.Header
	Action  string // human-readable: what was rolled forward, or "nothing to do"
	Rolled  bool   // a window was finished
	Window  uint64 // the window that was open, when Rolled or damaged
	Damaged *DamageError
	// Repaired is the header copy recovery rewrote from the authenticated
	// one (damaged, altered or stale, and no checkpoint left to rewrite
	// it), or -1.
	Repaired int
}

// Recover finishes or rolls back whatever a crash interrupted and leaves
// the conversion paused (or complete). It is idempotent: a second run, or a
// run after a crash inside the first, finds a consistent state.
func Recover(ctx context.Context, t Target, oldKey, newKey []byte, ro RecoverOptions, opts Options) (*RecoverResult, error) {
	c, err := openExisting(t, oldKey, newKey, opts)
	if err != nil {
		return nil, err
	}
	return c.recover(ro)
}

// openExisting authenticates the recorded conversion with the given keys.
func openExisting(t Target, oldKey, newKey []byte, opts Options) (*conv, error) {
	store, err := readHeader(t)
	if err != nil {
		return nil, err
	}
	peek, err := store.Current(nil)
	if err != nil {
		if firstCommitTorn(store) {
			err = header.ErrNoHeader
		}
		return nil, headerErr(err)
	}
	h, macKey, err := authenticate(store, peek, oldKey, newKey)
	if err != nil {
		return nil, err
	}
	return newConv(t, store, h, macKey, oldKey, newKey, opts)
}

func readHeader(t Target) (*header.Store, error) {
	if t.Data == nil || t.Meta == nil {
		return nil, fmt.Errorf("%w: no device", errclass.Usage)
	}
	store, err := header.ReadStore(t.Meta)
	if err != nil {
		return nil, errclass.IOf("read header", err)
	}
	return store, nil
}

func headerErr(err error) error {
	if errors.Is(err, header.ErrNoHeader) {
		return fmt.Errorf("%w: no cryptshift header found (no conversion was started on this device, or --metadata is missing)", errclass.Header)
	}
	return fmt.Errorf("%w: %w", errclass.Header, err)
}

func (c *conv) recover(ro RecoverOptions) (*RecoverResult, error) {
	res := &RecoverResult{Header: c.h, Action: "nothing to do: no window was in flight", Repaired: -1}
	recs, err := c.log.Scan()
	if err != nil {
		return nil, errclass.IOf("scan log", err)
	}
	if c.h.State != header.StateInProgress {
		if len(recs) > 0 {
			return nil, fmt.Errorf("%w: log records follow a %s header", errclass.Header, c.h.State)
		}
		if err := c.checkProgress(c.h.Done, false); err != nil {
			return nil, err
		}
		if err := c.acceptChanged(ro, res); err != nil {
			return res, err
		}
		// A paused or complete conversion writes no checkpoint here, so a
		// copy torn during the last one's second commit would stay torn:
		// heal it from the authenticated copy (DESIGN "Recovery").
		slot, err := c.repairHeader()
		if err != nil {
			return nil, err
		}
		if slot >= 0 {
			res.Repaired = slot
			res.Header = c.h
			res.Action = fmt.Sprintf("%s; header copy %d rewritten from the authenticated copy", res.Action, slot)
		}
		return res, nil
	}
	total := c.h.Windows()
	done := c.h.Done
	var last *wal.Record
	for i := range recs {
		r := &recs[i]
		// Records are authentic (MAC), so an inconsistency here is a bug or
		// a mix of metadata from two devices, never something to act on.
		if r.Done < done || r.Done > total || (r.Type != wal.TypeProgress && r.Done == total) {
			return nil, fmt.Errorf("%w: log record %d claims progress %d after %d of %d windows", errclass.Header, r.Seq, r.Done, done, total)
		}
		if wrongType(c.h.Mode, r.Type) {
			return nil, fmt.Errorf("%w: %s record in a %s conversion", errclass.Header, r.Type, c.h.Mode)
		}
		done = r.Done
		last = r
	}
	// last is only read when it is a window copy, which WindowOpen checks.
	open := c.h.WindowOpen(done, wal.EndsWithWindowCopy(recs))
	// The window in flight is excluded from the check of the first
	// unconverted window, except with shift, whose source stays intact.
	if err := c.checkProgress(done, open && c.h.Mode != header.ModeShift); err != nil {
		return nil, err
	}
	if open {
		w := c.h.WindowAt(done)
		res.Window = w
		switch c.h.Mode {
		case header.ModeJournal:
			if err := c.redoJournal(*last); err != nil {
				return nil, err
			}
			res.Rolled = true
			done++
		case header.ModeChecksum:
			dmg, err := c.redoChecksum(*last, ro.AcceptDamage)
			if err != nil {
				return nil, err
			}
			if dmg != nil {
				res.Damaged = dmg
				if !ro.AcceptDamage {
					return res, dmg
				}
			}
			res.Rolled = true
			done++
		case header.ModeShift:
			// The source of window done is intact (invariant S2): redoing it
			// is safe whether or not it had started.
			if err := c.protect(done, nil); err != nil {
				return nil, err
			}
			res.Rolled = true
			done++
		case header.ModeNone:
			start, n := c.h.WindowRange(w)
			dmg := &DamageError{Window: w, Reason: "resilience none keeps no copy: this window may be partly converted",
				Sectors: []SectorRange{{uint64(start) / 512, uint64(start+n) / 512}}}
			res.Damaged = dmg
			if !ro.AcceptDamage {
				return res, dmg
			}
			// Accepted: the window stays as it is and counts as done, so
			// that no later run converts it a second time. Its digest
			// entry is made to match first, so the identity check
			// accepts it.
			if err := c.recordAsIs(w, FlushAcceptDamage); err != nil {
				return nil, err
			}
			done++
		}
	}
	state := header.StatePaused
	if done == total {
		state = header.StateComplete
	}
	if err := c.checkpoint(done, state); err != nil {
		return nil, err
	}
	res.Header = c.h
	if err := c.acceptChanged(ro, res); err != nil {
		return nil, err
	}
	switch {
	case res.Rolled:
		res.Action = fmt.Sprintf("window %d rolled forward; %d of %d windows converted; conversion %s", res.Window, done, total, state)
	case res.Damaged != nil:
		res.Action = fmt.Sprintf("window %d accepted as damaged; %d of %d windows converted; conversion %s", res.Window, done, total, state)
	default:
		res.Action = fmt.Sprintf("no window was in flight; %d of %d windows converted; conversion %s", done, total, state)
	}
	return res, nil
}

// acceptChanged, with AcceptDamage, accepts the last converted window as
// it is when it no longer matches its digest entry (changed while paused,
// or its entry damaged), which the identity check on resume would refuse
// for good otherwise.
func (c *conv) acceptChanged(ro RecoverOptions, res *RecoverResult) error {
	if !ro.AcceptDamage || c.opts.Holder != nil || res.Damaged != nil || c.h.Done == 0 {
		return nil
	}
	if c.checkIdentity() == nil {
		return nil
	}
	w := c.h.WindowAt(c.h.Done - 1)
	if err := c.recordAsIs(w, "accept-identity"); err != nil {
		return err
	}
	start, n := c.h.WindowRange(w)
	res.Window = w
	res.Damaged = &DamageError{Window: w, Reason: "the window does not hold what the conversion wrote there; accepted as it is",
		Sectors: []SectorRange{{uint64(start) / 512, uint64(start+n) / 512}}}
	res.Action = fmt.Sprintf("window %d (%s) accepted as it is; %d of %d windows converted; conversion %s", w, c.windowBytes(w), c.h.Done, c.h.Windows(), c.h.State)
	return nil
}

func wrongType(m header.Mode, t wal.Type) bool {
	switch t {
	case wal.TypeJournal:
		return m != header.ModeJournal
	case wal.TypeChecksum:
		return m != header.ModeChecksum
	}
	return false
}

// redoJournal rewrites the open window from its logged old ciphertext,
// whatever state the window itself is in.
func (c *conv) redoJournal(r wal.Record) error {
	w := c.h.WindowAt(r.Done)
	start, n := c.h.WindowRange(w)
	if int64(r.PayloadLen) != n {
		return fmt.Errorf("%w: journal record %d holds %d bytes for a %d-byte window", errclass.Header, r.Seq, r.PayloadLen, n)
	}
	backup, err := c.log.Payload(r)
	if err != nil {
		return errclass.IOf("read journal", err)
	}
	d := c.transform(backup, w, start, r.Done, nil, 0)
	if err := c.writeWindow(w, start, backup, d); err != nil {
		return err
	}
	return c.flushData(FlushRecoverJournalData)
}

// redoChecksum sorts each unit of the open window into old, new or
// neither, converts the old ones, and reports the others.
func (c *conv) redoChecksum(r wal.Record, accept bool) (*DamageError, error) {
	w := c.h.WindowAt(r.Done)
	start, n := c.h.WindowRange(w)
	u := c.unit()
	units := n / u
	if int64(r.PayloadLen) != units*hashEntry {
		return nil, fmt.Errorf("%w: checksum record %d holds %d bytes for %d units", errclass.Header, r.Seq, r.PayloadLen, units)
	}
	hashes, err := c.log.Payload(r)
	if err != nil {
		return nil, errclass.IOf("read checksum record", err)
	}
	buf := make([]byte, n)
	if _, err := c.t.Data.ReadAt(buf, int64(c.h.NewOffset)+start); err != nil {
		return nil, errclass.IOf(fmt.Sprintf("read window %d", w), err)
	}
	var dmg *DamageError
	changed := false
	for i := int64(0); i < units; i++ {
		p := buf[i*u : (i+1)*u]
		e := hashes[i*hashEntry : (i+1)*hashEntry]
		sOld := c.sum.Sum(header.SumUnitOld, r.Done, uint32(i), p)
		sNew := c.sum.Sum(header.SumUnitNew, r.Done, uint32(i), p)
		switch {
		case bytes.Equal(sNew[:], e[16:32]):
			// already new
		case bytes.Equal(sOld[:], e[0:16]):
			sector := uint64(start+i*u) / 512
			c.oldC.Decrypt(p, sector)
			c.newC.Encrypt(p, sector)
			changed = true
		default:
			if dmg == nil {
				dmg = &DamageError{Window: w, Reason: "sectors hold neither the old nor the new ciphertext (torn write)"}
			}
			s0 := uint64(start+i*u) / 512
			if k := len(dmg.Sectors); k > 0 && dmg.Sectors[k-1].End == s0 {
				dmg.Sectors[k-1].End = s0 + uint64(u)/512
			} else {
				dmg.Sectors = append(dmg.Sectors, SectorRange{s0, s0 + uint64(u)/512})
			}
		}
	}
	if dmg != nil && !accept {
		return dmg, nil
	}
	d := c.plainDigest(buf, w, start, c.newC)
	if err := c.cipherErr(); err != nil {
		return nil, err
	}
	if changed {
		if _, err := c.t.Data.WriteAt(buf, int64(c.h.NewOffset)+start); err != nil {
			return nil, errclass.IOf(fmt.Sprintf("write window %d", w), err)
		}
	}
	e := header.DigestEntry(c.macKey, w, d)
	if _, err := c.t.Meta.WriteAt(e[:], c.digestOffset(w)); err != nil {
		return nil, errclass.IOf("write digest", err)
	}
	return dmg, c.flushData(FlushRecoverChecksumData)
}
