package luks

import (
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// DataMapping is the dm-crypt mapping stock cryptsetup sets up for the
// data area: `0 Size/512 crypt Spec KEY IVOffset DEVICE Offset/512
// [sector_size:N]`.
type DataMapping struct {
	// Mapping.Key is the volume key's memory itself: valid until the
	// Unlocked key is wiped.
	Mapping sectorcipher.Mapping
	Offset  int64 // bytes from the start of the device to the data
	Size    int64 // bytes of data
}

// Mapping returns the mapping of the data area for an unlocked volume key.
// It refuses what cryptshift cannot map the way cryptsetup does: detached
// headers, several segments (a cryptsetup reencryption in progress),
// integrity, and ciphers sectorcipher lacks.
func (v *Volume) Mapping(u *Unlocked) (*DataMapping, error) {
	if v.V1 != nil {
		h := v.V1
		if h.PayloadOffset == 0 {
			return nil, fmt.Errorf("%w: LUKS1 header is detached (payload offset 0): its data is on another device", errclass.Device)
		}
		return v.finish(h.Cipher(), u, 512, 0, int64(h.PayloadOffset)*sectorSize, 0, true)
	}
	m := v.V2.Meta
	for _, r := range m.Config.Mandatory {
		if reencryptFlag(r) || r == "offline-reencrypt" {
			return nil, fmt.Errorf("%w: the LUKS2 volume is in the middle of a cryptsetup reencryption (requirement %q): finish it with `cryptsetup reencrypt --resume-only` first", errclass.Device, r)
		}
	}
	if len(m.Segments) != 1 {
		return nil, fmt.Errorf("%w: the LUKS2 volume has %d segments; cryptshift maps only single-segment volumes", errclass.Device, len(m.Segments))
	}
	g := m.Segments[0]
	if g.Type != "crypt" {
		return nil, fmt.Errorf("%w: LUKS2 segment 0 is of type %q, not crypt", errclass.Device, g.Type)
	}
	if g.Integrity != nil {
		return nil, fmt.Errorf("%w: LUKS2 segment 0 has integrity protection (dm-integrity), which cryptshift does not support", errclass.Device)
	}
	if g.Offset == 0 {
		return nil, fmt.Errorf("%w: LUKS2 header is detached (data offset 0): its data is on another device", errclass.Device)
	}
	covered := false
	for _, s := range m.Digests[u.Digest].Segments {
		covered = covered || s == 0
	}
	if !covered {
		return nil, fmt.Errorf("%w: keyslot %d is not bound to the data segment: its key is not the volume key", errclass.Usage, u.Slot)
	}
	return v.finish(g.Encryption, u, int(g.SectorSize), g.IVTweak, int64(g.Offset), int64(g.Size), g.Dynamic)
}

func (v *Volume) finish(cipher string, u *Unlocked, sector int, ivOffset uint64, off, size int64, dynamic bool) (*DataMapping, error) {
	spec, err := sectorcipher.ParseSpec(cipher)
	if err != nil {
		return nil, fmt.Errorf("%w: data cipher %q is not supported by cryptshift (supported: %s)", errclass.Device, cipher, supportedSpecs())
	}
	if dynamic {
		size = v.size - off
	}
	if size <= 0 || off+size > v.size {
		return nil, fmt.Errorf("%w: the data area (offset %d, size %d) does not fit the device of %d bytes", errclass.Device, off, size, v.size)
	}
	// Devices are sized in 512-byte sectors (an image file's odd tail is
	// not part of the device); dm-crypt refuses a target that is not a
	// whole number of the volume's sectors.
	size -= size % sectorSize
	if size%int64(sector) != 0 {
		return nil, fmt.Errorf("%w: the data area of %d bytes is not a multiple of the volume's %d-byte sector size", errclass.Device, size, sector)
	}
	dm := &DataMapping{
		Mapping: sectorcipher.Mapping{Spec: spec, Key: u.Key.Bytes(), SectorSize: sector, IVOffset: ivOffset},
		Offset:  off,
		Size:    size,
	}
	if err := dm.Mapping.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", errclass.Header, err)
	}
	if size == 0 {
		return nil, fmt.Errorf("%w: the data area is smaller than one sector", errclass.Device)
	}
	return dm, nil
}
