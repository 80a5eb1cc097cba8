package luks

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/pbkdf2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// Draft1 is a LUKS1 phdr being changed: one keyslot per commit, so that
// the commit can order its sector writes (docs/DESIGN.md, "LUKS header
// commits").
type Draft1 struct {
	base, phdr [phdrSize]byte
	changed    int // the keyslot changed, -1 before any change
}

// Draft copies the phdr into a draft.
func (h *LUKS1) Draft() *Draft1 {
	return &Draft1{base: h.Raw, phdr: h.Raw, changed: -1}
}

func (d *Draft1) header() (*LUKS1, error) {
	b := make([]byte, binHeaderSize)
	copy(b, d.phdr[:])
	// The size check belongs to the commit, which knows the device.
	return parseLUKS1Marked(b, 1<<62)
}

func (d *Draft1) claim(slot int) error {
	if slot < 0 || slot >= numKeyslots1 {
		return fmt.Errorf("%w: LUKS1 keyslot %d: keyslots are 0 to 7", errclass.Usage, slot)
	}
	if d.changed >= 0 && d.changed != slot {
		return fmt.Errorf("%w: LUKS1 drafts change one keyslot per commit (keyslot %d already changed)", errclass.Usage, d.changed)
	}
	return nil
}

// AddKeyslot fills a disabled LUKS1 keyslot (slot, or with AnySlot the
// lowest disabled one) with key under pass: PBKDF2 with the header's hash
// and the given iterations over a fresh salt, at the slot's fixed material
// offset. key must match the header's digest. It returns the material, to
// be written (WriteKeyslotMaterial) before the commit.
func (d *Draft1) AddKeyslot(slot int, key, pass []byte, iterations uint32) (*KeyslotMaterial, error) {
	h, err := d.header()
	if err != nil {
		return nil, err
	}
	if slot == AnySlot {
		for i, k := range h.Keyslots {
			if !k.Enabled() {
				slot = i
				break
			}
		}
		if slot == AnySlot {
			return nil, fmt.Errorf("%w: all eight LUKS1 keyslots are in use", errclass.Device)
		}
	}
	if err := d.claim(slot); err != nil {
		return nil, err
	}
	if h.Keyslots[slot].Enabled() {
		return nil, fmt.Errorf("%w: LUKS1 keyslot %d is in use", errclass.Usage, slot)
	}
	if iterations < 1000 {
		return nil, fmt.Errorf("%w: PBKDF2 iterations %d below cryptsetup's minimum of 1000", errclass.Usage, iterations)
	}
	hf, err := hashFunc(h.HashSpec, "LUKS1 keyslot")
	if err != nil {
		return nil, err
	}
	dsum := pbkdf2.Key(key, h.MKDigestSalt[:], int(h.MKDigestIterations), mkDigestSize, hf)
	ok := len(key) == int(h.KeyBytes) && subtle.ConstantTimeCompare(dsum, h.MKDigest[:]) == 1
	wipe(dsum)
	if !ok {
		return nil, fmt.Errorf("%w: the key does not match the LUKS1 header's volume key digest", errclass.WrongKey)
	}
	spec, err := sectorcipher.ParseSpec(h.Cipher())
	if err != nil || spec.IsNone() {
		return nil, fmt.Errorf("%w: LUKS1 cipher %q is not supported by cryptshift (supported: %s)", errclass.Device, h.Cipher(), supportedSpecs())
	}
	var salt [saltSize]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return nil, fmt.Errorf("luks: keyslot salt: %w", err)
	}
	kdf := KDF{Type: "pbkdf2", Hash: h.HashSpec, Iterations: int64(iterations), Salt: salt[:]}
	mat, err := sealMaterial(key, pass, kdf, spec, int(h.KeyBytes), hf, fmt.Sprintf("new LUKS1 keyslot %d", slot))
	if err != nil {
		return nil, err
	}
	o := keyslot1Offset + slot*keyslot1Size
	binary.BigEndian.PutUint32(d.phdr[o:], slotEnabled)
	binary.BigEndian.PutUint32(d.phdr[o+4:], iterations)
	copy(d.phdr[o+8:o+40], salt[:])
	d.changed = slot
	return &KeyslotMaterial{Slot: slot, Offset: int64(h.Keyslots[slot].KeyMaterialOffset) * sectorSize, data: mat}, nil
}

