package engine

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// fsLike is plaintext as a filesystem holds it: text-like blocks, and
// every fourth 4 KiB block free (zeros).
func fsLike(n int, seed uint64) []byte {
	b := plaintext(n, seed)
	for off := 0; off < n; off += 16 << 10 {
		clear(b[off:min(off+4096, n)])
	}
	return b
}

// variant returns s with one property changed, as a user's slip would,
// or false when the change would not alter a single ciphertext byte of a
// small device (plain against plain64).
func variant(r *rand.Rand, s side) (side, bool) {
	v := s
	switch r.IntN(4) {
	case 0:
		for v.ss == s.ss {
			v.ss = []int{512, 1024, 2048, 4096}[r.IntN(4)]
		}
		v.ivoff = s.ivoff / uint64(v.ss/512) * uint64(v.ss/512)
		if v.ss == 512 {
			v.large = false
		}
	case 1:
		if s.ss == 512 {
			return v, false
		}
		v.large = !s.large
	case 2:
		step := uint64(s.ss / 512)
		for v.ivoff == s.ivoff {
			v.ivoff = uint64(r.IntN(64)) * step
		}
	case 3:
		names := []string{"aes-xts-plain64", "aes-cbc-essiv:sha256", "aes-cbc-plain64"}
		v.cipher = names[r.IntN(3)]
		spec, _ := sectorcipher.ParseSpec(v.cipher)
		old, _ := sectorcipher.ParseSpec(s.cipher)
		if spec == old || spec.CheckKey(s.key) != nil || plainVariants(spec, old) {
			return v, false
		}
	}
	return v, true
}

// TestPlausibilityProperty: data under a random mapping converts when the
// old side is given right, and is refused with errclass.WrongKey, the
// device untouched, when any one property of it is given wrong.
func TestPlausibilityProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 1))
	const data = 1 << 20
	plain := fsLike(data, 5)
	target := side{cipher: "aes-xts-plain64", key: key(64, 77), ss: 512}
	refused, accepted := 0, 0
	for i := 0; i < 150; i++ {
		real := sides[1+r.IntN(len(sides)-1)]
		given, ok := real, true
		if i%5 != 0 {
			if given, ok = variant(r, real); !ok {
				continue
			}
		}
		if given.ivoff%uint64(given.ss/512) != 0 {
			continue
		}
		dev := blockdev.NewMem(data + testMeta)
		ct := bytes.Clone(plain)
		crypt(t, real, ct, true)
		copy(dev.Bytes(), ct)
		before := devHash(dev)
		cfg := Config{Old: given.cfg(), New: target.cfg(), Window: testWindow, MetaSize: testMeta}
		_, err := Convert(context.Background(), Target{Data: dev, Meta: dev, MetaOnData: true}, cfg, Options{})
		if i%5 == 0 {
			if err != nil {
				t.Fatalf("%+v given right: %v", real, err)
			}
			accepted++
			continue
		}
		if !errors.Is(err, errclass.WrongKey) {
			t.Fatalf("data under %+v, given %+v: want errclass.WrongKey, got %v", real, given, err)
		}
		if devHash(dev) != before {
			t.Fatalf("refused, but the device changed")
		}
		refused++
	}
	if refused < 60 || accepted < 15 {
		t.Fatalf("only %d refusals and %d conversions", refused, accepted)
	}
}

// TestPlausibilityCost logs what the check costs on a 1 GiB data area in
// memory: the sampled bytes, and the time with the right and with a wrong
// key (a wrong key tries every alternative on every sample).
func TestPlausibilityCost(t *testing.T) {
	if os.Getenv("CRYPTSHIFT_MEASURE") == "" {
		t.Skip("allocates 1 GiB; set CRYPTSHIFT_MEASURE=1 to run")
	}
	const size = 1 << 30
	dev := blockdev.NewMem(size + DefaultMetaSize)
	old := sides[1]
	blk := fsLike(1<<20, 9)
	c, _ := sectorcipher.New(old.mapping(t))
	for off := 0; off < size; off += len(blk) {
		b := bytes.Clone(blk)
		c.Encrypt(b, uint64(off)/512)
		copy(dev.Bytes()[off:], b)
	}
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"right key", old.key}, {"wrong key", key(64, 200)}} {
		g := old
		g.key = tc.key
		cfg := Config{Old: g.cfg(), New: sides[2].cfg()}
		start := time.Now()
		om, _ := buildMapping("old", cfg.Old)
		nm, _ := buildMapping("new", cfg.New)
		cc := &conv{t: Target{Data: dev, Meta: dev, MetaOnData: true}}
		cc.oldC, _ = sectorcipher.New(om)
		cc.newC, _ = sectorcipher.New(nm)
		cc.h = buildHeader(layout{DataSize: size, Window: DefaultWindow}, om, nm, 1, [16]byte{}, size)
		err := cc.checkPlausible(om, "here")
		t.Logf("plausibility on 1 GiB, %s: %d samples of 4 KiB, %v, refusal: %v", tc.name, plausibleSamples, time.Since(start), err)
	}
}

// TestLooksRandom: uniform bytes pass, at every size the check uses, and
// the things plaintext is made of do not.
func TestLooksRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{512, 4096} {
		b := make([]byte, n)
		for i := 0; i < 20000; i++ {
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			if !looksRandom(b) {
				t.Fatalf("%d random bytes judged non-random", n)
			}
		}
		if looksRandom(make([]byte, n)) || looksRandom(plaintext(n, 1)) || looksRandom(bytes.Repeat([]byte{0xff, 0, 1, 2}, n/4)) {
			t.Fatalf("%d bytes of plaintext judged random", n)
		}
	}
}

// TestPlausibilityRealShapes keeps two false refusals the real-kernel
// interop test found: shift to plaintext, where the new mapping was tried
// on never-written zeros past the data (zeros are plaintext, but no
// evidence), and plaintext that is mostly random (a large compressed file)
// with some filesystem blocks.
func TestPlausibilityRealShapes(t *testing.T) {
	const data = 1 << 20
	t.Run("shift to plaintext", func(t *testing.T) {
		old := sides[1]
		f := newFixture(t, old, sides[0], 0, data, 4<<20)
		copy(f.plain, fsLike(data, 3))
		ct := bytes.Clone(f.plain)
		crypt(t, old, ct, true)
		// The filesystem never wrote its last blocks: zeros on disk, and
		// beyond the data, where shift moves it, zeros too.
		clear(ct[data-128<<10:])
		copy(f.dev.Bytes(), ct)
		crypt(t, old, ct, false)
		copy(f.plain, ct)
		cfg := f.config("shift")
		cfg.Shift = testWindow
		res, err := Convert(context.Background(), f.target(), cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		f.check(t, res.Header)
	})
	t.Run("mostly random plaintext", func(t *testing.T) {
		f := newFixture(t, sides[0], sides[1], 0, data, 4<<20)
		r := rand.New(rand.NewPCG(8, 8))
		for i := 64 << 10; i < data; i++ {
			f.plain[i] = byte(r.Uint32())
		}
		copy(f.dev.Bytes(), f.plain)
		res, err := Convert(context.Background(), f.target(), f.config("journal"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		f.check(t, res.Header)
	})
}
