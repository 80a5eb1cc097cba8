package sectorcipher

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"golang.org/x/crypto/xts"
)

type namedEngine struct {
	name string
	eng  sectorEngine
}

// xtsEngines returns the pure-Go XTS engine and every accelerated one this
// machine can run, all for the same key, so that one test run covers each
// path New might pick.
func xtsEngines(t testing.TB, key []byte) []namedEngine {
	t.Helper()
	half := len(key) / 2
	g, err := newXTSGeneric(key[:half], key[half:])
	if err != nil {
		t.Fatal(err)
	}
	out := []namedEngine{{"generic", g}}
	for _, im := range xtsImpls {
		if im.available {
			out = append(out, namedEngine{im.name, im.new(key[:half], key[half:])})
		}
	}
	return out
}

func cbcEngines(t testing.TB, key []byte) []namedEngine {
	t.Helper()
	g, err := newCBCGeneric(key)
	if err != nil {
		t.Fatal(err)
	}
	out := []namedEngine{{"generic", g}}
	for _, im := range cbcImpls {
		if im.available {
			out = append(out, namedEngine{im.name, im.new(key)})
		}
	}
	return out
}

// TestImplsListed guards against a build that silently stops offering its
// assembly: on amd64 without purego and with AES-NI there must be one.
func TestImplsListed(t *testing.T) {
	for _, im := range xtsImpls {
		t.Logf("xts %s available=%v", im.name, im.available)
	}
	for _, im := range cbcImpls {
		t.Logf("cbc %s available=%v", im.name, im.available)
	}
	if haveAESNI && (len(xtsEngines(t, make([]byte, 64))) < 2 || len(cbcEngines(t, make([]byte, 32))) < 2) {
		t.Fatal("the CPU has AES-NI but no assembly engine is available")
	}
}

// TestEnginesIEEE1619 runs the standard's vectors through every engine.
func TestEnginesIEEE1619(t *testing.T) {
	for _, v := range ieee1619Vectors {
		key, pt, ct := v.decode(t)
		for _, e := range xtsEngines(t, key) {
			var s scratch
			binary.LittleEndian.PutUint64(s.iv[:8], v.dataUnit)
			buf := append([]byte(nil), pt...)
			e.eng.encryptSector(buf, &s)
			if !bytes.Equal(buf, ct) {
				t.Errorf("%s %s: encrypt:\n got %x\nwant %x", e.name, v.name, buf, ct)
			}
			e.eng.decryptSector(buf, &s)
			if !bytes.Equal(buf, pt) {
				t.Errorf("%s %s: decrypt does not return the plaintext", e.name, v.name)
			}
		}
	}
}

// unitLengths covers every remainder modulo the 8-block group of the
// assembly, groups with and without a tail, and the sector sizes.
var unitLengths = func() []int {
	var l []int
	for n := 16; n <= 272; n += 16 {
		l = append(l, n)
	}
	return append(l, 512, 1024, 2048, 4096-16, 4096)
}()

// TestEnginesXTSDifferential compares every engine with x/crypto/xts for all
// key sizes and data unit lengths, in both directions, on random data (so
// decryption is checked on data no engine produced).
func TestEnginesXTSDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, keyLen := range []int{32, 48, 64} {
		key := randBytes(r, keyLen)
		ref, err := xts.NewCipher(aes.NewCipher, key)
		if err != nil {
			t.Fatal(err)
		}
		engines := xtsEngines(t, key)
		for _, n := range unitLengths {
			// Data unit numbers whose tweaks exercise both carries of the
			// doubling early: ones with the top bits set, and random ones.
			for _, unit := range []uint64{0, 1<<63 | 1<<62, ^uint64(0), r.Uint64()} {
				data := randBytes(r, n)
				wantEnc := make([]byte, n)
				ref.Encrypt(wantEnc, data, unit)
				wantDec := make([]byte, n)
				ref.Decrypt(wantDec, data, unit)
				for _, e := range engines {
					var s scratch
					binary.LittleEndian.PutUint64(s.iv[:8], unit)
					got := append([]byte(nil), data...)
					e.eng.encryptSector(got, &s)
					if !bytes.Equal(got, wantEnc) {
						t.Fatalf("%s AES-%d len %d unit %#x: encrypt differs from x/crypto/xts", e.name, keyLen*4, n, unit)
					}
					got = append(got[:0], data...)
					e.eng.decryptSector(got, &s)
					if !bytes.Equal(got, wantDec) {
						t.Fatalf("%s AES-%d len %d unit %#x: decrypt differs from x/crypto/xts", e.name, keyLen*4, n, unit)
					}
				}
			}
		}
	}
}

