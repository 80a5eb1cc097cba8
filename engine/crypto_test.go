package engine

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// memCrypto is CryptoDevices over a Mem: what a dm-crypt mapping does,
// done here, and counting what went through it.
type memCrypto struct {
	dev    blockdev.Device
	opened int
	// Read ahead runs concurrently with the write of the previous window.
	reads, write atomic.Int64
}

func (m *memCrypto) Open(h *header.Header, oldKey, newKey []byte) (blockdev.Device, blockdev.Device, error) {
	m.opened++
	mk := func(hm header.Mapping, key []byte, base uint64) (blockdev.Device, error) {
		mm, err := hm.WithKey(key)
		if err != nil {
			return nil, err
		}
		c, err := sectorcipher.New(mm)
		if err != nil {
			return nil, err
		}
		return &memCrypt{m: m, dev: m.dev, base: int64(base), size: int64(h.DataSize), c: c}, nil
	}
	o, err := mk(h.Old, oldKey, h.OldOffset)
	if err != nil {
		return nil, nil, err
	}
	n, err := mk(h.New, newKey, h.NewOffset)
	return o, n, err
}

type memCrypt struct {
	m          *memCrypto
	dev        blockdev.Device
	base, size int64
	c          sectorcipher.Cipher
}

func (d *memCrypt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > d.size {
		return 0, fmt.Errorf("read past the mapping")
	}
	n, err := d.dev.ReadAt(p, d.base+off)
	d.c.Decrypt(p, uint64(off)/512)
	d.m.reads.Add(int64(n))
	return n, err
}

func (d *memCrypt) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > d.size {
		return 0, fmt.Errorf("write past the mapping")
	}
	ct := append([]byte(nil), p...)
	d.c.Encrypt(ct, uint64(off)/512)
	d.m.write.Add(int64(len(p)))
	return d.dev.WriteAt(ct, d.base+off)
}

func (d *memCrypt) Flush() error { return d.dev.Flush() }
func (d *memCrypt) Size() int64  { return d.size }
func (d *memCrypt) Close() error { return nil }

// TestCryptoDevicesCarryTheData converts through CryptoDevices in the two
// modes that allow them, for pairs of mappings that include plaintext and
// both shift directions, and checks that every byte went through them and
// that the recorded digests match what verification recomputes.
func TestCryptoDevicesCarryTheData(t *testing.T) {
	pairs := [][2]side{{sides[1], sides[2]}, {sides[0], sides[3]}, {sides[5], sides[0]}, {sides[8], sides[9]}}
	for i, p := range pairs {
		for _, mode := range []string{"shift", "none"} {
			t.Run(fmt.Sprintf("%d/%s", i, mode), func(t *testing.T) {
				dataOff := int64(0)
				if mode == "shift" && i%2 == 0 {
					dataOff = 2 * testWindow
				}
				f := newFixture(t, p[0], p[1], dataOff, 5*testWindow+4096, 4<<20)
				mc := &memCrypto{dev: f.dev}
				res, err := Convert(context.Background(), f.target(), f.config(mode), Options{Crypto: mc})
				if err != nil {
					t.Fatal(err)
				}
				f.check(t, res.Header)
				if mc.opened != 1 || mc.reads.Load() != f.dataSize || mc.write.Load() != f.dataSize {
					t.Fatalf("crypto devices opened %d times, read %d and wrote %d bytes of %d", mc.opened, mc.reads.Load(), mc.write.Load(), f.dataSize)
				}
				// The digests the engine recorded from the plaintext it saw
				// must be those of the data now on disk.
				o, err := OpenRecorded(f.target(), p[0].key, p[1].key)
				if err != nil {
					t.Fatal(err)
				}
				for w := uint64(0); w < o.Header().Windows(); w++ {
					if st, err := o.CheckWindow(w); err != nil || st != DigestMatch {
						t.Fatalf("window %d: digest state %d, err %v", w, st, err)
					}
				}
			})
		}
	}
}

// TestCryptoDevicesRefusedForJournalAndChecksum: their records need the
// ciphertext, so the request is refused before anything is written, for a
// new conversion and for a resume of one recorded in such a mode.
func TestCryptoDevicesRefusedForJournalAndChecksum(t *testing.T) {
	for _, mode := range []string{"journal", "checksum", ""} {
		f := newFixture(t, sides[1], sides[2], 0, 5*testWindow, 4<<20)
		before := devHash(f.dev)
		mc := &memCrypto{dev: f.dev}
		_, err := Convert(context.Background(), f.target(), f.config(mode), Options{Crypto: mc})
		if !errors.Is(err, errclass.Usage) || devHash(f.dev) != before || mc.opened != 0 {
			t.Fatalf("mode %q: err %v, device changed %v, opened %d", mode, err, devHash(f.dev) != before, mc.opened)
		}
	}
	f := newFixture(t, sides[1], sides[2], 0, 5*testWindow, 4<<20)
	ctx, cancel := context.WithCancel(context.Background())
	cfg := f.config("checksum")
	_, err := Convert(ctx, f.target(), cfg, Options{Hooks: &Hooks{AfterWindow: func(uint64) { cancel() }}})
	if !errors.Is(err, errclass.Paused) {
		t.Fatalf("pause: %v", err)
	}
	before := devHash(f.dev)
	cfg.Mode = ""
	mc := &memCrypto{dev: f.dev}
	if _, err := Convert(context.Background(), f.target(), cfg, Options{Crypto: mc}); !errors.Is(err, errclass.Usage) || devHash(f.dev) != before {
		t.Fatalf("resume of checksum with crypto devices: err %v, device changed %v", err, devHash(f.dev) != before)
	}
}