// RemoveKeyslot disables an enabled LUKS1 keyslot (iterations and salt
// zeroed, as cryptsetup leaves a disabled one) and returns its material's
// area, to be wiped once the commit is durable. The last enabled keyslot is
// refused: the volume key would be lost.
func (d *Draft1) RemoveKeyslot(slot int) (Area, error) {
	h, err := d.header()
	if err != nil {
		return Area{}, err
	}
	if err := d.claim(slot); err != nil {
		return Area{}, err
	}
	if !h.Keyslots[slot].Enabled() {
		return Area{}, fmt.Errorf("%w: LUKS1 keyslot %d is not active", errclass.Usage, slot)
	}
	n := 0
	for _, k := range h.Keyslots {
		if k.Enabled() {
			n++
		}
	}
	if n == 1 {
		return Area{}, fmt.Errorf("%w: LUKS1 keyslot %d is the last active one: removing it would lose the data", errclass.Refused, slot)
	}
	o := keyslot1Offset + slot*keyslot1Size
	binary.BigEndian.PutUint32(d.phdr[o:], slotDisabled)
	clear(d.phdr[o+4 : o+40])
	d.changed = slot
	return Area{Type: "raw", Offset: uint64(h.Keyslots[slot].KeyMaterialOffset) * sectorSize, Size: afSectors(uint64(h.KeyBytes)) * sectorSize}, nil
}

// CommitLUKS1 writes the draft's keyslot change over the single LUKS1
// phdr, sector by sector, so that each step is one atomic sector write
// under the disk model: when a keyslot is enabled, the sectors holding its
// other fields first (flush luks1-keyslot-fields), then the sector holding
// its state (flush luks1-keyslot-state); when one is disabled, the state
// first, then the rest. The slot of keyslot 6 straddles the first two
// sectors, which is why the order matters. It rereads the phdr first and
// refuses (Conflict) if it changed since the draft.
func CommitLUKS1(dev blockdev.Device, d *Draft1) error {
	if d.changed < 0 {
		return nil
	}
	cur := make([]byte, phdrSize)
	if _, err := readAt(dev, cur, 0, dev.Size()); err != nil {
		return err
	}
	if !bytes.Equal(cur, d.base[:]) {
		return fmt.Errorf("%w: the LUKS1 header changed since it was read: refusing to overwrite it", errclass.Conflict)
	}
	b := make([]byte, binHeaderSize)
	copy(b, d.phdr[:])
	if _, err := parseLUKS1Marked(b, dev.Size()); err != nil {
		return err
	}
	o := keyslot1Offset + d.changed*keyslot1Size
	stateSector := o / sectorSize
	enabling := binary.BigEndian.Uint32(d.phdr[o:]) == slotEnabled
	var rest []int
	for s := 0; s*sectorSize < phdrSize; s++ {
		lo, hi := s*sectorSize, min((s+1)*sectorSize, phdrSize)
		if s != stateSector && !bytes.Equal(d.phdr[lo:hi], d.base[lo:hi]) {
			rest = append(rest, s)
		}
	}
	steps := [][]int{rest, {stateSector}}
	if !enabling {
		steps = [][]int{{stateSector}, rest}
	}
	for _, step := range steps {
		if len(step) == 0 {
			continue
		}
		for _, s := range step {
			lo, hi := s*sectorSize, min((s+1)*sectorSize, phdrSize)
			// Whole sectors: the bytes past the phdr in sector 1 are read
			// back as they are, so the write is one atomic sector.
			sec := make([]byte, sectorSize)
			if _, err := readAt(dev, sec, int64(s*sectorSize), dev.Size()); err != nil {
				return err
			}
			copy(sec, d.phdr[lo:hi])
			if _, err := dev.WriteAt(sec, int64(s*sectorSize)); err != nil {
				return errclass.IOf(fmt.Sprintf("luks: write LUKS1 header sector %d", s), err)
			}
		}
		if err := dev.Flush(); err != nil {
			return errclass.IOf("luks: flush LUKS1 header", err)
		}
	}
	return nil
}
