package sectorcipher

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/crypto/twofish"
	"golang.org/x/crypto/xts"
)

var allSpecs = []string{
	"aes-xts-plain64", "aes-xts-plain",
	"aes-cbc-essiv:sha256", "aes-cbc-plain64", "aes-cbc-plain",
	"twofish-xts-plain64", "twofish-xts-plain",
	"twofish-cbc-essiv:sha256", "twofish-cbc-plain64", "twofish-cbc-plain",
	"none",
}

var sectorSizes = []int{512, 1024, 2048, 4096}

// oracleIVSector states dm-crypt's IV sector rule from the kernel source
// (crypt_convert_init, crypt_convert_block_skcipher, crypt_iv_plain_gen)
// independently of the code under test: target sector plus iv_offset,
// shifted to sector_size units with iv_large_sectors, cut to 32 bits for
// plain.
func oracleIVSector(spec string, sector512, ivOffset uint64, sectorSize int, large bool) uint64 {
	v := sector512 + ivOffset
	if large {
		v /= uint64(sectorSize / 512)
	}
	if strings.HasSuffix(spec, "-plain") {
		v = uint64(uint32(v))
	}
	return v
}

// oracleEncrypt encrypts buf (starting at target sector sector512) the way
// dm-crypt does, using only x/crypto/xts and crypto/cipher's CBC as
// reference implementations of the modes, over crypto/aes or
// x/crypto/twofish as the spec names.
func oracleEncrypt(t testing.TB, spec string, key, buf []byte, sector512, ivOffset uint64, sectorSize int, large bool) []byte {
	t.Helper()
	out := make([]byte, len(buf))
	copy(out, buf)
	if spec == "none" {
		return out
	}
	newBlock := func(k []byte) (cipher.Block, error) { return aes.NewCipher(k) }
	if strings.HasPrefix(spec, "twofish-") {
		newBlock = func(k []byte) (cipher.Block, error) { return twofish.NewCipher(k) }
	}
	for off := 0; off < len(out); off += sectorSize {
		sec := out[off : off+sectorSize]
		ivs := oracleIVSector(spec, sector512+uint64(off/512), ivOffset, sectorSize, large)
		switch {
		case strings.Contains(spec, "-xts-"):
			x, err := xts.NewCipher(newBlock, key)
			if err != nil {
				t.Fatal(err)
			}
			x.Encrypt(sec, sec, ivs)
		default:
			iv := make([]byte, 16)
			binary.LittleEndian.PutUint64(iv, ivs)
			if strings.HasSuffix(spec, "-essiv:sha256") {
				salt := sha256.Sum256(key)
				e, err := newBlock(salt[:])
				if err != nil {
					t.Fatal(err)
				}
				e.Encrypt(iv, iv)
			}
			b, err := newBlock(key)
			if err != nil {
				t.Fatal(err)
			}
			cipher.NewCBCEncrypter(b, iv).CryptBlocks(sec, sec)
		}
	}
	return out
}

func randKey(r *rand.Rand, spec Spec) []byte {
	sizes := spec.KeySizes()
	k := make([]byte, sizes[r.IntN(len(sizes))])
	for i := range k {
		k[i] = byte(r.Uint32())
	}
	return k
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestOracle compares every spec, sector size, iv_large_sectors setting and a
// spread of iv_offsets and positions against the reference construction.
func TestOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, specName := range allSpecs {
		spec := mustSpec(t, specName)
		for _, ss := range sectorSizes {
			step := uint64(ss / 512)
			for _, large := range []bool{false, true} {
				// iv_offsets: zero, small, and large enough that plain's
				// 32-bit truncation and iv_large_sectors' shift both bite.
				for _, ivOff := range []uint64{0, step, 7 * step, 1<<32 - step, 1<<40 + 3*step} {
					name := fmt.Sprintf("%s/%d/large=%v/ivoff=%d", specName, ss, large, ivOff)
					key := randKey(r, spec)
					c, err := New(Mapping{Spec: spec, Key: key, SectorSize: ss, IVOffset: ivOff, IVLargeSectors: large})
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if c.SectorSize() != ss {
						t.Fatalf("%s: SectorSize() = %d", name, c.SectorSize())
					}
					for _, start := range []uint64{0, step, 1<<32 - 2*step, r.Uint64N(1<<50) &^ (step - 1)} {
						pt := randBytes(r, ss*(1+r.IntN(4)))
						want := oracleEncrypt(t, specName, key, pt, start, ivOff, ss, large)
						got := append([]byte(nil), pt...)
						c.Encrypt(got, start)
						if !bytes.Equal(got, want) {
							t.Fatalf("%s start %d: Encrypt differs from the reference", name, start)
						}
						c.Decrypt(got, start)
						if !bytes.Equal(got, pt) {
							t.Fatalf("%s start %d: Decrypt of the reference ciphertext is not the plaintext", name, start)
						}
					}
				}
			}
		}
	}
}

