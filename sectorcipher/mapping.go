package sectorcipher

import (
	"bytes"
	"fmt"
)

// Mapping is the part of a dm-crypt table line that decides what ends up on
// disk: the cipher spec, the key, and the sector and IV options.
type Mapping struct {
	Spec           Spec
	Key            []byte
	SectorSize     int    // dm-crypt sector_size: 512, 1024, 2048 or 4096
	IVOffset       uint64 // the table's iv_offset field, in 512-byte units
	IVLargeSectors bool   // dm-crypt's iv_large_sectors option
}

// Validate refuses what dm-crypt's constructor refuses for this mapping (see
// the package documentation), so that a Mapping that validates here also
// loads as a kernel table.
func (m Mapping) Validate() error {
	if !m.Spec.valid() {
		return fmt.Errorf("sectorcipher: invalid mapping: zero Spec (use ParseSpec)")
	}
	if err := m.Spec.CheckKey(m.Key); err != nil {
		return fmt.Errorf("invalid mapping: %w", err)
	}
	switch m.SectorSize {
	case 512, 1024, 2048, 4096:
	default:
		return fmt.Errorf("sectorcipher: invalid mapping: sector_size %d; dm-crypt allows 512, 1024, 2048 or 4096",
			m.SectorSize)
	}
	if step := uint64(m.SectorSize / 512); m.IVOffset%step != 0 {
		return fmt.Errorf("sectorcipher: invalid mapping: iv_offset %d is not a multiple of %d (sector_size %d in 512-byte units), which dm-crypt refuses",
			m.IVOffset, step, m.SectorSize)
	}
	return nil
}

// CheckLength reports whether a target of len512 512-byte sectors can carry
// this mapping: dm-crypt refuses a target length that is not a multiple of
// sector_size. It assumes a valid SectorSize.
func (m Mapping) CheckLength(len512 uint64) error {
	if m.SectorSize < 512 {
		return fmt.Errorf("sectorcipher: invalid sector_size %d", m.SectorSize)
	}
	if step := uint64(m.SectorSize / 512); len512%step != 0 {
		return fmt.Errorf("sectorcipher: target length of %d 512-byte sectors is not a multiple of sector_size %d, which dm-crypt refuses",
			len512, m.SectorSize)
	}
	return nil
}

// Equivalent reports whether m and o turn every ciphertext sector into the
// same plaintext: the same spec and, for a cipher, the same key, sector size
// and IV options. Plaintext ("none") reads the same whatever its IV and
// sector options say, so two plaintext mappings are equivalent whatever
// those fields hold. This is the rule both callers need: a conversion
// between equivalent mappings would rewrite every byte with itself (engine
// refuses it), and a live table whose options differ only where they cannot
// change a byte serves the same data (dm accepts it). Comparing every field
// instead would let a plaintext table that dm-linear or a reparsed crypt
// line spells differently pass for a different mapping.
func (m Mapping) Equivalent(o Mapping) bool {
	if m.Spec != o.Spec {
		return false
	}
	if m.Spec.IsNone() {
		return true
	}
	return bytes.Equal(m.Key, o.Key) && m.SectorSize == o.SectorSize &&
		m.IVOffset == o.IVOffset && m.IVLargeSectors == o.IVLargeSectors
}
