// Package fsck audits a recorded conversion: both header copies, the keys,
// the layout, the log, and optionally every converted window against the
// plaintext digest recorded when it was converted. It is what `cryptshift
// verify` runs; with Repair it also rewrites a damaged header copy.
package fsck

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/wal"
)

// Severity of a finding. Errors and warnings make a report unclean.
const (
	Error   = "error"
	Warning = "warning"
	Info    = "info"
)

// Finding is one observation.
type Finding struct {
	Severity string
	What     string
}

// Options choose how deep the audit goes.
type Options struct {
	// Data reads every converted window back and compares it with its
	// recorded digest.
	Data bool
	// Repair rewrites a header copy that is unreadable, fails
	// authentication or holds an older state, from the authenticated copy
	// (engine.Opened.RepairHeader: that copy's slot only, then a flush).
	// Nothing is written when both copies hold the current header, and
	// nothing when neither is authentic (Audit then fails before it looks).
	Repair bool
	// Live, when set, judges the device-mapper device serving the data
	// against the authenticated header (online.LiveAudit: its live table
	// must be the one the recorded progress calls for). fsck builds no
	// tables itself; it adds the finding to the report.
	Live func(h *header.Header, oldKey, newKey []byte) Finding
	// Ciphers builds the transforms Data needs (engine.OpenRecordedWith):
	// the kernel's for a spec without a userspace cipher. Nil: userspace
	// only, and Data of such a spec fails with errclass.NoCrypto.
	Ciphers engine.CipherMaker
}

// Report is the audit's outcome.
type Report struct {
	Findings   []Finding
	Header     *header.Header
	Checked    uint64 // windows compared with their digest
	Changed    []uint64
	Unrecorded []uint64
	Repaired   []int // header copies Repair rewrote (at most one)
}

// Clean reports whether the audit found nothing worse than information.
func (r *Report) Clean() bool {
	for _, f := range r.Findings {
		if f.Severity != Info {
			return false
		}
	}
	return true
}

func (r *Report) String() string {
	var b strings.Builder
	for _, f := range r.Findings {
		fmt.Fprintf(&b, "%-7s %s\n", f.Severity+":", f.What)
	}
	return b.String()
}

func (r *Report) add(sev, format string, a ...any) {
	r.Findings = append(r.Findings, Finding{sev, fmt.Sprintf(format, a...)})
}

// Audit checks the conversion recorded on t. Problems with the recorded
// state are findings; an error is returned only when the audit itself
// cannot proceed (no header, wrong keys, I/O failure), classified with the
// engine's error classes. It looks at the header copies, the layout, the
// log, the live table (Live) and the converted data (Data), in that
// order.
func Audit(ctx context.Context, t engine.Target, oldKey, newKey []byte, o Options) (*Report, error) {
	r := &Report{}
	op, err := engine.OpenRecordedWith(t, oldKey, newKey, o.Ciphers)
	if err != nil {
		return nil, err
	}
	h := op.Header()
	r.Header = h
	r.add(Info, "conversion %x: %s -> %s, resilience %s, %d of %d windows of %d bytes, %s",
		h.UUID[:4], h.Old.Cipher, h.New.Cipher, h.Mode, h.Done, h.Windows(), h.Window, h.State)
	r.add(Info, "keys match their key check values; header authenticated")
	if err := auditCopies(r, op, o.Repair); err != nil {
		return r, err
	}
	auditLayout(r, t, h)
	done, err := auditLog(r, op, h)
	if err != nil {
		return r, err
	}
	if o.Live != nil {
		r.Findings = append(r.Findings, o.Live(h, oldKey, newKey))
	}
	if o.Data {
		if err := auditData(ctx, r, op, done); err != nil {
			return r, err
		}
	}
	return r, nil
}