// TestIVRuleExamples pins down worked examples of the IV rule with literal
// IV sectors, so that a mistake shared by the code and oracleIVSector would
// still show.
func TestIVRuleExamples(t *testing.T) {
	key := seqPlaintext(64)
	cases := []struct {
		spec       string
		sectorSize int
		large      bool
		ivOffset   uint64
		sector512  uint64
		ivSector   uint64 // what dm-crypt feeds plain64/plain for the first block
	}{
		{"aes-xts-plain64", 4096, false, 0, 16, 16},                 // 512-byte units by default
		{"aes-xts-plain64", 4096, true, 0, 16, 2},                   // sector_size units
		{"aes-xts-plain64", 4096, true, 8, 16, 3},                   // (16+8)/8
		{"aes-xts-plain64", 1024, false, 6, 2, 8},                   // iv_offset added
		{"aes-xts-plain64", 512, true, 0, 5, 5},                     // no shift at 512
		{"aes-xts-plain", 512, false, 0, 1<<32 + 9, 9},              // 32-bit wrap
		{"aes-xts-plain", 4096, true, 8, 1<<35 + 8, 2},              // shift, then cut
		{"aes-xts-plain64", 512, false, 1 << 33, 1 << 33, 1 << 34},  // no cut for plain64
		{"aes-xts-plain64", 2048, true, 4, 1<<40 + 4, 1<<38 + 2},    // large value shifted
		{"aes-xts-plain64", 512, false, 3, 1<<64 - 1, 2},            // u64 wrap, like the kernel
		{"aes-xts-plain", 2048, false, 1<<32 - 4, 4, 0},             // 2^32 cut to 0
		{"aes-xts-plain64", 4096, false, 1<<32 - 8, 8, 1 << 32},     // 2^32 kept
		{"aes-xts-plain64", 4096, true, 1<<32 - 8, 8, 1 << 29},      // 2^32 / 8
		{"aes-xts-plain64", 1024, true, 2, 1<<63 + 2, 1<<62 + 2},    // near top
		{"aes-xts-plain", 1024, true, 2, 1<<34 + 2, 2},              // 2^33+2 cut
		{"aes-xts-plain64", 2048, false, 0, 1<<20 + 12, 1<<20 + 12}, // plain units
	}
	for _, tc := range cases {
		sec := make([]byte, tc.sectorSize)
		copy(sec, "some plaintext")
		x, err := xts.NewCipher(aes.NewCipher, key)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, len(sec))
		x.Encrypt(want, sec, tc.ivSector)

		c, err := New(Mapping{Spec: mustSpec(t, tc.spec), Key: key, SectorSize: tc.sectorSize, IVOffset: tc.ivOffset, IVLargeSectors: tc.large})
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		c.Encrypt(sec, tc.sector512)
		if !bytes.Equal(sec, want) {
			t.Errorf("%+v: first block not encrypted with IV sector %d", tc, tc.ivSector)
		}
	}
}

// TestESSIVKeySize checks that ESSIV uses AES-256 keyed with sha256 of the
// whole data key for every data key size (what the kernel's essiv template
// does), by comparing with an ESSIV IV built from a 128-bit salt: they must
// differ, while the oracle (full digest) matches.
func TestESSIVKeySize(t *testing.T) {
	for _, n := range []int{16, 24, 32} {
		key := seqPlaintext(n)
		c, err := New(Mapping{Spec: mustSpec(t, "aes-cbc-essiv:sha256"), Key: key, SectorSize: 512})
		if err != nil {
			t.Fatal(err)
		}
		pt := make([]byte, 512)
		got := append([]byte(nil), pt...)
		c.Encrypt(got, 77)
		if want := oracleEncrypt(t, "aes-cbc-essiv:sha256", key, pt, 77, 0, 512, false); !bytes.Equal(got, want) {
			t.Errorf("key %d bytes: differs from sha256-keyed AES-256 ESSIV", n)
		}
		// The wrong reading "ESSIV cipher has the data key's size".
		salt := sha256.Sum256(key)
		e, _ := aes.NewCipher(salt[:n])
		iv := make([]byte, 16)
		binary.LittleEndian.PutUint64(iv, 77)
		e.Encrypt(iv, iv)
		b, _ := aes.NewCipher(key)
		wrong := append([]byte(nil), pt...)
		cipher.NewCBCEncrypter(b, iv).CryptBlocks(wrong, wrong)
		if n != 32 && bytes.Equal(got, wrong) {
			t.Errorf("key %d bytes: ESSIV used a truncated salt", n)
		}
	}
}
