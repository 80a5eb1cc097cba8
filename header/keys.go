package header

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/hkdf"
)

// KCV is the key check value stored for a key: it lets a wrong key be
// refused before anything is written, and reveals nothing useful about the
// key (an HMAC under the key itself, bound to this conversion's UUID).
func KCV(key []byte, uuid [16]byte) [32]byte {
	var out [32]byte
	if len(key) == 0 {
		return out // plaintext side: nothing to check
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("cryptshift key check v1\x00"))
	m.Write(uuid[:])
	copy(out[:], m.Sum(nil))
	return out
}

// MACKey derives the key that authenticates the header, the log records and
// the digest table. It depends on both keys, so whoever can forge recovery
// state could already read the data (the lesson of CVE-2021-4122).
func MACKey(oldKey, newKey []byte, uuid [16]byte) ([]byte, error) {
	secret := make([]byte, 0, 16+len(oldKey)+len(newKey))
	// Length prefixes keep (a, bc) and (ab, c) apart.
	secret = binary.LittleEndian.AppendUint64(secret, uint64(len(oldKey)))
	secret = append(secret, oldKey...)
	secret = binary.LittleEndian.AppendUint64(secret, uint64(len(newKey)))
	secret = append(secret, newKey...)
	out := make([]byte, 32)
	if _, err := io.ReadFull(hkdf.New(sha256.New, secret, uuid[:], []byte("cryptshift mac v1")), out); err != nil {
		return nil, fmt.Errorf("derive MAC key: %w", err)
	}
	return out, nil
}

// DigestEntry is what the digest table stores for a converted window: an
// HMAC binding the window index to the SHA-256 of its plaintext, so that an
// entry cannot be forged or moved to another window.
func DigestEntry(macKey []byte, window uint64, plainSHA [32]byte) [DigestEntrySize]byte {
	m := hmac.New(sha256.New, macKey)
	m.Write([]byte("cryptshift window digest v1\x00"))
	var idx [8]byte
	binary.LittleEndian.PutUint64(idx[:], window)
	m.Write(idx[:])
	m.Write(plainSHA[:])
	var out [DigestEntrySize]byte
	copy(out[:], m.Sum(nil))
	return out
}

// Summer computes the keyed 16-byte digests cryptshift takes of bulk data
// (window plaintext, checksum units, log payloads): GMAC, i.e. AES-256-GCM
// with nothing to encrypt and the data as additional data, under a key
// derived from the MAC key. It runs several times faster than SHA-256 on
// CPUs with AES and carry-less multiply instructions, and without the keys
// nobody can predict or match a digest. Each use passes a distinct nonce
// (see docs/FORMAT.md, "Keyed digests"). Safe for concurrent use.
type Summer struct{ aead cipher.AEAD }

// Nonce domains of the Summer.
const (
	SumWindowChunk = 1 // a (window, chunk) of plaintext
	SumUnitOld     = 2 // a (step, unit) of old ciphertext
	SumUnitNew     = 3 // a (step, unit) of new ciphertext
	SumLogPayload  = 4 // the payload of the log record with sequence a
)

// NewSummer derives the GMAC key from the MAC key.
func NewSummer(macKey []byte) (*Summer, error) {
	k := make([]byte, 32)
	if _, err := io.ReadFull(hkdf.New(sha256.New, macKey, nil, []byte("cryptshift gmac v1")), k); err != nil {
		return nil, fmt.Errorf("derive digest key: %w", err)
	}
	blk, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("digest key: %w", err)
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("digest key: %w", err)
	}
	return &Summer{aead: g}, nil
}

// Sum returns the digest of data under nonce (domain, a, b): byte 0 is the
// domain, bytes 1-7 the low 56 bits of a (little-endian), bytes 8-11 b.
func (s *Summer) Sum(domain byte, a uint64, b uint32, data []byte) [16]byte {
	var nonce [12]byte
	binary.LittleEndian.PutUint64(nonce[0:8], a<<8|uint64(domain))
	binary.LittleEndian.PutUint32(nonce[8:12], b)
	var out [16]byte
	var buf [16]byte
	copy(out[:], s.aead.Seal(buf[:0], nonce[:], nil, data))
	return out
}
