package sectorcipher

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// TestRoundTrip: for every spec × sector size × iv_large_sectors × iv_offset,
// Decrypt undoes Encrypt, a real cipher changes every sector, and none
// changes nothing.
func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, specName := range allSpecs {
		spec := mustSpec(t, specName)
		for _, ss := range sectorSizes {
			step := uint64(ss / 512)
			for _, large := range []bool{false, true} {
				for _, ivOff := range []uint64{0, step, 1000 * step, 1<<33 + step} {
					c, err := New(Mapping{Spec: spec, Key: randKey(r, spec), SectorSize: ss, IVOffset: ivOff, IVLargeSectors: large})
					if err != nil {
						t.Fatal(err)
					}
					n := 1 + r.IntN(5)
					pt := randBytes(r, n*ss)
					start := r.Uint64N(1<<40) &^ (step - 1)
					buf := append([]byte(nil), pt...)
					c.Encrypt(buf, start)
					for i := 0; i < n; i++ {
						same := bytes.Equal(buf[i*ss:(i+1)*ss], pt[i*ss:(i+1)*ss])
						if spec.IsNone() != same {
							t.Fatalf("%s/%d/%v/%d sector %d: unchanged=%v", specName, ss, large, ivOff, i, same)
						}
					}
					c.Decrypt(buf, start)
					if !bytes.Equal(buf, pt) {
						t.Fatalf("%s/%d/%v/%d: round trip failed", specName, ss, large, ivOff)
					}
				}
			}
		}
	}
}

// TestSplitInvariance: the engine cuts windows at arbitrary sector
// boundaries, so one call over n sectors must equal n calls over one sector
// each at the matching positions, and the same sector at another position
// must encrypt differently (the IV depends on position) except for none.
func TestSplitInvariance(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, specName := range allSpecs {
		spec := mustSpec(t, specName)
		for _, ss := range sectorSizes {
			for _, large := range []bool{false, true} {
				step := uint64(ss / 512)
				c, err := New(Mapping{Spec: spec, Key: randKey(r, spec), SectorSize: ss, IVLargeSectors: large, IVOffset: 2 * step})
				if err != nil {
					t.Fatal(err)
				}
				const n = 6
				pt := randBytes(r, n*ss)
				start := 10 * step
				whole := append([]byte(nil), pt...)
				c.Encrypt(whole, start)
				parts := append([]byte(nil), pt...)
				for i := 0; i < n; i++ {
					c.Encrypt(parts[i*ss:(i+1)*ss], start+uint64(i)*step)
				}
				if !bytes.Equal(whole, parts) {
					t.Fatalf("%s/%d/%v: whole-buffer and per-sector encryption differ", specName, ss, large)
				}
				// Same plaintext in every sector: ciphertexts must differ.
				rep := bytes.Repeat(pt[:ss], n)
				c.Encrypt(rep, start)
				for i := 1; i < n; i++ {
					same := bytes.Equal(rep[:ss], rep[i*ss:(i+1)*ss])
					if spec.IsNone() != same {
						t.Fatalf("%s/%d/%v: sector %d equal to sector 0: %v", specName, ss, large, i, same)
					}
				}
			}
		}
	}
}

// TestConcurrent runs several goroutines on disjoint parts of one buffer (as
// the engine does) and compares with a serial run; under -race it also
// checks that the shared cipher state is only read.
func TestConcurrent(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, specName := range []string{"aes-xts-plain64", "aes-cbc-essiv:sha256"} {
		spec := mustSpec(t, specName)
		const ss, perWorker, workers = 4096, 8, 4
		c, err := New(Mapping{Spec: spec, Key: randKey(r, spec), SectorSize: ss})
		if err != nil {
			t.Fatal(err)
		}
		pt := randBytes(r, ss*perWorker*workers)
		serial := append([]byte(nil), pt...)
		c.Encrypt(serial, 800)
		par := append([]byte(nil), pt...)
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				part := par[w*ss*perWorker : (w+1)*ss*perWorker]
				pos := 800 + uint64(w*perWorker*ss/512)
				for i := 0; i < 20; i++ { // repeat to overlap scratch use
					c.Encrypt(part, pos)
					c.Decrypt(part, pos)
				}
				c.Encrypt(part, pos)
			}(w)
		}
		wg.Wait()
		if !bytes.Equal(par, serial) {
			t.Fatalf("%s: concurrent result differs from serial", specName)
		}
	}
}

