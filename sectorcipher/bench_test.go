package sectorcipher

import (
	"crypto/aes"
	"fmt"
	"testing"

	"golang.org/x/crypto/xts"
)

// The benchmarks work on a 64 KiB window of 4096-byte sectors (512-byte ones
// for BenchmarkXTS512) through the public API. Each one runs every engine
// this machine has (the assembly ones, the pure-Go one as "generic") and,
// for XTS, golang.org/x/crypto/xts as "xcrypto", as sub-benchmarks of one
// run, so that their MB/s figures read as ratios on the same machine under
// the same load.

const benchWindow = 64 << 10

// benchCiphers returns one Cipher per engine for spec, all with the same key.
func benchCiphers(b *testing.B, spec string, keyLen, sectorSize int) []namedCipher {
	c, err := New(Mapping{Spec: mustSpec(b, spec), Key: seqPlaintext(keyLen), SectorSize: sectorSize})
	if err != nil {
		b.Fatal(err)
	}
	var engines []namedEngine
	if mustSpec(b, spec).mode == modeXTS {
		engines = xtsEngines(b, seqPlaintext(keyLen))
	} else {
		engines = cbcEngines(b, seqPlaintext(keyLen))
	}
	var out []namedCipher
	for _, e := range engines {
		sc := *c.(*sectorCipher)
		sc.eng = e.eng
		out = append(out, namedCipher{e.name, &sc})
	}
	return out
}

type namedCipher struct {
	name string
	c    Cipher
}

func benchRun(b *testing.B, f func(buf []byte, sector512 uint64)) {
	buf := make([]byte, benchWindow)
	b.SetBytes(benchWindow)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f(buf, uint64(i)*benchWindow/512)
	}
}

func BenchmarkXTS(b *testing.B) { benchXTS(b, 4096) }

// BenchmarkXTS512 is BenchmarkXTS with 512-byte sectors, where the per-sector
// costs (tweak setup, the scratch memory, the call) weigh eight times more.
func BenchmarkXTS512(b *testing.B) { benchXTS(b, 512) }

func benchXTS(b *testing.B, sectorSize int) {
	for _, keyLen := range []int{32, 64} {
		for _, dir := range []string{"encrypt", "decrypt"} {
			prefix := fmt.Sprintf("AES-%d/%s/", keyLen*4, dir)
			for _, nc := range benchCiphers(b, "aes-xts-plain64", keyLen, sectorSize) {
				f := nc.c.Encrypt
				if dir == "decrypt" {
					f = nc.c.Decrypt
				}
				b.Run(prefix+nc.name, func(b *testing.B) { benchRun(b, f) })
			}
			x, err := xts.NewCipher(aes.NewCipher, seqPlaintext(keyLen))
			if err != nil {
				b.Fatal(err)
			}
			b.Run(prefix+"xcrypto", func(b *testing.B) {
				benchRun(b, func(buf []byte, sector512 uint64) {
					for off := 0; off < len(buf); off += sectorSize {
						sec := buf[off : off+sectorSize]
						if dir == "decrypt" {
							x.Decrypt(sec, sec, sector512+uint64(off/512))
						} else {
							x.Encrypt(sec, sec, sector512+uint64(off/512))
						}
					}
				})
			})
		}
	}
}

func BenchmarkCBCEssiv(b *testing.B) {
	for _, dir := range []string{"encrypt", "decrypt"} {
		for _, nc := range benchCiphers(b, "aes-cbc-essiv:sha256", 32, 4096) {
			f := nc.c.Encrypt
			if dir == "decrypt" {
				f = nc.c.Decrypt
			}
			b.Run("AES-256/"+dir+"/"+nc.name, func(b *testing.B) { benchRun(b, f) })
		}
	}
}
