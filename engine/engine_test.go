package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// plaintext builds data that looks like a filesystem to the plausibility
// check: text-like bytes with the position written in, never uniform.
func plaintext(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = "abcdefghijklmnop \n"[r.IntN(18)]
	}
	for off := 0; off+16 <= n; off += 512 {
		copy(b[off:], fmt.Sprintf("sector %08d|", off/512))
	}
	return b
}

func key(n int, seed byte) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = seed + byte(i)*7
	}
	return k
}

type side struct {
	cipher string
	key    []byte
	ss     int
	ivoff  uint64
	large  bool
}

func (s side) mapping(t *testing.T) sectorcipher.Mapping {
	t.Helper()
	spec, err := sectorcipher.ParseSpec(s.cipher)
	if err != nil {
		t.Fatal(err)
	}
	return sectorcipher.Mapping{Spec: spec, Key: s.key, SectorSize: s.ss, IVOffset: s.ivoff, IVLargeSectors: s.large}
}

func (s side) cfg() Side {
	iv, large := s.ivoff, s.large
	return Side{Cipher: s.cipher, Key: s.key, SectorSize: s.ss, IVOffset: &iv, IVLargeSectors: &large}
}

func crypt(t *testing.T, s side, buf []byte, encrypt bool) {
	t.Helper()
	c, err := sectorcipher.New(s.mapping(t))
	if err != nil {
		t.Fatal(err)
	}
	if encrypt {
		c.Encrypt(buf, 0)
	} else {
		c.Decrypt(buf, 0)
	}
}

// fixture is a device with plaintext encrypted under old at dataOff.
type fixture struct {
	dev       *blockdev.Mem
	plain     []byte
	dataOff   int64
	dataSize  int64
	old, new_ side
}

const (
	testMeta   = 1 << 20
	testWindow = 64 << 10
)

func newFixture(t *testing.T, old, nw side, dataOff, dataSize int64, devSize int64) *fixture {
	t.Helper()
	f := &fixture{dev: blockdev.NewMem(devSize), plain: plaintext(int(dataSize), uint64(dataSize)), dataOff: dataOff, dataSize: dataSize, old: old, new_: nw}
	ct := append([]byte(nil), f.plain...)
	crypt(t, old, ct, true)
	copy(f.dev.Bytes()[dataOff:], ct)
	return f
}

func (f *fixture) target() Target { return Target{Data: f.dev, Meta: f.dev, MetaOnData: true} }

func (f *fixture) config(mode string) Config {
	off := f.dataOff
	return Config{Old: f.old.cfg(), New: f.new_.cfg(), DataOffset: &off, DataSize: f.dataSize,
		Mode: mode, Window: testWindow, MetaSize: testMeta, Force: mode == "none"}
}

// check decrypts the converted area with the new mapping and compares.
func (f *fixture) check(t *testing.T, h *header.Header) {
	t.Helper()
	got := append([]byte(nil), f.dev.Bytes()[h.NewOffset:h.NewOffset+uint64(f.dataSize)]...)
	crypt(t, f.new_, got, false)
	if !bytes.Equal(got, f.plain) {
		for i := range got {
			if got[i] != f.plain[i] {
				t.Fatalf("plaintext differs from byte %d (sector %d) after conversion", i, i/512)
			}
		}
	}
}

var sides = []side{
	{cipher: "none", ss: 512},
	{cipher: "aes-xts-plain64", key: key(64, 1), ss: 512},
	{cipher: "aes-xts-plain64", key: key(32, 2), ss: 4096},
	{cipher: "aes-xts-plain64", key: key(64, 9), ss: 4096, ivoff: 8, large: true},
	{cipher: "aes-xts-plain", key: key(64, 3), ss: 512, ivoff: 16},
	{cipher: "aes-cbc-essiv:sha256", key: key(32, 4), ss: 512},
	{cipher: "aes-cbc-plain64", key: key(16, 5), ss: 4096},
	{cipher: "aes-cbc-plain", key: key(24, 6), ss: 512},
	{cipher: "aes-xts-plain64", key: key(64, 7), ss: 1024, ivoff: 2},
	{cipher: "aes-cbc-essiv:sha256", key: key(16, 8), ss: 2048, large: true},
}

