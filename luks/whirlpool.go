package luks

import (
	"encoding/binary"
	"hash"
)

// Whirlpool (ISO/IEC 10118-3, the 2003 version), written from its
// specification because neither the standard library nor x/crypto has it
// and old LUKS1 volumes use it as their keyslot hash. The S-box is built
// from its 4-bit mini-boxes and the tables from the S-box at start-up.

var (
	wpSbox [256]byte
	// wpT[k][x] is row k of the MixRows matrix times S(x), packed as the 8
	// bytes of one output row (byte j in bits 63-8j..56-8j).
	wpT  [8][256]uint64
	wpRC [11]uint64 // round constants, row 0 only
)

func init() {
	e := [16]byte{0x1, 0xB, 0x9, 0xC, 0xD, 0x6, 0xF, 0x3, 0xE, 0x8, 0x7, 0x4, 0xA, 0x2, 0x5, 0x0}
	r := [16]byte{0x7, 0xC, 0xB, 0xD, 0xE, 0x4, 0x9, 0xF, 0x6, 0x3, 0x8, 0xA, 0x2, 0x5, 0x1, 0x0}
	var einv [16]byte
	for i, v := range e {
		einv[v] = byte(i)
	}
	for u := 0; u < 256; u++ {
		a, b := e[u>>4], einv[u&15]
		x := r[a^b]
		wpSbox[u] = e[a^x]<<4 | einv[b^x]
	}
	mul := func(a, b byte) byte {
		var p byte
		for ; b != 0; b >>= 1 {
			if b&1 != 0 {
				p ^= a
			}
			hi := a & 0x80
			a <<= 1
			if hi != 0 {
				a ^= 0x1d // x^8 + x^4 + x^3 + x^2 + 1
			}
		}
		return p
	}
	c := [8]byte{1, 1, 4, 1, 8, 5, 2, 9}
	for k := 0; k < 8; k++ {
		for x := 0; x < 256; x++ {
			var v uint64
			for j := 0; j < 8; j++ {
				// Output column j gets input column k times C[k][j] = c[(j-k) mod 8].
				v |= uint64(mul(wpSbox[x], c[(j-k+8)%8])) << (56 - 8*j)
			}
			wpT[k][x] = v
		}
	}
	for rr := 1; rr <= 10; rr++ {
		wpRC[rr] = binary.BigEndian.Uint64(wpSbox[8*(rr-1) : 8*rr])
	}
}

// wpRound applies one round (S-box, column shift, row mix) to in and XORs
// key into the result.
func wpRound(in, key *[8]uint64) [8]uint64 {
	var out [8]uint64
	for i := 0; i < 8; i++ {
		v := key[i]
		for k := 0; k < 8; k++ {
			// Column k is shifted down by k: row i takes it from row i-k.
			v ^= wpT[k][byte(in[(i-k+8)%8]>>(56-8*k))]
		}
		out[i] = v
	}
	return out
}

func wpBlock(h *[8]uint64, block []byte) {
	var m, k, s [8]uint64
	for i := range m {
		m[i] = binary.BigEndian.Uint64(block[8*i:])
		k[i] = h[i]
		s[i] = m[i] ^ k[i]
	}
	for rr := 1; rr <= 10; rr++ {
		rc := [8]uint64{wpRC[rr]}
		k = wpRound(&k, &rc)
		s = wpRound(&s, &k)
	}
	for i := range h {
		h[i] ^= s[i] ^ m[i]
	}
}

type whirlpool struct {
	h   [8]uint64
	buf [64]byte
	n   int
	len uint64 // bytes hashed
}

func newWhirlpool() hash.Hash { return &whirlpool{} }

func (w *whirlpool) Size() int      { return 64 }
func (w *whirlpool) BlockSize() int { return 64 }
func (w *whirlpool) Reset()         { *w = whirlpool{} }

func (w *whirlpool) Write(p []byte) (int, error) {
	n := len(p)
	w.len += uint64(n)
	for len(p) > 0 {
		c := copy(w.buf[w.n:], p)
		w.n += c
		p = p[c:]
		if w.n == 64 {
			wpBlock(&w.h, w.buf[:])
			w.n = 0
		}
	}
	return n, nil
}

func (w *whirlpool) Sum(b []byte) []byte {
	d := *w
	// A 1 bit, zeros up to 32 bytes before a block end, then the length
	// in bits as a 256-bit big-endian number.
	pad := make([]byte, 0, 128)
	pad = append(pad, 0x80)
	for (d.n+len(pad))%64 != 32 {
		pad = append(pad, 0)
	}
	var l [32]byte
	binary.BigEndian.PutUint64(l[24:], d.len<<3)
	binary.BigEndian.PutUint64(l[16:], d.len>>61)
	d.Write(pad)
	d.Write(l[:])
	for _, v := range d.h {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}
