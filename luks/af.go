package luks

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash"
)

// afMerge recovers a key of keyLen bytes from its anti-forensic split
// material (keyLen*stripes bytes, stripe by stripe): every stripe but the
// last is XORed into a running buffer that is diffused after each one, and
// the last stripe XOR the buffer is the key. The diffusion hashes the
// buffer in hash-sized chunks, chunk i becoming H(BE32(i) || chunk), a short
// last chunk taking the leading bytes of its digest. The result is written
// to key; the working buffer is wiped.
func afMerge(material, key []byte, nStripes int, newHash func() hash.Hash) {
	buf := afStripes(material, len(key), nStripes, newHash)
	defer wipe(buf)
	last := material[(nStripes-1)*len(key) : nStripes*len(key)]
	for i := range key {
		key[i] = buf[i] ^ last[i]
	}
}

// afStripes returns the running buffer after the first nStripes-1 stripes
// of material, each XORed in and diffused: what split and merge share. The
// caller wipes it.
func afStripes(material []byte, keyLen, nStripes int, newHash func() hash.Hash) []byte {
	buf := make([]byte, keyLen)
	h := newHash()
	digest := make([]byte, 0, h.Size())
	defer func() { wipe(digest[:cap(digest)]) }()
	for s := 0; s < nStripes-1; s++ {
		stripe := material[s*keyLen : (s+1)*keyLen]
		for i := range buf {
			buf[i] ^= stripe[i]
		}
		diffuse(buf, h, digest)
	}
	return buf
}

// diffuse replaces buf, chunk by chunk, with the hash of the chunk index
// and the chunk (see afMerge).
func diffuse(buf []byte, h hash.Hash, digest []byte) {
	size := h.Size()
	var idx [4]byte
	for i, off := 0, 0; off < len(buf); i, off = i+1, off+size {
		end := min(off+size, len(buf))
		h.Reset()
		binary.BigEndian.PutUint32(idx[:], uint32(i))
		h.Write(idx[:])
		h.Write(buf[off:end])
		digest = h.Sum(digest[:0])
		copy(buf[off:end], digest)
	}
}

// afSplit is the inverse of afMerge: it fills material (at least
// len(key)*nStripes bytes) with nStripes-1 random stripes, each XORed into
// a running buffer that is then diffused, and a last stripe that is the
// buffer XOR the key. The stripes come from crypto/rand; the working buffer
// is wiped.
func afSplit(key, material []byte, nStripes int, newHash func() hash.Hash) error {
	keyLen := len(key)
	if _, err := rand.Read(material[:keyLen*(nStripes-1)]); err != nil {
		return fmt.Errorf("luks: random AF stripes: %w", err)
	}
	buf := afStripes(material, keyLen, nStripes, newHash)
	defer wipe(buf)
	last := material[(nStripes-1)*keyLen : nStripes*keyLen]
	for i := range last {
		last[i] = buf[i] ^ key[i]
	}
	return nil
}
