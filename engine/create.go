package engine

import (
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
	"github.com/cryptshift/cryptshift/wal"
)

// buildMapping turns a requested side into a validated mapping with defaults.
func buildMapping(name string, s Side) (sectorcipher.Mapping, error) {
	cipher := s.Cipher
	if cipher == "" {
		cipher = "aes-xts-plain64"
	}
	spec, err := sectorcipher.ParseSpec(cipher)
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

// create validates a new conversion request, plans the layout, checks that
// the old mapping plausibly decrypts the data, and commits the first header.
// The only writes are to the metadata area, and the data area is untouched
// until that header is durable.
func create(t Target, store *header.Store, cfg Config, opts Options) (*conv, error) {
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
	unit := int64(max(om.SectorSize, nm.SectorSize, align))
	window := int64(DefaultWindow)
	if opts.Holder != nil {
		window = DefaultOnlineWindow
	}
	if cfg.Window != 0 {
		window = cfg.Window
	}
	if window < unit || window%unit != 0 || window > 1<<30 {
		return nil, fmt.Errorf("%w: --window %d must be a multiple of %d bytes, at most 1 GiB", errclass.Usage, window, unit)
	}
	var oldOff int64
	if cfg.DataOffset != nil {
		oldOff = *cfg.DataOffset
	}
	if oldOff < 0 || oldOff%512 != 0 {
		return nil, fmt.Errorf("%w: --data-offset %d must be a non-negative multiple of 512", errclass.Usage, oldOff)
	}

	devSize := t.Data.Size()
	// Metadata area: at the end of the data device, or all of a separate one.
	var metaOff, metaSize int64
	if t.MetaOnData {
		ms := int64(DefaultMetaSize)
		if cfg.MetaSize != 0 {
			ms = cfg.MetaSize
		}
		if ms < minMetaSize || ms%align != 0 {
			return nil, fmt.Errorf("%w: --metadata-size %d must be a multiple of 4096 and at least %d", errclass.Usage, ms, minMetaSize)
		}
		metaOff = alignDown(devSize-ms, align)
		if metaOff < 0 {
			return nil, fmt.Errorf("%w: device of %d bytes cannot hold a %d-byte metadata area", errclass.Device, devSize, ms)
		}
		metaSize = devSize - metaOff
	} else {
		metaSize = alignDown(t.Meta.Size(), align)
		if metaSize < minMetaSize {
			return nil, fmt.Errorf("%w: metadata device of %d bytes is smaller than %d", errclass.Device, t.Meta.Size(), minMetaSize)
		}
	}
	// A journal log must hold two window records to avoid a checkpoint per
	// window: with a small metadata area and no --window, take a smaller
	// window rather than refuse.
	for cfg.Window == 0 && mode == header.ModeJournal && window > 1<<20 &&
		2*wal.EncodedLen(int(window)) > metaSize-2*header.Size-alignUp(devSize/window*header.DigestEntrySize, align) {
		window /= 2
	}
	dataLimit := devSize // first byte the data may not reach
	if t.MetaOnData {
		dataLimit = metaOff
	}

	dataSize := cfg.DataSize
	var shift int64
	if mode == header.ModeShift {
		shift = window
		if cfg.Shift != 0 {
			shift = cfg.Shift
		}
		if shift < window || shift%align != 0 {
			return nil, fmt.Errorf("%w: --shift %d must be a multiple of 4096 and at least the window (%d)", errclass.Usage, shift, window)
		}
	} else if cfg.Shift != 0 {
		return nil, fmt.Errorf("%w: --shift only applies to --resilience shift", errclass.Usage)
	}
	if dataSize == 0 {
		dataSize = alignDown(dataLimit-oldOff, unit)
		if mode == header.ModeShift && oldOff < shift {
			dataSize = alignDown(dataLimit-oldOff-shift, unit)
		}
	}
	if dataSize <= 0 || dataSize%unit != 0 {
		return nil, fmt.Errorf("%w: data size %d must be positive and a multiple of %d bytes", errclass.Usage, dataSize, unit)
	}
	// Shift moves the data towards lower offsets when there is room before
	// it, otherwise towards higher ones (then windows go from the end).
	newOff := oldOff
	descending := false
	if mode == header.ModeShift {
		if oldOff >= shift {
			newOff = oldOff - shift
		} else {
			newOff = oldOff + shift
			descending = true
		}
	}
	for _, off := range []int64{oldOff, newOff} {
		if off+dataSize > dataLimit {
			where := "the end of the device"
			if t.MetaOnData {
				where = fmt.Sprintf("the metadata area at byte %d", metaOff)
			}
			return nil, fmt.Errorf("%w: data [%d, %d) would run into %s: shrink the filesystem and pass --data-size, use --metadata on another device, or a smaller --metadata-size", errclass.Device, off, off+dataSize, where)
		}
	}

	nWin := (dataSize + window - 1) / window
	digestSize := alignUp(nWin*header.DigestEntrySize, align)
	logOff := metaOff + digestSize
	logSize := alignDown(metaOff+metaSize-2*header.Size-logOff, align)
	need := wal.EncodedLen(0) * 2
	switch mode {
	case header.ModeJournal:
		need = wal.EncodedLen(int(window)) + wal.EncodedLen(0)
	case header.ModeChecksum:
		need = wal.EncodedLen(int(window/unit)*hashEntry) + wal.EncodedLen(0)
	}
	if logSize < need {
		return nil, fmt.Errorf("%w: the metadata area (%d bytes) cannot hold the digest table and a %s log record for a %d-byte window: use a larger --metadata-size or a smaller --window", errclass.Usage, metaSize, mode, window)
	}

	uuid, err := randomUUID(opts.UUID)
	if err != nil {
		return nil, err
	}
	h := &header.Header{
		UUID: uuid, DeviceSize: uint64(devSize),
		MetaOffset: uint64(metaOff), MetaSize: uint64(metaSize),
		DataSize: uint64(dataSize), OldOffset: uint64(oldOff), NewOffset: uint64(newOff),
		Window: uint64(window), Mode: mode, State: header.StatePaused, Descending: descending,
		LogOffset: uint64(logOff), LogSize: uint64(logSize), LogHeadOff: 0, LogHeadSeq: 1,
		DigestOff: uint64(metaOff), DigestSize: uint64(digestSize),
		Old: recordMapping(om), New: recordMapping(nm),
		OldKCV: header.KCV(om.Key, uuid), NewKCV: header.KCV(nm.Key, uuid),
	}
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
	if !cfg.Force {
		if err := c.checkPlausible(); err != nil {
			return nil, err
		}
	}
	// The digest table is zeroed so that "no entry" is exact; entries of an
	// earlier conversion would fail their MAC anyway.
	zero := make([]byte, min(digestSize, 1<<20))
	for off := int64(0); off < digestSize; off += int64(len(zero)) {
		n := min(int64(len(zero)), digestSize-off)
		if _, err := t.Meta.WriteAt(zero[:n], metaOff+off); err != nil {
			return nil, errclass.IOf("clear digest table", err)
		}
	}
	if err := c.flush(t.Meta, "create-digest-table"); err != nil {
		return nil, err
	}
	h.Created = c.now()
	h.Updated = h.Created
	if err := store.CommitBoth(h, macKey); err != nil {
		return nil, errclass.IOf("write first header", err)
	}
	return c, nil
}
