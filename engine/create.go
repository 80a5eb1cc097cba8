package engine

import (
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// buildMapping turns a requested side into a validated mapping with defaults.
func buildMapping(name string, s Side) (sectorcipher.Mapping, error) {
	cipher := s.Cipher
	if cipher == "" {
		cipher = "aes-xts-plain64"
	}
	spec, err := sectorcipher.ParseKernelSpec(cipher)
	if err != nil {
		return sectorcipher.Mapping{}, fmt.Errorf("%w: --%s-cipher: %w", errclass.Usage, name, err)
	}
	if err := spec.CheckKey(s.Key); err != nil {
		return sectorcipher.Mapping{}, fmt.Errorf("%w: --%s-key-file: %w", errclass.Usage, name, err)
	}
	m := sectorcipher.Mapping{Spec: spec, Key: s.Key, SectorSize: 512}
	if s.SectorSize != 0 {
		m.SectorSize = s.SectorSize
	}
	if s.IVOffset != nil {
		m.IVOffset = *s.IVOffset
	}
	if s.IVLargeSectors != nil {
		m.IVLargeSectors = *s.IVLargeSectors
	}
	if err := m.Validate(); err != nil {
		return sectorcipher.Mapping{}, fmt.Errorf("%w: %s mapping: %w", errclass.Usage, name, err)
	}
	return m, nil
}

func recordMapping(m sectorcipher.Mapping) header.Mapping {
	return header.Mapping{Cipher: m.Spec.String(), KeyBytes: uint32(len(m.Key)),
		SectorSize: uint32(m.SectorSize), IVOffset: m.IVOffset, IVLargeSectors: m.IVLargeSectors}
}

const align = 4096

func alignUp(x, a int64) int64   { return (x + a - 1) / a * a }
func alignDown(x, a int64) int64 { return x / a * a }

// create validates a new conversion request, plans the layout, checks
// what is on the devices (docs/DESIGN.md, "What is checked before the first
// write"), and commits the first header. The only writes are to the
// metadata area, and the data area is untouched until that header is
// durable. fresh is set when the metadata holds no cryptshift header at
// all (not even a finished or torn one of an earlier conversion).
func create(t Target, store *header.Store, cfg Config, opts Options, fresh bool) (*conv, error) {
	om, err := buildMapping("old", cfg.Old)
	if err != nil {
		return nil, err
	}
	nm, err := buildMapping("new", cfg.New)
	if err != nil {
		return nil, err
	}
	if om.Equivalent(nm) {
		return nil, fmt.Errorf("%w: the old and new mappings are identical (same cipher, key, sector size and IV offset, or both plaintext): nothing to convert", errclass.Refused)
	}
	mode := header.ModeJournal
	if cfg.Mode != "" {
		if mode, err = header.ParseMode(cfg.Mode); err != nil {
			return nil, fmt.Errorf("%w: --resilience: %w", errclass.Usage, err)
		}
	}
	if err := cryptoFits(mode, opts); err != nil {
		return nil, err
	}
	if mode == header.ModeNone && !cfg.Force {
		return nil, fmt.Errorf("%w: --resilience none keeps no copy of the window being rewritten, so a crash can destroy it; add --force to accept that", errclass.Refused)
	}
	req := layoutRequest{DevSize: t.Data.Size(), MetaOnData: t.MetaOnData, OldSector: om.SectorSize, NewSector: nm.SectorSize,
		Mode: mode, Online: opts.Holder != nil, Window: cfg.Window, DataOffset: cfg.DataOffset, DataSize: cfg.DataSize,
		Shift: cfg.Shift, MetaSize: cfg.MetaSize}
	if !t.MetaOnData {
		req.MetaDevSize = t.Meta.Size()
	}
	l, err := planLayout(req)
	if err != nil {
		return nil, err
	}
	uuid, err := randomUUID(opts.UUID)
	if err != nil {
		return nil, err
	}
	h := buildHeader(l, om, nm, mode, uuid, t.Data.Size())
	if err := h.Check(); err != nil {
		return nil, fmt.Errorf("%w: planned layout is invalid: %w", errclass.Usage, err)
	}
	macKey, err := header.MACKey(om.Key, nm.Key, uuid)
	if err != nil {
		return nil, err
	}
	c, err := newConv(t, store, h, macKey, om.Key, nm.Key, opts)
	if err != nil {
		return nil, err
	}
	c.keyVerified = cfg.KeyVerified
	if err := c.checkBeforeCreate(om, fresh, cfg.Force, cfg.DataSize != 0); err != nil {
		return nil, err
	}
	if err := c.clearDigestTable(); err != nil {
		return nil, err
	}
	h.Created = c.now()
	h.Updated = h.Created
	// The engines this run will use, so that status names them from the
	// first window on; a resumed run adds its own at its first checkpoint
	// (conv.checkpoint).
	h.Engines = c.engines()
	if err := store.CommitBoth(h, macKey); err != nil {
		return nil, errclass.IOf("write first header", err)
	}
	return c, nil
}

// buildHeader is the first header of a conversion planned as l.
func buildHeader(l layout, om, nm sectorcipher.Mapping, mode header.Mode, uuid [16]byte, devSize int64) *header.Header {
	return &header.Header{
		UUID: uuid, DeviceSize: uint64(devSize),
		MetaOffset: uint64(l.MetaOff), MetaSize: uint64(l.MetaSize),
		DataSize: uint64(l.DataSize), OldOffset: uint64(l.OldOff), NewOffset: uint64(l.NewOff),
		Window: uint64(l.Window), Mode: mode, State: header.StatePaused, Descending: l.Descending,
		LogOffset: uint64(l.LogOff), LogSize: uint64(l.LogSize), LogHeadOff: 0, LogHeadSeq: 1,
		DigestOff: uint64(l.MetaOff), DigestSize: uint64(l.DigestSize),
		Old: recordMapping(om), New: recordMapping(nm),
		OldKCV: header.KCV(om.Key, uuid), NewKCV: header.KCV(nm.Key, uuid),
	}
}

// clearDigestTable zeroes the digest table so that "no entry" is exact;
// entries of an earlier conversion would fail their MAC anyway.
func (c *conv) clearDigestTable() error {
	size, off := int64(c.h.DigestSize), int64(c.h.DigestOff)
	zero := make([]byte, min(size, 1<<20))
	for at := int64(0); at < size; at += int64(len(zero)) {
		n := min(int64(len(zero)), size-at)
		if _, err := c.t.Meta.WriteAt(zero[:n], off+at); err != nil {
			return errclass.IOf("clear digest table", err)
		}
	}
	return c.flush(c.t.Meta, FlushCreateDigestTable)
}
