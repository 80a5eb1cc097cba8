package engine

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"math/bits"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

// cbcWrongIV looks, in the blocks as decrypted under given (a CBC
// mapping), for sectors that are zero but for their first 16 bytes. Under
// CBC a wrong IV corrupts only a sector's first block, and for a zeroed
// sector that block is then the XOR of the wrong IV and the right one, so
// the right IV, and from it the IV offset, can be computed. An offset found
// in at least minGain sectors is the answer; a bitmap or a short file that
// happens to look alike yields no valid IV (its upper 8 bytes are not zero).
func cbcWrongIV(given sectorcipher.Mapping, blocks []block, decs [][]byte) (votes int, offset uint64) {
	name := given.Spec.String()
	var salt cipher.Block
	if name == "aes-cbc-essiv:sha256" {
		k := sha256.Sum256(given.Key)
		salt, _ = aes.NewCipher(k[:])
	}
	shift := uint(bits.TrailingZeros(uint(given.SectorSize / 512)))
	ivOf := func(pos uint64) [16]byte {
		if given.IVLargeSectors {
			pos >>= shift
		}
		if name == "aes-cbc-plain" {
			pos &= 0xffffffff
		}
		var iv [16]byte
		binary.LittleEndian.PutUint64(iv[:8], pos)
		if salt != nil {
			salt.Encrypt(iv[:], iv[:])
		}
		return iv
	}
	count := map[uint64]int{}
	ss := given.SectorSize
	for i, b := range blocks {
		dec := decs[i]
		for off := 0; off+ss <= len(dec); off += ss {
			s := dec[off : off+ss]
			if s[16] != 0 || !constant(s[16:]) || constant(s[:16]) && s[0] == 0 {
				continue
			}
			n := uint64(b.off+int64(off)) / 512
			ivg := ivOf(n + given.IVOffset)
			var raw [16]byte
			for k := range raw {
				raw[k] = s[k] ^ ivg[k]
			}
			if salt != nil {
				salt.Decrypt(raw[:], raw[:])
			}
			if binary.LittleEndian.Uint64(raw[8:]) != 0 {
				continue
			}
			pos := binary.LittleEndian.Uint64(raw[:8])
			if given.IVLargeSectors {
				pos <<= shift
			}
			o := pos - n
			if name == "aes-cbc-plain" {
				o &= 0xffffffff
			}
			count[o]++
		}
	}
	for o, n := range count {
		if n > votes || n == votes && o < offset {
			votes, offset = n, o
		}
	}
	return votes, offset
}
