package sectorcipher

import (
	"crypto/aes"
	"testing"

	"golang.org/x/crypto/xts"
)

// The benchmarks work on a 64 KiB window of 4096-byte sectors with
// AES-256-XTS. BenchmarkXTSEncryptBaseline does the same work with
// golang.org/x/crypto/xts so the two MB/s figures read as a ratio.

const benchWindow = 64 << 10

func benchCipher(b *testing.B, spec string, keyLen int) Cipher {
	c, err := New(Mapping{Spec: mustSpec(b, spec), Key: seqPlaintext(keyLen), SectorSize: 4096})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func BenchmarkXTSEncrypt(b *testing.B) {
	c := benchCipher(b, "aes-xts-plain64", 64)
	buf := make([]byte, benchWindow)
	b.SetBytes(benchWindow)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.Encrypt(buf, uint64(i)*benchWindow/512)
	}
}

func BenchmarkXTSDecrypt(b *testing.B) {
	c := benchCipher(b, "aes-xts-plain64", 64)
	buf := make([]byte, benchWindow)
	b.SetBytes(benchWindow)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.Decrypt(buf, uint64(i)*benchWindow/512)
	}
}

func BenchmarkXTSEncryptBaseline(b *testing.B) {
	x, err := xts.NewCipher(aes.NewCipher, seqPlaintext(64))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, benchWindow)
	b.SetBytes(benchWindow)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		base := uint64(i) * benchWindow / 512
		for off := 0; off < len(buf); off += 4096 {
			sec := buf[off : off+4096]
			x.Encrypt(sec, sec, base+uint64(off/512))
		}
	}
}

func BenchmarkCBCEssivEncrypt(b *testing.B) {
	c := benchCipher(b, "aes-cbc-essiv:sha256", 32)
	buf := make([]byte, benchWindow)
	b.SetBytes(benchWindow)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.Encrypt(buf, uint64(i)*benchWindow/512)
	}
}

func BenchmarkCBCEssivDecrypt(b *testing.B) {
	c := benchCipher(b, "aes-cbc-essiv:sha256", 32)
	buf := make([]byte, benchWindow)
	b.SetBytes(benchWindow)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.Decrypt(buf, uint64(i)*benchWindow/512)
	}
}
