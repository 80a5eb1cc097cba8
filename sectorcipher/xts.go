package sectorcipher

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// xtsEngine is XTS-AES (IEEE 1619) over one data unit per call, written to
// avoid the per-block overhead of a block-at-a-time loop: all tweaks of the
// sector are computed first, then the sector is whitened with one bulk XOR,
// encrypted block by block, and whitened again.
type xtsEngine struct {
	data, tweak cipher.Block // K1 and K2
}

// newXTSGeneric builds the pure-Go engine from the data key K1 and the tweak
// key K2.
func newXTSGeneric(k1, k2 []byte) (*xtsEngine, error) {
	data, err := aes.NewCipher(k1)
	if err != nil {
		return nil, fmt.Errorf("sectorcipher: XTS data key: %w", err)
	}
	tweak, err := aes.NewCipher(k2)
	if err != nil {
		return nil, fmt.Errorf("sectorcipher: XTS tweak key: %w", err)
	}
	return &xtsEngine{data: data, tweak: tweak}, nil
}

// tweaks fills s.buf[:n] with the tweak of every 16-byte block of an n-byte
// data unit whose IV block is s.iv: T0 = E_K2(iv), T(j+1) = T(j)·α in
// GF(2^128) with IEEE 1619's little-endian bit order.
func (x *xtsEngine) tweaks(n int, s *scratch) []byte {
	t := s.buf[:n:n]
	x.tweak.Encrypt(t[:16], s.iv[:])
	lo := binary.LittleEndian.Uint64(t[0:8])
	hi := binary.LittleEndian.Uint64(t[8:16])
	for i := 16; i+16 <= len(t); i += 16 {
		// Multiply by α: shift the 128-bit value left by one and, if a bit
		// fell off the top, reduce by x^128 = x^7 + x^2 + x + 1 (0x87).
		carry := hi >> 63
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ (0x87 & -carry)
		binary.LittleEndian.PutUint64(t[i:i+8], lo)
		binary.LittleEndian.PutUint64(t[i+8:i+16], hi)
	}
	return t
}

func (x *xtsEngine) encryptSector(b []byte, s *scratch) {
	t := x.tweaks(len(b), s)
	subtle.XORBytes(b, b, t)
	for i := 0; i+16 <= len(b); i += 16 {
		blk := b[i : i+16 : i+16]
		x.data.Encrypt(blk, blk)
	}
	subtle.XORBytes(b, b, t)
}

func (x *xtsEngine) decryptSector(b []byte, s *scratch) {
	t := x.tweaks(len(b), s)
	subtle.XORBytes(b, b, t)
	for i := 0; i+16 <= len(b); i += 16 {
		blk := b[i : i+16 : i+16]
		x.data.Decrypt(blk, blk)
	}
	subtle.XORBytes(b, b, t)
}
