package sectorcipher

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// cbcEngine is AES-CBC over one sector per call, the chain starting afresh
// from the sector's IV block.
type cbcEngine struct {
	b cipher.Block
}

func newCBCGeneric(key []byte) (*cbcEngine, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("sectorcipher: CBC key: %w", err)
	}
	return &cbcEngine{b: b}, nil
}

// encryptSector is inherently sequential: each block's input depends on the
// previous block's output.
func (c *cbcEngine) encryptSector(b []byte, s *scratch) {
	// The chaining value stays in registers; a 16-byte XORBytes call per
	// block costs more than the XOR itself.
	lo := binary.LittleEndian.Uint64(s.iv[0:8])
	hi := binary.LittleEndian.Uint64(s.iv[8:16])
	for i := 0; i+16 <= len(b); i += 16 {
		blk := b[i : i+16 : i+16]
		binary.LittleEndian.PutUint64(blk[0:8], binary.LittleEndian.Uint64(blk[0:8])^lo)
		binary.LittleEndian.PutUint64(blk[8:16], binary.LittleEndian.Uint64(blk[8:16])^hi)
		c.b.Encrypt(blk, blk)
		lo = binary.LittleEndian.Uint64(blk[0:8])
		hi = binary.LittleEndian.Uint64(blk[8:16])
	}
}

// decryptSector decrypts every block independently and then XORs each with
// the ciphertext block before it, which needs a copy of the ciphertext since
// the work is in place.
func (c *cbcEngine) decryptSector(b []byte, s *scratch) {
	n := len(b)
	ct := s.buf[:n:n]
	copy(ct, b)
	decryptBlocks(c.b, b)
	subtle.XORBytes(b[:16], b[:16], s.iv[:])
	subtle.XORBytes(b[16:], b[16:], ct[:n-16])
}
