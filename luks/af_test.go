package luks

import (
	"bytes"
	"crypto/rand"
	mrand "math/rand"
	"sort"
	"testing"
)

// TestAFRoundTrip: merge undoes split for key lengths that are and are
// not multiples of each hash's size, and a flipped bit in any stripe
// changes the merged key (every stripe matters, the point of AF).
//
// AF diffuses each hash-sized block of a stripe on its own, and the last
// block of a key whose length is not a multiple of the hash size is a
// truncated digest: a bit flipped in a 1-byte block leaves the key
// unchanged with probability 1/256 per stripe. The flip is therefore only
// asserted where the block it lands in has at least 8 bytes (a false
// failure then has probability 2^-64), or in the last stripe, which merge
// XORs in undiffused. Hashes run in a fixed order so that one seed draws
// the same cases every run.
func TestAFRoundTrip(t *testing.T) {
	names := make([]string, 0, len(hashes))
	for name := range hashes {
		names = append(names, name)
	}
	sort.Strings(names)
	r := mrand.New(mrand.NewSource(10))
	flips := 0
	for _, name := range names {
		hf := hashes[name]
		size := hf().Size()
		for trial := 0; trial < 20; trial++ {
			key := make([]byte, 1+r.Intn(96))
			rand.Read(key)
			n := 1 + r.Intn(50)
			mat := make([]byte, len(key)*n)
			if err := afSplit(key, mat, n, hf); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(key))
			afMerge(mat, got, n, hf)
			if !bytes.Equal(got, key) {
				t.Fatalf("%s: key of %d bytes, %d stripes: merge(split) differs", name, len(key), n)
			}
			pos := r.Intn(len(mat))
			stripe, off := pos/len(key), pos%len(key)
			blockStart := off / size * size
			if stripe != n-1 && min(size, len(key)-blockStart) < 8 {
				continue
			}
			flips++
			mat[pos] ^= 1 << r.Intn(8)
			afMerge(mat, got, n, hf)
			if bytes.Equal(got, key) {
				t.Fatalf("%s: key of %d bytes, %d stripes: a bit flipped in stripe %d, byte %d left the key unchanged", name, len(key), n, stripe, off)
			}
		}
	}
	if flips < 10*len(names) {
		t.Fatalf("only %d of %d trials flipped a bit: the draw no longer tests diffusion", flips, 20*len(names))
	}
}
