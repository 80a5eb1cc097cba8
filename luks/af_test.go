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

func TestKeyMemory(t *testing.T) {
	k, err := newKey(64)
	if err != nil {
		t.Fatal(err)
	}
	b := k.Bytes()
	for i := range b {
		b[i] = 0xa5
	}
	if !k.Locked() {
		t.Log("mlock refused here (RLIMIT_MEMLOCK); the key is still off-heap and wiped")
	}
	k.Wipe()
	if k.Bytes() != nil {
		t.Fatal("Wipe left the key readable")
	}
	k.Wipe() // twice is harmless
}