// auditCopies reports header copies that are unreadable, altered or stale
// and, with repair, rewrites the one that is and drops those findings.
func auditCopies(r *Report, op *engine.Opened, repair bool) error {
	h := op.Header()
	var copyFindings []int // indexes in r.Findings, dropped once repaired
	for i, c := range op.Copies() {
		switch {
		case c.Err != nil:
			copyFindings = append(copyFindings, len(r.Findings))
			r.add(Warning, "header copy %d is unreadable (%v); the other copy is valid: `cryptshift verify --repair` rewrites it", i, c.Err)
		case !op.CopyAuthentic(i):
			copyFindings = append(copyFindings, len(r.Findings))
			r.add(Error, "header copy %d (seq %d) fails authentication: it was altered; the other copy is valid: `cryptshift verify --repair` rewrites it", i, c.Header.Seq)
		case !sameApartFromSeq(c.Header, h):
			copyFindings = append(copyFindings, len(r.Findings))
			r.add(Info, "header copy %d holds an older state (seq %d, newest %d): a commit was interrupted; the next commit (or `verify --repair`) rewrites it", i, c.Header.Seq, h.Seq)
		}
	}
	if !repair || len(copyFindings) == 0 {
		return nil
	}
	slot, err := op.RepairHeader()
	if err != nil {
		return err
	}
	if slot >= 0 {
		r.Repaired = append(r.Repaired, slot)
		r.Findings = dropIndexes(r.Findings, copyFindings)
		r.add(Info, "repaired: rewrote header copy %d from the authenticated copy %d (now seq %d), and flushed", slot, 1-slot, op.Header().Seq)
	}
	return nil
}

// auditLayout compares the recorded layout with the device it is on.
func auditLayout(r *Report, t engine.Target, h *header.Header) {
	if uint64(t.Data.Size()) != h.DeviceSize {
		r.add(Error, "device is %d bytes, the conversion was recorded on %d bytes", t.Data.Size(), h.DeviceSize)
	}
	if t.MetaOnData {
		for _, off := range []uint64{h.OldOffset, h.NewOffset} {
			if off+h.DataSize > h.MetaOffset {
				r.add(Error, "data [%d, %d) overlaps the metadata area at %d", off, off+h.DataSize, h.MetaOffset)
			}
		}
	}
}

// auditLog checks the records after the checkpoint and says what a stopped
// conversion left in flight. It returns the progress the log records.
func auditLog(r *Report, op *engine.Opened, h *header.Header) (uint64, error) {
	recs, err := op.Records()
	if err != nil {
		return 0, err
	}
	done := h.Done
	for _, rec := range recs {
		if rec.Done < done {
			r.add(Error, "log record %d goes back from %d to %d windows", rec.Seq, done, rec.Done)
		}
		done = rec.Done
	}
	r.add(Info, "log: %d record(s) after the last checkpoint", len(recs))
	if h.State == header.StateInProgress {
		if h.WindowOpen(done, wal.EndsWithWindowCopy(recs)) {
			r.add(Warning, "window %d was being converted when the process stopped: run `cryptshift recover`", h.WindowAt(done))
		} else {
			r.add(Warning, "the conversion stopped without recording a pause: run `cryptshift recover`, then convert to resume")
		}
	}
	return done, nil
}

// auditData compares each of the first done steps' windows with its
// recorded digest.
func auditData(ctx context.Context, r *Report, op *engine.Opened, done uint64) error {
	h := op.Header()
	for step := uint64(0); step < done; step++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("audit interrupted: %w: %w", errclass.Paused, err)
		}
		w := h.WindowAt(step)
		st, err := op.CheckWindow(w)
		if err != nil {
			return err
		}
		r.Checked++
		switch st {
		case engine.DigestMismatch:
			r.Changed = append(r.Changed, w)
		case engine.DigestUnrecorded:
			r.Unrecorded = append(r.Unrecorded, w)
		}
	}
	if len(r.Changed) > 0 {
		r.add(Warning, "%d of %d converted windows differ from what was converted (%s): expected if the device was written to since; otherwise data was damaged", len(r.Changed), r.Checked, windowList(r.Changed))
	}
	if len(r.Unrecorded) > 0 {
		r.add(Warning, "%d converted windows have no recorded digest (%s)", len(r.Unrecorded), windowList(r.Unrecorded))
	}
	if len(r.Changed) == 0 && len(r.Unrecorded) == 0 {
		r.add(Info, "all %d converted windows decrypt under the new key to exactly the data converted", r.Checked)
	}
	return nil
}

func sameApartFromSeq(a, b *header.Header) bool {
	x, y := *a, *b
	x.Seq, y.Seq = 0, 0
	return x == y
}

func dropIndexes(fs []Finding, drop []int) []Finding {
	out := fs[:0]
	for i, f := range fs {
		if !slices.Contains(drop, i) {
			out = append(out, f)
		}
	}
	return out
}

func windowList(ws []uint64) string {
	var parts []string
	for i, w := range ws {
		if i == 10 {
			parts = append(parts, fmt.Sprintf("and %d more", len(ws)-10))
			break
		}
		parts = append(parts, fmt.Sprint(w))
	}
	return "windows " + strings.Join(parts, ", ")
}
