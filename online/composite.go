package online

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// Keys are the two keys of a conversion; empty for a plaintext side.
type Keys struct {
	Old, New []byte
}

// layout is a conversion's geometry in sectors, and its two mappings.
type layout struct {
	dev            string // backing device, "major:minor" or a path
	oldOff, newOff uint64 // sectors on dev where the data area starts
	size           uint64 // data area, sectors
	old, new       sectorcipher.Mapping
	extra          []string // format-neutral crypt options for every crypt target
}

// span is a half-open range of data-area sectors.
type span struct{ lo, hi uint64 }

func (s span) empty() bool { return s.lo >= s.hi }

// table builds the table of the served device: conv with the new mapping,
// win (if not empty) as dm-linear onto holdDev, the rest with the old one.
// conv must be a prefix or a suffix of the data area and win adjacent to it.
func (l *layout) table(conv, win span, holdDev string) []dm.Target {
	type part struct {
		s    span
		kind int // 0 old, 1 new, 2 hold
	}
	var parts []part
	add := func(s span, kind int) {
		if !s.empty() {
			parts = append(parts, part{s, kind})
		}
	}
	// Walk [0, size) cutting at the boundaries of conv and win.
	pos := uint64(0)
	for pos < l.size {
		switch {
		case !conv.empty() && pos == conv.lo:
			add(conv, 1)
			pos = conv.hi
		case !win.empty() && pos == win.lo:
			add(win, 2)
			pos = win.hi
		default:
			end := l.size
			if !conv.empty() && conv.lo > pos && conv.lo < end {
				end = conv.lo
			}
			if !win.empty() && win.lo > pos && win.lo < end {
				end = win.lo
			}
			add(span{pos, end}, 0)
			pos = end
		}
	}
	out := make([]dm.Target, 0, len(parts))
	for _, p := range parts {
		n := p.s.hi - p.s.lo
		switch p.kind {
		case 0:
			out = append(out, dm.MappingTarget(l.old, l.dev, l.oldOff, p.s.lo, n, l.extra))
		case 1:
			out = append(out, dm.MappingTarget(l.new, l.dev, l.newOff, p.s.lo, n, l.extra))
		default:
			out = append(out, dm.Target{Start: p.s.lo, Length: n, Type: "linear", Params: dm.Linear{Device: holdDev, Offset: 0}.Params()})
		}
	}
	return out
}

// windowTable is the table of a hold device serving win with m from base.
func (l *layout) windowTable(m sectorcipher.Mapping, base uint64, win span) []dm.Target {
	t := dm.MappingTarget(m, l.dev, base, win.lo, win.hi-win.lo, l.extra)
	t.Start = 0
	return []dm.Target{t}
}

// classify tells whether target t serves its range with the old (0) or the
// new (1) mapping of l, exactly as a table built by l would; -1 otherwise.
func (l *layout) classify(t dm.Target) (int, error) {
	seg, err := dm.ParseSegment(t)
	if err != nil {
		return -1, err
	}
	if seg.Device != l.dev {
		return -1, nil
	}
	for kind, side := range []struct {
		m   sectorcipher.Mapping
		off uint64
	}{{l.old, l.oldOff}, {l.new, l.newOff}} {
		want := side.m
		want.IVOffset += t.Start
		if seg.Offset == side.off+t.Start && seg.Mapping.Equivalent(want) {
			return kind, nil
		}
	}
	return -1, nil
}

// converted reads which part of a served table uses the new mapping. Every
// target must be one l would build (old or new at the right place), and the
// new part a prefix or suffix: otherwise the table and the conversion
// disagree, and going on would serve or write data under the wrong key.
func (l *layout) converted(ts []dm.Target) (span, error) {
	if dm.Size(ts) != l.size {
		return span{}, fmt.Errorf("online: the device has %d sectors but the data area has %d", dm.Size(ts), l.size)
	}
	var conv span
	first := true
	for _, t := range ts {
		k, err := l.classify(t)
		if err != nil {
			return span{}, err
		}
		switch k {
		case -1:
			return span{}, fmt.Errorf("online: target at sector %d (%s) serves neither the old nor the new mapping of this conversion", t.Start, t.Type)
		case 1:
			if !first && conv.hi != t.Start {
				return span{}, errors.New("online: the device serves the new mapping in more than one range")
			}
			if first {
				conv = span{t.Start, t.Start + t.Length}
				first = false
			} else {
				conv.hi = t.Start + t.Length
			}
		}
	}
	if !conv.empty() && conv.lo != 0 && conv.hi != l.size {
		return span{}, errors.New("online: the device serves the new mapping in the middle of the data area")
	}
	return conv, nil
}

// convertedAt is the part of the data area, in sectors, that h's done
// windows cover.
func convertedAt(h *header.Header) span {
	lo, hi := h.Converted(h.Done)
	return span{lo / 512, hi / 512}
}

func mappingFromHeader(which string, m header.Mapping, key []byte, kcv [32]byte, uuid [16]byte) (sectorcipher.Mapping, error) {
	mm, err := m.WithKey(key)
	if err != nil {
		return sectorcipher.Mapping{}, fmt.Errorf("online: %s: %w", which, err)
	}
	if header.KCV(key, uuid) != kcv {
		return sectorcipher.Mapping{}, fmt.Errorf("online: the %s key is not the one this conversion was started with", which)
	}
	if err := mm.Validate(); err != nil {
		return sectorcipher.Mapping{}, fmt.Errorf("online: recorded %s mapping: %w", which, err)
	}
	return mm, nil
}

func layoutFromHeader(h *header.Header, keys Keys, device string) (*layout, error) {
	if h.DataSize%512 != 0 || h.OldOffset%512 != 0 || h.NewOffset%512 != 0 || h.Window%512 != 0 {
		return nil, errors.New("online: recorded layout is not in whole sectors")
	}
	om, err := mappingFromHeader("old", h.Old, keys.Old, h.OldKCV, h.UUID)
	if err != nil {
		return nil, err
	}
	nm, err := mappingFromHeader("new", h.New, keys.New, h.NewKCV, h.UUID)
	if err != nil {
		return nil, err
	}
	return &layout{dev: device, oldOff: h.OldOffset / 512, newOff: h.NewOffset / 512,
		size: h.DataSize / 512, old: om, new: nm}, nil
}

// Composite returns the table that serves the data area of a conversion at
// the progress recorded in h: new mapping over the done windows, old over
// the rest. h must come from recovery (authenticated, no window in flight),
// and the keys must match the recorded key check values. device is the
// backing device as a table names it ("major:minor" or a path). options
// are the format-neutral crypt options (allow_discards, ...) every crypt
// target gets: the header does not record them, since they are the
// operator's choice for the live device, not part of what is on disk.
func Composite(h *header.Header, keys Keys, device string, options []string) ([]dm.Target, error) {
	if h.State == header.StateInProgress {
		return nil, errors.New("online: the conversion is marked in progress: a window may be in flight; run recover first")
	}
	if err := dm.CheckNeutralOptions(options); err != nil {
		return nil, fmt.Errorf("online: %w", err)
	}
	l, err := layoutFromHeader(h, keys, device)
	if err != nil {
		return nil, err
	}
	l.extra = options
	return l.table(convertedAt(h), span{}, ""), nil
}

// RecoveredUUID is the device-mapper UUID ActivateRecovered gives name.
func RecoveredUUID(h *header.Header, name string) string {
	return "CRYPTSHIFT-" + hex.EncodeToString(h.UUID[:]) + "-" + name
}
