//go:build !purego

package sectorcipher

import (
	"encoding/binary"
	"unsafe"
)

// sbox is the AES S-box, computed at init from its definition (inverse in
// GF(2^8) followed by the affine map) so that no table has to be trusted.
var sbox = func() (s [256]byte) {
	// Walk the multiplicative group with generator 3 and its inverse 3^-1 in
	// step: p·q stays 1, so q is always p's inverse.
	p, q := byte(1), byte(1)
	for {
		// p *= 3
		p = p ^ p<<1 ^ byte(0x1b&-(p>>7))
		// q /= 3
		q ^= q << 1
		q ^= q << 2
		q ^= q << 4
		q ^= byte(0x09 & -(q >> 7))
		x := q ^ rotl8(q, 1) ^ rotl8(q, 2) ^ rotl8(q, 3) ^ rotl8(q, 4)
		s[p] = x ^ 0x63
		if p == 1 {
			break
		}
	}
	s[0] = 0x63 // 0 has no inverse; FIPS 197 maps it to 0 before the affine step
	return s
}()

func rotl8(x byte, n uint) byte { return x<<n | x>>(8-n) }

func subWord(w uint32) uint32 {
	return uint32(sbox[w>>24])<<24 | uint32(sbox[w>>16&0xff])<<16 |
		uint32(sbox[w>>8&0xff])<<8 | uint32(sbox[w&0xff])
}

// aesSchedule holds the round keys of one AES key in the byte order AESENC
// and AESDEC take them. The SSE forms of those instructions fault on
// unaligned memory operands, so enc and dec point into buf at a 16-byte
// boundary.
type aesSchedule struct {
	rounds   int
	enc, dec []byte // (rounds+1)*16 bytes each
	buf      [2*15*16 + 16]byte
}

func newAESSchedule(key []byte) *aesSchedule {
	s := new(aesSchedule)
	nk := len(key) / 4
	s.rounds = nk + 6
	n := (s.rounds + 1) * 16
	off := int(-uintptr(unsafe.Pointer(&s.buf[0])) & 15)
	s.enc = s.buf[off : off+n : off+n]
	s.dec = s.buf[off+15*16 : off+15*16+n : off+15*16+n]

	// FIPS 197 section 5.2, on big-endian words.
	w := make([]uint32, 4*(s.rounds+1))
	for i := 0; i < nk; i++ {
		w[i] = binary.BigEndian.Uint32(key[4*i:])
	}
	rcon := uint32(1)
	for i := nk; i < len(w); i++ {
		t := w[i-1]
		switch {
		case i%nk == 0:
			t = subWord(t<<8|t>>24) ^ rcon<<24
			rcon = rcon<<1 ^ 0x11b&-(rcon>>7)
		case nk > 6 && i%nk == 4:
			t = subWord(t)
		}
		w[i] = w[i-nk] ^ t
	}
	for i, x := range w {
		binary.BigEndian.PutUint32(s.enc[4*i:], x)
	}

	// The equivalent inverse cipher (FIPS 197 section 5.3.5) runs the
	// encryption round keys backwards, with InvMixColumns applied to all but
	// the first and last so that AESDEC can use them directly.
	nr := s.rounds
	copy(s.dec[:16], s.enc[nr*16:])
	copy(s.dec[nr*16:], s.enc[:16])
	for i := 1; i < nr; i++ {
		aesInvMixColumns(&s.dec[i*16], &s.enc[(nr-i)*16])
	}
	clear(w)
	return s
}