func TestRoundTripEveryPairEveryMode(t *testing.T) {
	for i, old := range sides {
		for j, nw := range sides {
			if i == j {
				continue
			}
			for _, mode := range []string{"journal", "checksum", "shift", "none"} {
				t.Run(fmt.Sprintf("%d-%d/%s", i, j, mode), func(t *testing.T) {
					dataOff := int64(0)
					if mode == "shift" && (i+j)%2 == 0 {
						dataOff = 2 * testWindow // room before: shift down
					}
					f := newFixture(t, old, nw, dataOff, 5*testWindow+4096, 4<<20)
					res, err := Convert(context.Background(), f.target(), f.config(mode), Options{})
					if err != nil {
						t.Fatal(err)
					}
					if res.Header.State != header.StateComplete {
						t.Fatalf("state %s", res.Header.State)
					}
					f.check(t, res.Header)
				})
			}
		}
	}
}

// TestInterruptResumeEveryWindow pauses after every window boundary in
// turn, resumes with the same arguments, and checks the result.
func TestInterruptResumeEveryWindow(t *testing.T) {
	old, nw := sides[5], sides[1]
	for _, mode := range []string{"journal", "checksum", "shift", "none"} {
		for stop := uint64(1); stop <= 6; stop++ {
			t.Run(fmt.Sprintf("%s/after%d", mode, stop), func(t *testing.T) {
				f := newFixture(t, old, nw, 0, 6*testWindow, 4<<20)
				ctx, cancel := context.WithCancel(context.Background())
				hooks := &Hooks{AfterWindow: func(done uint64) {
					if done == stop {
						cancel()
					}
				}}
				res, err := Convert(ctx, f.target(), f.config(mode), Options{Hooks: hooks})
				if stop < 6 {
					if !errors.Is(err, errclass.Paused) {
						t.Fatalf("want pause, got %v", err)
					}
					if res.Header.State != header.StatePaused || res.Header.Done != stop {
						t.Fatalf("paused header: state %s done %d", res.Header.State, res.Header.Done)
					}
					st, err := ReadStatus(f.target())
					if err != nil || st.Done != stop || st.State != header.StatePaused {
						t.Fatalf("status after pause: %+v, %v", st, err)
					}
					res, err = Convert(context.Background(), f.target(), f.config(mode), Options{})
					if err != nil {
						t.Fatal(err)
					}
					if !res.Resumed {
						t.Fatal("second run did not resume")
					}
				} else if err != nil {
					t.Fatal(err)
				}
				f.check(t, res.Header)
			})
		}
	}
}

func devHash(d *blockdev.Mem) [32]byte { return sha256.Sum256(d.Bytes()) }

