package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/internal/testkit"
)

// TestCryptoDevicesCarryTheData converts through CryptoDevices in every
// mode, for pairs of mappings that include plaintext and
// both shift directions, and checks that every byte went through them and
// that the recorded digests match what verification recomputes.
func TestCryptoDevicesCarryTheData(t *testing.T) {
	pairs := [][2]side{{sides[1], sides[2]}, {sides[0], sides[3]}, {sides[5], sides[0]}, {sides[8], sides[9]}}
	for i, p := range pairs {
		for _, mode := range []string{"journal", "checksum", "shift", "none"} {
			t.Run(fmt.Sprintf("%d/%s", i, mode), func(t *testing.T) {
				dataOff := int64(0)
				if mode == "shift" && i%2 == 0 {
					dataOff = 2 * testWindow
				}
				f := newFixture(t, p[0], p[1], dataOff, 5*testWindow+4096, 4<<20)
				mc := &testkit.CryptoDevices{Data: f.dev}
				res, err := Convert(context.Background(), f.target(), f.config(mode), Options{Crypto: mc})
				if err != nil {
					t.Fatal(err)
				}
				f.check(t, res.Header)
				if mc.Opened.Load() != 1 || mc.Reads.Load() != f.dataSize || mc.Writes.Load() != f.dataSize {
					t.Fatalf("crypto devices opened %d times, read %d and wrote %d bytes of %d", mc.Opened.Load(), mc.Reads.Load(), mc.Writes.Load(), f.dataSize)
				}
				// Only checksum records need the new ciphertext beforehand.
				if sealed, want := mc.Sealed.Load(), map[bool]int64{true: f.dataSize}[mode == "checksum"]; sealed != want {
					t.Fatalf("%s: %d bytes sealed, want %d", mode, sealed, want)
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

// noSeal is CryptoDevices that cannot seal (not an engine.Sealer).
type noSeal struct{ d *testkit.CryptoDevices }

func (n noSeal) Open(h *header.Header, oldKey, newKey []byte) (blockdev.Device, blockdev.Device, error) {
	return n.d.Open(h, oldKey, newKey)
}

// TestCryptoDevicesWithoutSealRefusedForChecksum: checksum's record needs
// the new ciphertext before the window is written, so crypto devices that
// cannot show it are refused before anything is written, for a new
// conversion and for a resume of one recorded in checksum mode; journal,
// whose record is read raw, is not.
func TestCryptoDevicesWithoutSealRefusedForChecksum(t *testing.T) {
	f := newFixture(t, sides[1], sides[2], 0, 5*testWindow, 4<<20)
	before := devHash(f.dev)
	mc := &testkit.CryptoDevices{Data: f.dev}
	_, err := Convert(context.Background(), f.target(), f.config("checksum"), Options{Crypto: noSeal{mc}})
	if !errors.Is(err, errclass.Usage) || devHash(f.dev) != before || mc.Opened.Load() != 0 {
		t.Fatalf("checksum: err %v, device changed %v, opened %d", err, devHash(f.dev) != before, mc.Opened.Load())
	}
	f = newFixture(t, sides[1], sides[2], 0, 5*testWindow, 4<<20)
	mc = &testkit.CryptoDevices{Data: f.dev}
	res, err := Convert(context.Background(), f.target(), f.config("journal"), Options{Crypto: noSeal{mc}})
	if err != nil {
		t.Fatalf("journal without a sealer: %v", err)
	}
	f.check(t, res.Header)
	f = newFixture(t, sides[1], sides[2], 0, 5*testWindow, 4<<20)
	ctx, cancel := context.WithCancel(context.Background())
	cfg := f.config("checksum")
	_, err = Convert(ctx, f.target(), cfg, Options{Hooks: &Hooks{AfterWindow: func(uint64) { cancel() }}})
	if !errors.Is(err, errclass.Paused) {
		t.Fatalf("pause: %v", err)
	}
	before = devHash(f.dev)
	cfg.Mode = ""
	mc = &testkit.CryptoDevices{Data: f.dev}
	if _, err := Convert(context.Background(), f.target(), cfg, Options{Crypto: noSeal{mc}}); !errors.Is(err, errclass.Usage) || devHash(f.dev) != before {
		t.Fatalf("resume of checksum with crypto devices: err %v, device changed %v", err, devHash(f.dev) != before)
	}
	// With the sealer the same resume finishes.
	res, err = Convert(context.Background(), f.target(), cfg, Options{Crypto: mc})
	if err != nil {
		t.Fatalf("resume of checksum with a sealer: %v", err)
	}
	f.check(t, res.Header)
}
