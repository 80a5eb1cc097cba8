package online

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// holder is the engine's Holder for an online conversion. It builds the
// device-mapper holder in Begin, from the authenticated header, so the
// live table is checked against the recorded layout and progress rather
// than against anything the command line claims.
type holder struct {
	name     string
	destOff  *int64 // --new-like: where DEST keeps the data; must be the new offset
	logf     func(string, ...any)
	hooks    Hooks
	o        *Online
	lockedMu bool
	kc       *KernelCrypto // --crypto kernel, once opened
}

// Open implements engine.CryptoDevices for --crypto kernel: the private
// dm-crypt devices of the data area, built from the same layout as the
// holder's tables (so Begin must have run).
func (h *holder) Open(hd *header.Header, oldKey, newKey []byte) (blockdev.Device, blockdev.Device, error) {
	if h.o == nil {
		return nil, nil, errors.New("kernel crypto before the online holder began")
	}
	kc, err := h.o.KernelCrypto()
	if err != nil {
		return nil, nil, err
	}
	h.kc = kc
	n := kc.Names()
	h.logf("cryptshift: the kernel does the crypto: windows are read through %s and written through %s", n[0], n[1])
	old, nw := kc.Devices()
	return old, nw, nil
}

// closeCrypto removes the private devices of --crypto kernel.
func (h *holder) closeCrypto() {
	if h.kc == nil {
		return
	}
	if err := h.kc.Close(); err != nil {
		h.logf("cryptshift: warning: removing the kernel crypto devices: %v", err)
	}
	h.kc = nil
}

func (h *holder) Begin(hd *header.Header, oldKey, newKey []byte) error {
	om, err := hd.Old.WithKey(oldKey)
	if err != nil {
		return err
	}
	nm, err := hd.New.WithKey(newKey)
	if err != nil {
		return err
	}
	if h.destOff != nil && uint64(*h.destOff) != hd.NewOffset {
		return fmt.Errorf("--new-like: the new mapping's device reads data at byte %d, the conversion writes it at %d", *h.destOff, hd.NewOffset)
	}
	oo, no := int64(hd.OldOffset), int64(hd.NewOffset)
	o, err := NewOnline(OnlineConfig{Name: h.name, Old: om, New: nm, OldOffset: &oo, NewOffset: &no, Logf: h.logf})
	if err != nil {
		return err
	}
	// The process must not page-fault on the window it holds (it may be
	// converting the filesystem it runs from).
	if err := dm.LockMemory(); err != nil {
		return fmt.Errorf("lock memory (needed so the tool cannot stall on the window it holds): %w", err)
	}
	h.lockedMu = true
	h.o = o
	return nil
}

func (h *holder) Hold(w uint64, start, n int64) error {
	if err := h.o.Hold(w, start, n); err != nil {
		return err
	}
	if h.hooks.Held != nil {
		h.hooks.Held(w, start, n)
	}
	return nil
}

func (h *holder) Release(w uint64, start, n int64) error {
	err := h.o.Release(w, start, n)
	if h.hooks.Released != nil {
		h.hooks.Released(w, start, n, err)
	}
	return err
}

func (h *holder) Abort(w uint64, start, n int64, cause error) {
	if h.o != nil {
		h.o.Abort(w, start, n, cause)
	}
	if h.hooks.Aborted != nil {
		h.hooks.Aborted(w, start, n)
	}
}

func (h *holder) close() {
	if h.lockedMu {
		_ = dm.UnlockMemory()
	}
}

// openTarget opens what an online conversion of req.Name over req.Device
// works on: the device itself with O_DIRECT and without O_EXCL
// (device-mapper holds it), and the metadata, at its end or in
// req.Metadata. It refuses a Name that is not served from Device, and
// holds Name's lock until cleanup.
func openTarget(req Request, create bool) (engine.Target, []dm.Target, func(bool), error) {
	name, dev := req.Name, req.Device
	live, err := dm.Table(name)
	if err != nil {
		return engine.Target{}, nil, nil, fmt.Errorf("%w: --online %s: %w", errclass.Device, name, err)
	}
	if len(live) == 0 {
		return engine.Target{}, nil, nil, fmt.Errorf("%w: --online %s has no live table", errclass.Device, name)
	}
	devno, err := dm.DevNo(dev)
	if err != nil {
		return engine.Target{}, nil, nil, fmt.Errorf("%w: %w", errclass.Device, err)
	}
	if err := checkMetadataPlace(req.Metadata, name, devno); err != nil {
		return engine.Target{}, nil, nil, err
	}
	for _, t := range live {
		seg, err := dm.ParseSegment(t)
		if err != nil {
			if t.Type == "linear" {
				continue // a hold device; NewOnline explains
			}
			return engine.Target{}, nil, nil, fmt.Errorf("%w: --online %s: %w", errclass.Device, name, err)
		}
		if seg.Device != devno && !sameFile(seg.Device, dev) {
			return engine.Target{}, nil, nil, fmt.Errorf("%w: --online %s is served from %s, not from %s (%s)", errclass.Device, name, seg.Device, dev, devno)
		}
	}
	unlock, err := Lock(name)
	if err != nil {
		return engine.Target{}, nil, nil, err
	}
	t, cleanup, err := req.open(blockdev.Options{Direct: true}, create)
	if err != nil {
		unlock()
		return engine.Target{}, nil, nil, err
	}
	return t, live, func(failed bool) { cleanup(failed); unlock() }, nil
}

