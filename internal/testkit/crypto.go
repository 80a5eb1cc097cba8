package testkit

import (
	"fmt"
	"sync/atomic"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// CryptoDevices stands in for the private dm-crypt mappings of a conversion
// with kernel crypto (engine.CryptoDevices) over Data: the crypto happens
// below the engine, each write of plaintext is one write of ciphertext to
// Data at the same place, and a flush is Data's flush, as dm-crypt passes
// it down. So over a simulated disk the crash semantics are the disk's. It
// counts what went through it.
type CryptoDevices struct {
	Data   blockdev.Device
	Opened atomic.Int64
	// Reads and Writes count bytes; the engine reads ahead while it
	// writes the previous window.
	Reads, Writes atomic.Int64
	// Sealed counts bytes Seal encrypted.
	Sealed atomic.Int64
	// sealer is the new mapping's cipher, for Seal.
	sealer sectorcipher.Cipher
}

// Seal implements engine.Sealer: buf is encrypted as the new device would
// store it at data byte start, and nothing is written.
func (s *CryptoDevices) Seal(buf []byte, start int64) error {
	if s.sealer == nil {
		return fmt.Errorf("testkit crypt: Seal before Open")
	}
	if start%512 != 0 || len(buf)%s.sealer.SectorSize() != 0 {
		return fmt.Errorf("testkit crypt: Seal [%d, +%d) is not whole sectors", start, len(buf))
	}
	s.sealer.Encrypt(buf, uint64(start)/512)
	s.Sealed.Add(int64(len(buf)))
	return nil
}

// Open returns the old and the new mapping of h's data area.
func (s *CryptoDevices) Open(h *header.Header, oldKey, newKey []byte) (blockdev.Device, blockdev.Device, error) {
	s.Opened.Add(1)
	mk := func(m header.Mapping, key []byte, base uint64) (blockdev.Device, error) {
		mm, err := m.WithKey(key)
		if err != nil {
			return nil, err
		}
		c, err := sectorcipher.New(mm)
		if err != nil {
			return nil, err
		}
		return &cryptDev{s: s, base: int64(base), size: int64(h.DataSize), c: c}, nil
	}
	old, err := mk(h.Old, oldKey, h.OldOffset)
	if err != nil {
		return nil, nil, err
	}
	nw, err := mk(h.New, newKey, h.NewOffset)
	if err != nil {
		return nil, nil, err
	}
	s.sealer = nw.(*cryptDev).c
	return old, nw, nil
}

// cryptDev is one mapping of the data area: logical byte 0 at base on Data.
type cryptDev struct {
	s    *CryptoDevices
	base int64
	size int64
	c    sectorcipher.Cipher
}

// check refuses what dm-crypt would: I/O that is not whole sectors or runs
// past the mapping.
func (d *cryptDev) check(p []byte, off int64) error {
	if off < 0 || off%512 != 0 || len(p)%512 != 0 || off+int64(len(p)) > d.size {
		return fmt.Errorf("testkit crypt: [%d, +%d) is not whole sectors of the %d-byte mapping", off, len(p), d.size)
	}
	return nil
}

func (d *cryptDev) ReadAt(p []byte, off int64) (int, error) {
	if err := d.check(p, off); err != nil {
		return 0, err
	}
	n, err := d.s.Data.ReadAt(p, d.base+off)
	if err != nil {
		return n, err
	}
	d.c.Decrypt(p, uint64(off)/512)
	d.s.Reads.Add(int64(n))
	return n, nil
}

func (d *cryptDev) WriteAt(p []byte, off int64) (int, error) {
	if err := d.check(p, off); err != nil {
		return 0, err
	}
	ct := append([]byte(nil), p...)
	d.c.Encrypt(ct, uint64(off)/512)
	n, err := d.s.Data.WriteAt(ct, d.base+off)
	d.s.Writes.Add(int64(n))
	return n, err
}

func (d *cryptDev) Flush() error { return d.s.Data.Flush() }
func (d *cryptDev) Size() int64  { return d.size }
func (d *cryptDev) Close() error { return nil }