func TestMisalignedPanics(t *testing.T) {
	for _, specName := range allSpecs {
		spec := mustSpec(t, specName)
		for _, ss := range sectorSizes {
			c, err := New(Mapping{Spec: spec, Key: make([]byte, spec.KeySizes()[0]), SectorSize: ss})
			if err != nil {
				t.Fatal(err)
			}
			step := uint64(ss / 512)
			bad := []struct {
				n      int
				sector uint64
			}{
				{ss + 16, 0}, {ss - 16, 0}, {16, 0}, {1, 0},
			}
			if step > 1 {
				bad = append(bad, struct {
					n      int
					sector uint64
				}{ss + 512, 0}, struct {
					n      int
					sector uint64
				}{ss, 1}, struct {
					n      int
					sector uint64
				}{ss, step + step/2})
			}
			for _, b := range bad {
				for _, dec := range []bool{false, true} {
					name := fmt.Sprintf("%s/%d len %d sector %d decrypt=%v", specName, ss, b.n, b.sector, dec)
					if !panics(func() {
						buf := make([]byte, b.n)
						if dec {
							c.Decrypt(buf, b.sector)
						} else {
							c.Encrypt(buf, b.sector)
						}
					}) {
						t.Errorf("%s: no panic", name)
					}
				}
			}
			// Aligned calls, including an empty buffer, do not panic.
			if panics(func() { c.Encrypt(nil, step); c.Decrypt(make([]byte, 2*ss), 2*step) }) {
				t.Errorf("%s/%d: aligned call panicked", specName, ss)
			}
		}
	}
}

func panics(f func()) (p bool) {
	defer func() { p = recover() != nil }()
	f()
	return false
}

func TestParseSpec(t *testing.T) {
	for _, s := range SupportedSpecs() {
		sp, err := ParseSpec(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if sp.String() != s {
			t.Errorf("ParseSpec(%q).String() = %q", s, sp.String())
		}
		again, err := ParseSpec(sp.String())
		if err != nil || again != sp {
			t.Errorf("%s does not round-trip: %v %v", s, again, err)
		}
		if sp.IsNone() != (s == "none") {
			t.Errorf("%s: IsNone = %v", s, sp.IsNone())
		}
	}
	if got := len(SupportedSpecs()); got != len(allSpecs) {
		t.Errorf("SupportedSpecs lists %d specs, tests know %d", got, len(allSpecs))
	}
	aliases := map[string]string{
		"aes":                            "aes-cbc-plain",
		"aes-plain":                      "aes-cbc-plain",
		"capi:xts(aes)-plain64":          "aes-xts-plain64",
		"capi:xts(aes)-plain":            "aes-xts-plain",
		"capi:cbc(aes)-essiv:sha256":     "aes-cbc-essiv:sha256",
		"capi:cbc(aes)-plain64":          "aes-cbc-plain64",
		"capi:cbc(aes)-plain":            "aes-cbc-plain",
		"cipher_null-ecb":                "none",
		"twofish":                        "twofish-cbc-plain",
		"twofish-plain":                  "twofish-cbc-plain",
		"capi:xts(twofish)-plain64":      "twofish-xts-plain64",
		"capi:xts(twofish)-plain":        "twofish-xts-plain",
		"capi:cbc(twofish)-essiv:sha256": "twofish-cbc-essiv:sha256",
		"capi:cbc(twofish)-plain64":      "twofish-cbc-plain64",
		"capi:cbc(twofish)-plain":        "twofish-cbc-plain",
	}
	for in, want := range aliases {
		sp, err := ParseSpec(in)
		if err != nil || sp.String() != want {
			t.Errorf("ParseSpec(%q) = %v, %v; want %s", in, sp, err, want)
		}
	}
	for _, bad := range []string{"", "AES-XTS-PLAIN64", "aes-xts-essiv:sha256", "aes-cbc-essiv:sha1", "serpent-xts-plain64", "Twofish-xts-plain64", "twofish-xts-essiv:sha256", "aes-xts-plain64 ", "aes-ecb", "none-none"} {
		_, err := ParseSpec(bad)
		if err == nil {
			t.Errorf("ParseSpec(%q) accepted", bad)
			continue
		}
		for _, s := range SupportedSpecs() {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error for %q does not list %s: %v", bad, s, err)
			}
		}
	}
	if got := mustSpec(t, "none").KernelCipher(); got != "cipher_null-ecb" {
		t.Errorf("none.KernelCipher() = %q", got)
	}
	if got := mustSpec(t, "aes-xts-plain64").KernelCipher(); got != "aes-xts-plain64" {
		t.Errorf("KernelCipher() = %q", got)
	}
}

