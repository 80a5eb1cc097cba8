package sectorcipher

import (
	"bytes"
	"crypto/aes"
	"encoding/binary"
	"testing"

	"golang.org/x/crypto/xts"
)

// FuzzXTS is a differential test of every XTS engine (pure Go and each
// assembly path the CPU supports) against golang.org/x/crypto/xts for any
// key size, data unit number and data unit length (multiples of 16 bytes up
// to 4096). The seed corpus is in testdata/fuzz/FuzzXTS.
func FuzzXTS(f *testing.F) {
	f.Add(make([]byte, 64), uint64(0), make([]byte, 512))
	f.Add(seqPlaintext(32), uint64(1<<63+5), seqPlaintext(4096))
	f.Fuzz(func(t *testing.T, keyIn []byte, dataUnit uint64, data []byte) {
		// Derive a valid key: the longest allowed size the input covers,
		// zero-padded up to 32 bytes when it is shorter.
		var key []byte
		switch {
		case len(keyIn) >= 64:
			key = keyIn[:64]
		case len(keyIn) >= 48:
			key = keyIn[:48]
		default:
			key = make([]byte, 32)
			copy(key, keyIn)
		}
		n := len(data) &^ 15
		if n > maxSectorSize {
			n = maxSectorSize
		}
		if n == 0 {
			return
		}
		pt := data[:n]

		ref, err := xts.NewCipher(aes.NewCipher, key)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, n)
		ref.Encrypt(want, pt, dataUnit)

		wantDec := make([]byte, n)
		ref.Decrypt(wantDec, pt, dataUnit)
		// Every engine this machine can run, the pure-Go one included, must
		// agree with the reference; decrypting arbitrary data must match
		// too, not only each engine's own output.
		for _, e := range xtsEngines(t, key) {
			var s scratch
			binary.LittleEndian.PutUint64(s.iv[:8], dataUnit)
			got := append([]byte(nil), pt...)
			e.eng.encryptSector(got, &s)
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: encrypt differs from x/crypto/xts (key %d bytes, unit %d, len %d)", e.name, len(key), dataUnit, n)
			}
			got = append(got[:0], pt...)
			e.eng.decryptSector(got, &s)
			if !bytes.Equal(got, wantDec) {
				t.Fatalf("%s: decrypt differs from x/crypto/xts (key %d bytes, unit %d, len %d)", e.name, len(key), dataUnit, n)
			}
		}
	})
}