// TestEnginesCBCDifferential compares every CBC engine with crypto/cipher's
// CBC for all key sizes and lengths, with a random IV block (as ESSIV
// produces).
func TestEnginesCBCDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, keyLen := range []int{16, 24, 32} {
		key := randBytes(r, keyLen)
		b, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		engines := cbcEngines(t, key)
		for _, n := range unitLengths {
			var s scratch
			copy(s.iv[:], randBytes(r, 16))
			data := randBytes(r, n)
			wantEnc := make([]byte, n)
			cipher.NewCBCEncrypter(b, s.iv[:]).CryptBlocks(wantEnc, data)
			wantDec := make([]byte, n)
			cipher.NewCBCDecrypter(b, s.iv[:]).CryptBlocks(wantDec, data)
			for _, e := range engines {
				got := append([]byte(nil), data...)
				e.eng.encryptSector(got, &s)
				if !bytes.Equal(got, wantEnc) {
					t.Fatalf("%s AES-%d len %d: encrypt differs from crypto/cipher", e.name, keyLen*8, n)
				}
				got = append(got[:0], data...)
				e.eng.decryptSector(got, &s)
				if !bytes.Equal(got, wantDec) {
					t.Fatalf("%s AES-%d len %d: decrypt differs from crypto/cipher", e.name, keyLen*8, n)
				}
			}
		}
	}
}

// TestEnginesInBounds checks that no engine reads or writes outside the
// sector it is given: the bytes around it must come through unchanged.
func TestEnginesInBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	const guard = 64
	check := func(t *testing.T, e namedEngine, n int) {
		buf := randBytes(r, guard+n+guard)
		orig := append([]byte(nil), buf...)
		var s scratch
		e.eng.encryptSector(buf[guard:guard+n:guard+n], &s)
		e.eng.decryptSector(buf[guard:guard+n:guard+n], &s)
		if !bytes.Equal(buf, orig) {
			t.Fatalf("%s len %d: guard bytes changed or round trip failed", e.name, n)
		}
	}
	for _, n := range unitLengths {
		for _, e := range xtsEngines(t, randBytes(r, 64)) {
			check(t, e, n)
		}
		for _, e := range cbcEngines(t, randBytes(r, 32)) {
			check(t, e, n)
		}
	}
}

// TestForceGeneric runs the public API against the reference construction
// with the pure-Go engines forced, so that the fallback used on CPUs without
// AES-NI is tested on this one too, and checks that New honours the switch.
func TestForceGeneric(t *testing.T) {
	forceGeneric = true
	defer func() { forceGeneric = false }()
	r := rand.New(rand.NewPCG(17, 18))
	for _, specName := range allSpecs {
		spec := mustSpec(t, specName)
		for _, ss := range sectorSizes {
			key := randKey(r, spec)
			c, err := New(Mapping{Spec: spec, Key: key, SectorSize: ss, IVOffset: 3 * uint64(ss/512)})
			if err != nil {
				t.Fatal(err)
			}
			if sc, ok := c.(*sectorCipher); ok {
				switch sc.eng.(type) {
				case *xtsEngine, *cbcEngine:
				default:
					t.Fatalf("%s: forceGeneric set but New chose %T", specName, sc.eng)
				}
			}
			start := r.Uint64N(1<<40) &^ uint64(ss/512-1)
			pt := randBytes(r, 3*ss)
			want := oracleEncrypt(t, specName, key, pt, start, 3*uint64(ss/512), ss, false)
			got := append([]byte(nil), pt...)
			c.Encrypt(got, start)
			if !bytes.Equal(got, want) {
				t.Fatalf("%s/%d: generic Encrypt differs from the reference", specName, ss)
			}
			c.Decrypt(got, start)
			if !bytes.Equal(got, pt) {
				t.Fatalf("%s/%d: generic Decrypt does not return the plaintext", specName, ss)
			}
		}
	}
}

// TestNewPicksFastest checks that without forceGeneric New uses the first
// available accelerated engine, so the benchmarks and the other tests of
// the public API measure and check the path users get.
func TestNewPicksFastest(t *testing.T) {
	for _, tc := range []struct {
		spec string
		key  int
		want string
	}{
		{"aes-xts-plain64", 64, firstAvailableXTS()},
		{"aes-cbc-essiv:sha256", 32, firstAvailableCBC()},
	} {
		c, err := New(Mapping{Spec: mustSpec(t, tc.spec), Key: make([]byte, tc.key), SectorSize: 512})
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprintf("%T", c.(*sectorCipher).eng)
		t.Logf("%s: %s", tc.spec, got)
		generic := got == "*sectorcipher.xtsEngine" || got == "*sectorcipher.cbcEngine"
		if generic != (tc.want == "") {
			t.Fatalf("%s: New chose %s, first available accelerated engine is %q", tc.spec, got, tc.want)
		}
	}
}

func firstAvailableXTS() string {
	for _, im := range xtsImpls {
		if im.available {
			return im.name
		}
	}
	return ""
}

func firstAvailableCBC() string {
	for _, im := range cbcImpls {
		if im.available {
			return im.name
		}
	}
	return ""
}