func TestKeySizes(t *testing.T) {
	want := map[string][]int{
		"aes-xts-plain64": {32, 48, 64}, "aes-xts-plain": {32, 48, 64},
		"aes-cbc-essiv:sha256": {16, 24, 32}, "aes-cbc-plain64": {16, 24, 32}, "aes-cbc-plain": {16, 24, 32},
		"twofish-xts-plain64": {32, 48, 64}, "twofish-xts-plain": {32, 48, 64},
		"twofish-cbc-essiv:sha256": {16, 24, 32}, "twofish-cbc-plain64": {16, 24, 32}, "twofish-cbc-plain": {16, 24, 32},
		"none": {0},
	}
	for name, sizes := range want {
		spec := mustSpec(t, name)
		if fmt.Sprint(spec.KeySizes()) != fmt.Sprint(sizes) {
			t.Errorf("%s: KeySizes = %v, want %v", name, spec.KeySizes(), sizes)
		}
		ok := map[int]bool{}
		for _, n := range sizes {
			ok[n] = true
		}
		for n := 0; n <= 80; n++ {
			err := spec.CheckKey(make([]byte, n))
			if ok[n] != (err == nil) {
				t.Errorf("%s: CheckKey(%d bytes) = %v", name, n, err)
			}
			if err != nil {
				for _, s := range sizes {
					if !strings.Contains(err.Error(), fmt.Sprint(s*8)) {
						t.Errorf("%s: error does not name %d bits: %v", name, s*8, err)
					}
				}
			}
			_, nerr := New(Mapping{Spec: spec, Key: make([]byte, n), SectorSize: 512})
			if ok[n] != (nerr == nil) {
				t.Errorf("%s: New with %d-byte key: %v", name, n, nerr)
			}
		}
	}
}

func TestValidate(t *testing.T) {
	xts := mustSpec(t, "aes-xts-plain64")
	key := make([]byte, 64)
	good := []Mapping{
		{Spec: xts, Key: key, SectorSize: 512, IVOffset: 3},
		{Spec: xts, Key: key, SectorSize: 512, IVLargeSectors: true},
		{Spec: xts, Key: key, SectorSize: 4096, IVOffset: 16, IVLargeSectors: true},
		{Spec: mustSpec(t, "aes-cbc-essiv:sha256"), Key: key[:32], SectorSize: 2048, IVOffset: 4, IVLargeSectors: true},
		{Spec: mustSpec(t, "aes-cbc-plain"), Key: key[:16], SectorSize: 1024, IVLargeSectors: true},
		{Spec: mustSpec(t, "none"), SectorSize: 4096},
	}
	for _, m := range good {
		if err := m.Validate(); err != nil {
			t.Errorf("%v/%d: %v", m.Spec, m.SectorSize, err)
		}
	}
	bad := map[string]Mapping{
		"zero spec":         {Key: key, SectorSize: 512},
		"sector size 0":     {Spec: xts, Key: key},
		"sector size 256":   {Spec: xts, Key: key, SectorSize: 256},
		"sector size 768":   {Spec: xts, Key: key, SectorSize: 768},
		"sector size 8192":  {Spec: xts, Key: key, SectorSize: 8192},
		"iv_offset 4 @4096": {Spec: xts, Key: key, SectorSize: 4096, IVOffset: 4},
		"iv_offset 1 @1024": {Spec: xts, Key: key, SectorSize: 1024, IVOffset: 1},
		"iv_offset none":    {Spec: mustSpec(t, "none"), SectorSize: 2048, IVOffset: 2},
		"key for none":      {Spec: mustSpec(t, "none"), Key: key[:16], SectorSize: 512},
		"short key":         {Spec: xts, Key: key[:16], SectorSize: 512},
	}
	for name, m := range bad {
		if err := m.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := New(m); err == nil {
			t.Errorf("%s: New accepted", name)
		}
	}
	m := Mapping{Spec: xts, Key: key, SectorSize: 4096}
	if err := m.CheckLength(16); err != nil {
		t.Errorf("CheckLength(16): %v", err)
	}
	if err := m.CheckLength(12); err == nil {
		t.Errorf("CheckLength(12) accepted for 4096-byte sectors")
	}
}

// TestKeyNotRetained: changing the caller's key slice after New must not
// change the cipher.
func TestKeyNotRetained(t *testing.T) {
	key := seqPlaintext(64)
	c, err := New(Mapping{Spec: mustSpec(t, "aes-cbc-essiv:sha256"), Key: key[:32], SectorSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	a := make([]byte, 512)
	c.Encrypt(a, 0)
	for i := range key {
		key[i] = 0
	}
	b := make([]byte, 512)
	c.Encrypt(b, 0)
	if !bytes.Equal(a, b) {
		t.Fatal("cipher changed with the caller's key slice")
	}
}
