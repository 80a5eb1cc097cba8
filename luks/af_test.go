package luks

import (
	"bytes"
	"crypto/rand"
	mrand "math/rand"
	"testing"
)

// TestAFRoundTrip: merge undoes split for key lengths that are and are
// not multiples of each hash's size, and a flipped bit in any stripe
// changes the merged key (every stripe matters, the point of AF).
func TestAFRoundTrip(t *testing.T) {
	r := mrand.New(mrand.NewSource(10))
	for name, hf := range hashes {
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
			mat[r.Intn(len(mat))] ^= 1 << r.Intn(8)
			afMerge(mat, got, n, hf)
			if bytes.Equal(got, key) {
				t.Fatalf("%s: a flipped material bit left the key unchanged", name)
			}
		}
	}
}