// Lock keeps two cryptshift processes off the same device-mapper device
// NAME: O_EXCL cannot, since the device is held by design. Every command
// that works on a live NAME takes it; the returned function releases it.
func Lock(name string) (func(), error) {
	dir := "/run/cryptshift"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: lock directory: %w", errclass.Device, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, filepath.Base(name)+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: lock %s: %w", errclass.Device, name, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: another cryptshift is working on %s: %w", errclass.Device, name, blockdev.ErrInUse)
	}
	return func() { f.Close() }, nil
}

// fillFromTable completes the request from the live tables: a new
// conversion takes the old mapping (key included), data offset and size
// from NAME's single target; --new-like takes the new mapping from DEST.
// Options given on the command line must agree with what the tables say.
func fillFromTable(cfg *engine.Config, live []dm.Target, t engine.Target, newLike string) (*int64, error) {
	st, err := engine.ReadStatus(t)
	// A finished conversion is not resumed: NAME's one target is the old
	// mapping of the next one.
	resuming := err == nil && st.Header.State != header.StateComplete
	if err != nil && !errors.Is(err, errclass.Header) {
		return nil, err
	}
	if resuming {
		// The keys of a conversion in progress are in NAME's table too:
		// the key check values say which target holds which.
		h := st.Header
		for _, tg := range live {
			seg, err := dm.ParseSegment(tg)
			if err != nil {
				continue
			}
			if cfg.Old.Key == nil && seg.Mapping.Spec.String() == h.Old.Cipher && header.KCV(seg.Mapping.Key, h.UUID) == h.OldKCV {
				cfg.Old.Key = seg.Mapping.Key
			}
			if cfg.New.Key == nil && seg.Mapping.Spec.String() == h.New.Cipher && header.KCV(seg.Mapping.Key, h.UUID) == h.NewKCV {
				cfg.New.Key = seg.Mapping.Key
			}
		}
	} else {
		if len(live) != 1 {
			return nil, fmt.Errorf("%w: --online: the table has %d targets and no conversion is recorded: it must be a single crypt or linear target", errclass.Device, len(live))
		}
		seg, err := dm.ParseSegment(live[0])
		if err != nil {
			return nil, fmt.Errorf("%w: --online: %w", errclass.Device, err)
		}
		if err := sideFromMapping(&cfg.Old, "old", seg.Mapping); err != nil {
			return nil, err
		}
		off := int64(seg.Offset) * 512
		if cfg.DataOffset != nil && *cfg.DataOffset != off {
			return nil, usageErr("--data-offset %d: the device's table reads data at byte %d", *cfg.DataOffset, off)
		}
		size := int64(dm.Size(live)) * 512
		if cfg.DataSize != 0 && cfg.DataSize != size {
			return nil, usageErr("--data-size %d: the device serves %d bytes", cfg.DataSize, size)
		}
		cfg.DataOffset, cfg.DataSize = &off, size
	}
	if newLike == "" {
		return nil, nil
	}
	dest, err := dm.Table(newLike)
	if err != nil {
		return nil, fmt.Errorf("%w: --new-like %s: %w", errclass.Device, newLike, err)
	}
	if len(dest) != 1 {
		return nil, fmt.Errorf("%w: --new-like %s must be a single target", errclass.Device, newLike)
	}
	seg, err := dm.ParseSegment(dest[0])
	if err != nil {
		return nil, fmt.Errorf("%w: --new-like %s: %w", errclass.Device, newLike, err)
	}
	if err := sideFromMapping(&cfg.New, "new", seg.Mapping); err != nil {
		return nil, err
	}
	off := int64(seg.Offset) * 512
	return &off, nil
}

// sideFromMapping fills a side from a live table, refusing flags that
// contradict it.
func sideFromMapping(s *engine.Side, name string, m sectorcipher.Mapping) error {
	if s.Cipher != "" {
		spec, err := sectorcipher.ParseKernelSpec(s.Cipher)
		if err != nil || spec != m.Spec {
			return usageErr("--%s-cipher %s: the live table says %s", name, s.Cipher, m.Spec)
		}
	}
	if s.Key != nil && !bytes.Equal(s.Key, m.Key) {
		return fmt.Errorf("%w: --%s-key-file differs from the key in the live table", errclass.WrongKey, name)
	}
	if s.SectorSize != 0 && s.SectorSize != m.SectorSize {
		return usageErr("--%s-sector-size %d: the live table says %d", name, s.SectorSize, m.SectorSize)
	}
	if s.IVOffset != nil && *s.IVOffset != m.IVOffset {
		return usageErr("--%s-iv-offset %d: the live table says %d", name, *s.IVOffset, m.IVOffset)
	}
	if s.IVLargeSectors != nil && *s.IVLargeSectors != m.IVLargeSectors {
		return usageErr("--%s-iv-large-sectors: the live table says %v", name, m.IVLargeSectors)
	}
	iv, large := m.IVOffset, m.IVLargeSectors
	*s = engine.Side{Cipher: m.Spec.String(), Key: m.Key, SectorSize: m.SectorSize, IVOffset: &iv, IVLargeSectors: &large}
	return nil
}
