package header

import (
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