func TestRefusals(t *testing.T) {
	old, nw := sides[1], sides[5]
	fresh := func() *fixture { return newFixture(t, old, nw, 0, 6*testWindow, 4<<20) }
	t.Run("wrong old key on first run", func(t *testing.T) {
		f := fresh()
		before := devHash(f.dev)
		cfg := f.config("journal")
		cfg.Old.Key = key(64, 99)
		_, err := Convert(context.Background(), f.target(), cfg, Options{})
		if !errors.Is(err, errclass.WrongKey) {
			t.Fatalf("want errclass.WrongKey, got %v", err)
		}
		if devHash(f.dev) != before {
			t.Fatal("device changed")
		}
	})
	t.Run("plaintext declared but data is ciphertext", func(t *testing.T) {
		f := fresh()
		before := devHash(f.dev)
		cfg := f.config("journal")
		cfg.Old = Side{Cipher: "none"}
		if _, err := Convert(context.Background(), f.target(), cfg, Options{}); !errors.Is(err, errclass.WrongKey) {
			t.Fatalf("want errclass.WrongKey, got %v", err)
		}
		if devHash(f.dev) != before {
			t.Fatal("device changed")
		}
	})
	t.Run("same mapping", func(t *testing.T) {
		f := fresh()
		before := devHash(f.dev)
		cfg := f.config("journal")
		cfg.New = cfg.Old
		if _, err := Convert(context.Background(), f.target(), cfg, Options{}); !errors.Is(err, errclass.Refused) {
			t.Fatalf("want errclass.Refused, got %v", err)
		}
		if devHash(f.dev) != before {
			t.Fatal("device changed")
		}
	})
	t.Run("none without force", func(t *testing.T) {
		f := fresh()
		cfg := f.config("none")
		cfg.Force = false
		if _, err := Convert(context.Background(), f.target(), cfg, Options{}); !errors.Is(err, errclass.Refused) {
			t.Fatalf("want errclass.Refused, got %v", err)
		}
	})
	t.Run("key of wrong length", func(t *testing.T) {
		f := fresh()
		cfg := f.config("journal")
		cfg.New.Key = key(33, 1)
		if _, err := Convert(context.Background(), f.target(), cfg, Options{}); !errors.Is(err, errclass.Usage) {
			t.Fatalf("want errclass.Usage, got %v", err)
		}
	})
	t.Run("data runs into metadata", func(t *testing.T) {
		f := fresh()
		cfg := f.config("journal")
		cfg.DataSize = 4<<20 - 4096
		if _, err := Convert(context.Background(), f.target(), cfg, Options{}); !errors.Is(err, errclass.Device) {
			t.Fatalf("want errclass.Device, got %v", err)
		}
	})
	// Resume refusals: start, pause after two windows, then resume wrongly.
	paused := func(t *testing.T) *fixture {
		f := fresh()
		ctx, cancel := context.WithCancel(context.Background())
		_, err := Convert(ctx, f.target(), f.config("journal"), Options{Hooks: &Hooks{AfterWindow: func(d uint64) {
			if d == 2 {
				cancel()
			}
		}}})
		if !errors.Is(err, errclass.Paused) {
			t.Fatal(err)
		}
		return f
	}
	for name, tc := range map[string]struct {
		mut  func(*Config)
		want error
	}{
		"wrong new key on resume": {func(c *Config) { c.New.Key = key(32, 77) }, errclass.WrongKey},
		"wrong old key on resume": {func(c *Config) { c.Old.Key = key(64, 77) }, errclass.WrongKey},
		"other cipher on resume":  {func(c *Config) { c.New.Cipher = "aes-cbc-plain64" }, errclass.Conflict},
		"other mode on resume":    {func(c *Config) { c.Mode = "checksum" }, errclass.Conflict},
		"other window on resume":  {func(c *Config) { c.Window = 2 * testWindow }, errclass.Conflict},
		"other sector size":       {func(c *Config) { c.New.SectorSize = 4096 }, errclass.Conflict},
	} {
		t.Run(name, func(t *testing.T) {
			f := paused(t)
			before := devHash(f.dev)
			cfg := f.config("journal")
			tc.mut(&cfg)
			_, err := Convert(context.Background(), f.target(), cfg, Options{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("want %v, got %v", tc.want, err)
			}
			if devHash(f.dev) != before {
				t.Fatal("device changed")
			}
		})
	}
	t.Run("forged header", func(t *testing.T) {
		f := paused(t)
		// Flip the recorded new cipher to none in both copies and fix their
		// crcs: what CVE-2021-4122 did. The MAC must stop it.
		store, err := header.ReadStore(f.dev)
		if err != nil {
			t.Fatal(err)
		}
		h, err := store.Current(nil)
		if err != nil {
			t.Fatal(err)
		}
		h.New = header.Mapping{Cipher: "none", SectorSize: 512}
		h.NewKCV = [32]byte{}
		forged, _ := h.Marshal([]byte("attacker's key"))
		copy(f.dev.Bytes()[f.dev.Size()-4096:], forged)
		copy(f.dev.Bytes()[f.dev.Size()-8192:], forged)
		before := devHash(f.dev)
		cfg := f.config("journal")
		cfg.New = Side{Cipher: "none"}
		_, err = Convert(context.Background(), f.target(), cfg, Options{})
		if !errors.Is(err, errclass.Header) {
			t.Fatalf("want errclass.Header, got %v", err)
		}
		if devHash(f.dev) != before {
			t.Fatal("device changed")
		}
	})
}

func TestSeparateMetadataAndWrongDevice(t *testing.T) {
	old, nw := sides[2], sides[6]
	f := newFixture(t, old, nw, 0, 8*testWindow, 8*testWindow)
	meta := blockdev.NewMem(testMeta)
	tgt := Target{Data: f.dev, Meta: meta}
	cfg := f.config("checksum")
	cfg.MetaSize = 0
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Convert(ctx, tgt, cfg, Options{Hooks: &Hooks{AfterWindow: func(d uint64) {
		if d == 3 {
			cancel()
		}
	}}})
	if !errors.Is(err, errclass.Paused) {
		t.Fatal(err)
	}
	// Another device of the same size: the identity check must refuse it.
	other := newFixture(t, old, nw, 0, 8*testWindow, 8*testWindow)
	copy(other.dev.Bytes(), plaintext(8*testWindow, 99))
	before := devHash(other.dev)
	if _, err := Convert(context.Background(), Target{Data: other.dev, Meta: meta}, cfg, Options{}); !errors.Is(err, errclass.Device) {
		t.Fatalf("want errclass.Device, got %v", err)
	}
	if devHash(other.dev) != before {
		t.Fatal("wrong device changed")
	}
	res, err := Convert(context.Background(), tgt, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t, res.Header)
}

func TestCompletedConversionRerunAndChain(t *testing.T) {
	a, b := sides[1], sides[1]
	b.key = key(64, 42)
	f := newFixture(t, a, b, 0, 4*testWindow, 4<<20)
	if _, err := Convert(context.Background(), f.target(), f.config("journal"), Options{}); err != nil {
		t.Fatal(err)
	}
	before := devHash(f.dev)
	res, err := Convert(context.Background(), f.target(), f.config("journal"), Options{})
	if err != nil || !res.AlreadyComplete {
		t.Fatalf("rerun of a finished conversion: %v, %+v", err, res)
	}
	if devHash(f.dev) != before {
		t.Fatal("rerun wrote to the device")
	}
	// A second rotation from the new key (same cipher) starts a new conversion.
	c := b
	c.key = key(64, 43)
	cfg := f.config("checksum")
	cfg.Old, cfg.New = b.cfg(), c.cfg()
	res, err = Convert(context.Background(), f.target(), cfg, Options{})
	if err != nil || res.AlreadyComplete || res.Resumed {
		t.Fatalf("chained conversion: %v, %+v", err, res)
	}
	f.new_ = c
	f.check(t, res.Header)
	// An old key that is neither side of the completed record is a wrong
	// key: the record says which key the data is under now.
	before = devHash(f.dev)
	cfg.Old = a.cfg()
	cfg.New = side{cipher: "aes-xts-plain64", key: key(64, 44), ss: 512}.cfg()
	if _, err := Convert(context.Background(), f.target(), cfg, Options{}); !errors.Is(err, errclass.WrongKey) {
		t.Fatalf("want errclass.WrongKey, got %v", err)
	}
	if devHash(f.dev) != before {
		t.Fatal("refused request wrote to the device")
	}
}

// TestJournalDefaultWindowFitsTheLog: without --window, journal mode takes
// a window its log can hold twice; an explicit window that cannot fit is
// refused, not shrunk behind the user's back.
func TestJournalDefaultWindowFitsTheLog(t *testing.T) {
	f := newFixture(t, sides[1], sides[3], 0, 8<<20, 16<<20)
	cfg := f.config("journal")
	cfg.Window, cfg.MetaSize = 0, 4<<20
	before := devHash(f.dev)
	explicit := cfg
	explicit.Window = DefaultWindow
	if _, err := Convert(context.Background(), f.target(), explicit, Options{}); !errors.Is(err, errclass.Usage) {
		t.Fatalf("an explicit window the log cannot hold: want errclass.Usage, got %v", err)
	}
	if devHash(f.dev) != before {
		t.Fatal("refused request wrote to the device")
	}
	res, err := Convert(context.Background(), f.target(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Header.Window >= DefaultWindow || res.Header.Window < 1<<20 {
		t.Fatalf("default window %d with a 4 MiB metadata area", res.Header.Window)
	}
	f.check(t, res.Header)
}
