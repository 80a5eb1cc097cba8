package luks

import (
	"bytes"
	"crypto/rand"
	"hash"
	mrand "math/rand"
	"testing"
)

// afSplit is the inverse of afMerge, written from the format description
// (random stripes, each XORed into a buffer that is then diffused, the
// last stripe being the key XOR the buffer); the package never splits,
// since it writes no keyslots.
func afSplit(key []byte, n int, newHash func() hash.Hash) []byte {
	out := make([]byte, len(key)*n)
	rand.Read(out[:len(key)*(n-1)])
	buf := make([]byte, len(key))
	h := newHash()
	for s := 0; s < n-1; s++ {
		for i := range buf {
			buf[i] ^= out[s*len(key)+i]
		}
		diffuse(buf, h, nil)
	}
	for i := range key {
		out[(n-1)*len(key)+i] = buf[i] ^ key[i]
	}
	return out
}

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
			mat := afSplit(key, n, hf)
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
