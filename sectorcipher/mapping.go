package sectorcipher

import "fmt"

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
