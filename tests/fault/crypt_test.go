package fault

import (
	"fmt"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// simCryptoDevices stands in for the private dm-crypt mappings of an online
// conversion with kernel crypto (engine.CryptoDevices): the crypto happens
// below the engine, and what reaches the disk is one write of ciphertext
// per write of plaintext, with the disk's own crash semantics (any subset,
// torn sectors) and a flush that is the disk's flush, as dm-crypt passes
// it down.
type simCryptoDevices struct {
	data blockdev.Device
}

func (s simCryptoDevices) Open(h *header.Header, oldKey, newKey []byte) (blockdev.Device, blockdev.Device, error) {
	mk := func(m header.Mapping, key []byte, base uint64) (blockdev.Device, error) {
		mm, err := m.WithKey(key)
		if err != nil {
			return nil, err
		}
		c, err := sectorcipher.New(mm)
		if err != nil {
			return nil, err
		}
		return &simCrypt{dev: s.data, base: int64(base), size: int64(h.DataSize), c: c}, nil
	}
	old, err := mk(h.Old, oldKey, h.OldOffset)
	if err != nil {
		return nil, nil, err
	}
	nw, err := mk(h.New, newKey, h.NewOffset)
	if err != nil {
		return nil, nil, err
	}
	return old, nw, nil
}

// simCrypt is one mapping of the data area: logical byte 0 at base on dev.
type simCrypt struct {
	dev  blockdev.Device
	base int64
	size int64
	c    sectorcipher.Cipher
}

func (m *simCrypt) check(p []byte, off int64) error {
	if off < 0 || off%512 != 0 || len(p)%512 != 0 || off+int64(len(p)) > m.size {
		return fmt.Errorf("simcrypt: [%d, +%d) is not whole sectors of the %d-byte mapping", off, len(p), m.size)
	}
	return nil
}

func (m *simCrypt) ReadAt(p []byte, off int64) (int, error) {
	if err := m.check(p, off); err != nil {
		return 0, err
	}
	n, err := m.dev.ReadAt(p, m.base+off)
	if err != nil {
		return n, err
	}
	m.c.Decrypt(p, uint64(off)/512)
	return n, nil
}

func (m *simCrypt) WriteAt(p []byte, off int64) (int, error) {
	if err := m.check(p, off); err != nil {
		return 0, err
	}
	ct := append([]byte(nil), p...)
	m.c.Encrypt(ct, uint64(off)/512)
	return m.dev.WriteAt(ct, m.base+off)
}

func (m *simCrypt) Flush() error { return m.dev.Flush() }
func (m *simCrypt) Size() int64  { return m.size }
func (m *simCrypt) Close() error { return nil }
