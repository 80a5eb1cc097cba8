package engine

import (
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// openComplete handles a run on a device whose recorded conversion is
// complete. The key check values tell the cases apart: the finished
// command again (nothing to do, but only with the recorded options and
// on the device it was recorded for), or the next conversion, starting
// from the finished one's result: its old key is the finished new key, and
// omitted old-side flags mean the finished new mapping, just as they mean
// the defaults on a fresh device.
func openComplete(t Target, store *header.Store, peek *header.Header, cfg Config, opts Options) (*conv, bool, error) {
	oldKCV, newKCV := header.KCV(cfg.Old.Key, peek.UUID), header.KCV(cfg.New.Key, peek.UUID)
	rerun := oldKCV == peek.OldKCV && newKCV == peek.NewKCV
	if rerun && peek.OldKCV == peek.NewKCV {
		// The same key on both sides: the flags decide whether this is
		// the finished command or the next one from its result.
		rerun = conflicts(peek, cfg) == nil || !sideFits(cfg.Old, peek.New)
	}
	if rerun {
		h, macKey, err := authenticate(store, peek, cfg.Old.Key, cfg.New.Key)
		if err != nil {
			return nil, false, err
		}
		if err := conflicts(h, cfg); err != nil {
			return nil, false, fmt.Errorf("%w (the conversion is complete; to convert again, give its new key as --old-key-file)", err)
		}
		if uint64(t.Data.Size()) != h.DeviceSize {
			return nil, false, fmt.Errorf("%w: the finished conversion in this metadata was of a device of %d bytes, this one has %d: wrong device or metadata", errclass.Device, h.DeviceSize, t.Data.Size())
		}
		c, err := newConv(t, store, h, macKey, cfg.Old.Key, cfg.New.Key, opts)
		if err != nil {
			return nil, false, err
		}
		if err := c.checkBound(); err != nil {
			return nil, false, err
		}
		return c, true, errAlreadyComplete
	}
	if oldKCV != peek.NewKCV {
		return nil, false, fmt.Errorf("%w: the conversion recorded on this device is complete: the data is now %s under that conversion's new key, and --old-key-file is not that key", errclass.WrongKey, peek.New.Cipher)
	}
	if newKCV == peek.NewKCV && sideFits(cfg.Old, peek.New) && sideFits(cfg.New, peek.New) {
		// Both sides are the finished new mapping (online, NAME's table
		// supplies the old side, and after the end it serves the new):
		// this is the finished conversion asked for again.
		return &conv{h: peek}, true, errAlreadyComplete
	}
	next, err := fromFinished(cfg, peek)
	if err != nil {
		return nil, false, err
	}
	c, err := create(t, store, next, opts, false)
	return c, false, err
}

// fromFinished fills the omitted old-side flags of cfg, the data offset
// and the data size from the finished conversion's new mapping and range,
// and refuses mapping flags that contradict it.
func fromFinished(cfg Config, h *header.Header) (Config, error) {
	var diffs []string
	s, m := &cfg.Old, h.New
	if s.Cipher == "" {
		s.Cipher = m.Cipher
	} else if spec, err := sectorcipher.ParseKernelSpec(s.Cipher); err != nil || spec.String() != m.Cipher {
		diffs = append(diffs, fmt.Sprintf("--old-cipher %s (the data is %s)", s.Cipher, m.Cipher))
	}
	if s.SectorSize == 0 {
		s.SectorSize = int(m.SectorSize)
	} else if uint32(s.SectorSize) != m.SectorSize {
		diffs = append(diffs, fmt.Sprintf("--old-sector-size %d (the data has %d-byte sectors)", s.SectorSize, m.SectorSize))
	}
	if s.IVOffset == nil {
		v := m.IVOffset
		s.IVOffset = &v
	} else if *s.IVOffset != m.IVOffset {
		diffs = append(diffs, fmt.Sprintf("--old-iv-offset %d (recorded %d)", *s.IVOffset, m.IVOffset))
	}
	if s.IVLargeSectors == nil {
		v := m.IVLargeSectors
		s.IVLargeSectors = &v
	} else if *s.IVLargeSectors != m.IVLargeSectors {
		diffs = append(diffs, fmt.Sprintf("--old-iv-large-sectors %v (recorded %v)", *s.IVLargeSectors, m.IVLargeSectors))
	}
	if cfg.DataOffset == nil {
		v := int64(h.NewOffset)
		cfg.DataOffset = &v
	} else if uint64(*cfg.DataOffset) != h.NewOffset {
		diffs = append(diffs, fmt.Sprintf("--data-offset %d (the finished conversion left the data at %d)", *cfg.DataOffset, h.NewOffset))
	}
	if cfg.DataSize == 0 {
		// The finished conversion's range is what is under its new
		// mapping; beyond it nothing is.
		cfg.DataSize = int64(h.DataSize)
	}
	if len(diffs) > 0 {
		return cfg, fmt.Errorf("%w: the finished conversion recorded on this device left the data as its new mapping, which these flags contradict: %s; leave them out", errclass.Conflict, joinComma(diffs))
	}
	return cfg, nil
}

// sideFits reports whether the old-side flags given agree with m.
func sideFits(s Side, m header.Mapping) bool {
	if s.Cipher != "" {
		if spec, err := sectorcipher.ParseKernelSpec(s.Cipher); err != nil || spec.String() != m.Cipher {
			return false
		}
	}
	return (s.SectorSize == 0 || uint32(s.SectorSize) == m.SectorSize) &&
		(s.IVOffset == nil || *s.IVOffset == m.IVOffset) &&
		(s.IVLargeSectors == nil || *s.IVLargeSectors == m.IVLargeSectors)
}

// checkBound refuses a finished record for a device it was not written
// on: the first and last windows must hold what the conversion wrote
// there (their digest entries), or, when the filesystem has been used
// since, at least decrypt under the new mapping and not the old.
func (c *conv) checkBound() error {
	if c.opts.Holder != nil {
		return nil // online, NAME's table identifies the device
	}
	total := c.h.Windows()
	for _, w := range []uint64{0, total - 1} {
		ok, err := c.digestMatches(w)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		og, _, np, err := c.windowEvidence(w)
		if err != nil {
			return err
		}
		if og >= minGain || np < minGain {
			return fmt.Errorf("%w: the finished conversion in this metadata is not of this device: window %d (%s) neither holds what it wrote nor decrypts under its new key", errclass.Device, w, c.windowBytes(w))
		}
	}
	return nil
}

// digestMatches reports whether window w holds, under the new mapping, the
// data its digest entry records (false also for no entry).
func (c *conv) digestMatches(w uint64) (bool, error) {
	entry, err := c.readDigest(w)
	if err != nil {
		return false, err
	}
	if entry == ([header.DigestEntrySize]byte{}) {
		return false, nil
	}
	start, n := c.h.WindowRange(w)
	buf := make([]byte, n)
	if _, err := c.t.Data.ReadAt(buf, int64(c.h.NewOffset)+start); err != nil {
		return false, errclass.IOf(fmt.Sprintf("read window %d", w), err)
	}
	return header.DigestEntry(c.macKey, w, c.plainDigest(buf, w, start, c.newC)) == entry, nil
}
