package luks

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/cryptshift/cryptshift/errclass"
)

// LUKS1 is a validated LUKS1 phdr (docs/FORMAT.md). Integers are as
// recorded, in host order; strings are trimmed at their first NUL.
type LUKS1 struct {
	CipherName         string // "aes"
	CipherMode         string // "xts-plain64", "cbc-essiv:sha256"
	HashSpec           string // PBKDF2 and AF hash of every keyslot and of the digest
	PayloadOffset      uint32 // in 512-byte sectors; 0 for a detached header
	KeyBytes           uint32 // volume key length
	MKDigest           [mkDigestSize]byte
	MKDigestSalt       [saltSize]byte
	MKDigestIterations uint32
	UUID               string
	Keyslots           [numKeyslots1]Keyslot1
	// Raw is the phdr exactly as read, so that a later writer changes only
	// the fields it means to.
	Raw [phdrSize]byte
}

// Keyslot1 is one of the eight LUKS1 keyslots.
type Keyslot1 struct {
	Active            uint32 // slotEnabled, slotDisabled, or (invalid) anything else
	Iterations        uint32
	Salt              [saltSize]byte
	KeyMaterialOffset uint32 // in 512-byte sectors
	Stripes           uint32
}

// Enabled reports whether the slot holds a key.
func (k Keyslot1) Enabled() bool { return k.Active == slotEnabled }

// Cipher is the dm-crypt cipher spec of the volume (and of its keyslots).
func (h *LUKS1) Cipher() string { return h.CipherName + "-" + h.CipherMode }

// parseLUKS1 decodes and validates a LUKS1 phdr as cryptsetup's loader
// does: magic, then version, then the hash, then every keyslot (enabled or
// not) against the header, the payload and each other, then the device
// size. b holds at least phdrSize bytes.
func parseLUKS1(b []byte, devSize int64) (*LUKS1, error) {
	if !bytes.Equal(b[:6], magic1st) {
		return nil, fmt.Errorf("%w: no LUKS header (bad magic)", errclass.Device)
	}
	if v := binary.BigEndian.Uint16(b[6:8]); v != 1 {
		return nil, fmt.Errorf("%w: unsupported LUKS version %d", errclass.Header, v)
	}
	h := &LUKS1{
		CipherName:         cString(b[8:40]),
		CipherMode:         cString(b[40:72]),
		HashSpec:           cString(b[72:104]),
		PayloadOffset:      binary.BigEndian.Uint32(b[104:108]),
		KeyBytes:           binary.BigEndian.Uint32(b[108:112]),
		MKDigestIterations: binary.BigEndian.Uint32(b[164:168]),
		UUID:               cString(b[168:208]),
	}
	copy(h.MKDigest[:], b[112:132])
	copy(h.MKDigestSalt[:], b[132:164])
	copy(h.Raw[:], b[:phdrSize])
	for i := range h.Keyslots {
		o := keyslot1Offset + i*keyslot1Size
		k := &h.Keyslots[i]
		k.Active = binary.BigEndian.Uint32(b[o:])
		k.Iterations = binary.BigEndian.Uint32(b[o+4:])
		copy(k.Salt[:], b[o+8:o+40])
		k.KeyMaterialOffset = binary.BigEndian.Uint32(b[o+40:])
		k.Stripes = binary.BigEndian.Uint32(b[o+44:])
	}
	if !hashKnown(h.HashSpec) {
		return nil, fmt.Errorf("%w: LUKS1 header names hash %q, which cryptsetup does not know either", errclass.Header, h.HashSpec)
	}
	if h.KeyBytes == 0 {
		return nil, fmt.Errorf("%w: LUKS1 header has a volume key of 0 bytes", errclass.Header)
	}
	if err := h.checkKeyslots(); err != nil {
		return nil, err
	}
	if need := h.end(); need > uint64(devSize) {
		return nil, fmt.Errorf("%w: device is too small: its LUKS1 header and keyslots need at least %d bytes, it has %d", errclass.Device, need, devSize)
	}
	return h, nil
}

// checkKeyslots refuses keyslots whose material would overlap the phdr,
// the payload or another keyslot: cryptsetup checks all eight, enabled or
// not, because every one will be written with the volume's key size.
func (h *LUKS1) checkKeyslots() error {
	secs := afSectors(uint64(h.KeyBytes))
	for i, k := range h.Keyslots {
		switch {
		case k.Stripes != stripes:
			return fmt.Errorf("%w: LUKS keyslot %d is invalid: %d AF stripes, not %d", errclass.Header, i, k.Stripes, stripes)
		case uint64(k.KeyMaterialOffset)*sectorSize < phdrSize:
			return fmt.Errorf("%w: LUKS keyslot %d is invalid: its key material at sector %d overlaps the LUKS header", errclass.Header, i, k.KeyMaterialOffset)
		case h.PayloadOffset == 0: // detached header: no payload to collide with
		case h.PayloadOffset <= k.KeyMaterialOffset:
			return fmt.Errorf("%w: LUKS keyslot %d is invalid: its key material at sector %d lies in the data area (payload offset %d)", errclass.Header, i, k.KeyMaterialOffset, h.PayloadOffset)
		case uint64(h.PayloadOffset) < uint64(k.KeyMaterialOffset)+secs:
			return fmt.Errorf("%w: LUKS keyslot %d is invalid: its key material (sectors %d to %d) runs into the data area (payload offset %d)", errclass.Header, i, k.KeyMaterialOffset, uint64(k.KeyMaterialOffset)+secs, h.PayloadOffset)
		}
	}
	order := h.slotOrder()
	for i := 1; i < len(order); i++ {
		prev, next := h.Keyslots[order[i-1]], h.Keyslots[order[i]]
		if uint64(next.KeyMaterialOffset) < uint64(prev.KeyMaterialOffset)+secs {
			return fmt.Errorf("%w: LUKS keyslot %d is invalid: its key material overlaps that of keyslot %d", errclass.Header, order[i-1], order[i])
		}
	}
	return nil
}

// slotOrder is the keyslot numbers sorted by material offset.
func (h *LUKS1) slotOrder() []int {
	order := []int{0, 1, 2, 3, 4, 5, 6, 7}
	sort.SliceStable(order, func(a, b int) bool {
		return h.Keyslots[order[a]].KeyMaterialOffset < h.Keyslots[order[b]].KeyMaterialOffset
	})
	return order
}

// end is the byte offset just past the last keyslot's material.
func (h *LUKS1) end() uint64 {
	last := h.Keyslots[h.slotOrder()[numKeyslots1-1]]
	return (uint64(last.KeyMaterialOffset) + afSectors(uint64(h.KeyBytes))) * sectorSize
}
