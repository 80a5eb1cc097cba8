package luks

import (
	"crypto/rand"
	"fmt"
	"sort"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
)

// KeyslotMaterial is the encrypted key material of a keyslot added to a
// draft. It must be written (WriteKeyslotMaterial) and durable before the
// draft is committed, since the committed header points at it.
type KeyslotMaterial struct {
	Slot   int
	Offset int64
	data   *Key
}

// Bytes is the material, a whole number of 512-byte sectors.
func (m *KeyslotMaterial) Bytes() []byte { return m.data.Bytes() }

// Wipe releases the material's memory.
func (m *KeyslotMaterial) Wipe() { m.data.Wipe() }

// firstFit places an area of size bytes as cryptsetup does: the lowest
// offset from the end of the two metadata copies at which it overlaps no
// keyslot's area (of any type) and ends within the keyslots area.
func firstFit(m *Metadata, hdrSize, size uint64) (uint64, error) {
	type span struct{ lo, hi uint64 }
	var used []span
	for _, k := range m.Keyslots {
		used = append(used, span{k.Area.Offset, k.Area.Offset + k.Area.Size})
	}
	sort.Slice(used, func(i, j int) bool { return used[i].lo < used[j].lo })
	pos, end := 2*hdrSize, 2*hdrSize+m.Config.KeyslotsSize
	for _, u := range used {
		if u.lo >= pos+size {
			break
		}
		pos = max(pos, u.hi)
	}
	if pos+size > end {
		return 0, fmt.Errorf("%w: no room for a keyslot of %d bytes in the LUKS2 keyslots area (%d bytes)", errclass.Device, size, m.Config.KeyslotsSize)
	}
	return pos, nil
}

// WriteKeyslotMaterial writes a new keyslot's material into its area and
// flushes (flush point luks-keyslot-material), so that it is durable before
// any header that points at it.
func WriteKeyslotMaterial(dev blockdev.Device, m *KeyslotMaterial) error {
	if _, err := dev.WriteAt(m.Bytes(), m.Offset); err != nil {
		return errclass.IOf(fmt.Sprintf("luks: write keyslot %d material", m.Slot), err)
	}
	if err := dev.Flush(); err != nil {
		return errclass.IOf(fmt.Sprintf("luks: flush keyslot %d material", m.Slot), err)
	}
	return nil
}

// WipeKeyslotArea overwrites a keyslot area with random bytes from
// crypto/rand and flushes (flush point luks-keyslot-wipe). Random, not
// zeros: a drive that compresses or deduplicates must really write
// incompressible data, and the area then looks like any keyslot's
// material. Call it only after the commit that dropped the keyslot is
// durable; before, the old header still needs the material.
func WipeKeyslotArea(dev blockdev.Device, a Area) error {
	if err := writeRandom(dev, a); err != nil {
		return err
	}
	if err := dev.Flush(); err != nil {
		return errclass.IOf("luks: flush keyslot wipe", err)
	}
	return nil
}

// writeRandom overwrites an area with bytes from crypto/rand, unflushed.
func writeRandom(dev blockdev.Device, a Area) error {
	const chunk = 1 << 20
	buf := make([]byte, min(a.Size, chunk))
	for off := uint64(0); off < a.Size; off += uint64(len(buf)) {
		n := min(uint64(len(buf)), a.Size-off)
		if _, err := rand.Read(buf[:n]); err != nil {
			return fmt.Errorf("luks: random bytes for a keyslot wipe: %w", err)
		}
		if _, err := dev.WriteAt(buf[:n], int64(a.Offset+off)); err != nil {
			return errclass.IOf(fmt.Sprintf("luks: wipe keyslot area at %d", a.Offset+off), err)
		}
	}
	return nil
}
