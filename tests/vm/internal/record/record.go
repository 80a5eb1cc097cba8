// Package record defines the blocks the kill test writes in the guest and checks
// on the host, so both sides agree on what a durable record looks like.
package record

import (
	"encoding/binary"
	"math/rand/v2"
)

// Size is the size of one record; records sit back to back from offset 0.
const Size = 4096

// Fill writes record i of the stream identified by seed into b (len Size). The
// index is stored in the first bytes so that a record written to the wrong
// place does not pass for the right one.
func Fill(b []byte, seed, i uint64) {
	binary.LittleEndian.PutUint64(b[0:], seed)
	binary.LittleEndian.PutUint64(b[8:], i)
	rng := rand.New(rand.NewPCG(seed, i))
	for off := 16; off < len(b); off += 8 {
		binary.LittleEndian.PutUint64(b[off:], rng.Uint64())
	}
}

// Valid reports whether b holds exactly record i of the stream seed.
func Valid(b []byte, seed, i uint64) bool {
	want := make([]byte, len(b))
	Fill(want, seed, i)
	return string(want) == string(b)
}

// Prefix returns how many records from the start of img are valid, back to back.
func Prefix(img []byte, seed uint64) uint64 {
	var n uint64
	for off := 0; off+Size <= len(img); off += Size {
		if !Valid(img[off:off+Size], seed, n) {
			break
		}
		n++
	}
	return n
}
