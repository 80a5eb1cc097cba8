package luks

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"sort"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
)

// Carry2 is a passphrase to carry over into a new LUKS2 keyslot.
type Carry2 struct {
	// Slot is the LUKS1 keyslot the passphrase opens, or AnySlot. The
	// LUKS2 keyslot gets the same number.
	Slot int
	Pass []byte
	// KDF of the new keyslot: Type "argon2id" (if ""), "argon2i" or
	// "pbkdf2", with its costs (always the caller's).
	KDF KDF
}

// LUKS1ToLUKS2Params describe the LUKS2 header that replaces a LUKS1 one.
type LUKS1ToLUKS2Params struct {
	// Keep lists every passphrase to carry over; active LUKS1 keyslots
	// not listed are not carried.
	Keep []Carry2
	// Key is the LUKS2 volume key: nil keeps the LUKS1 one. A new key is
	// right only once the data are under it.
	Key        []byte
	Cipher     string // "" keeps the LUKS1 cipher
	SectorSize int    // 512 if 0
	// MetadataSize of one copy (16 KiB if 0). DataOffset is where the data
	// start under the LUKS2 header: 0 for the LUKS1 payload offset, more
	// once the data have moved to make room (a shift): Commit then writes
	// keyslots into, and wipes, the bytes between the LUKS1 payload and
	// DataOffset, which must no longer hold data.
	MetadataSize, DataOffset uint64
	Label, Subsystem         string
	DigestIterations         int    // of the new pbkdf2 digest, at least 1000
	AFHash                   string // sha256 if ""
}

// LUKS1ToLUKS2 is a planned replacement of a LUKS1 header by a LUKS2
// header with the same UUID (docs/DESIGN.md, "LUKS1 to LUKS2").
type LUKS1ToLUKS2 struct {
	base   [phdrSize]byte
	oldKey *Key
	drop   []int
	moves  []relayMove
	// Draft is the LUKS2 header Commit writes (seqid 1).
	Draft *Draft2
	mats  []*KeyslotMaterial
	// Slots is each kept passphrase's LUKS2 keyslot, by index in Keep.
	Slots []int
}

// Wipe releases the plan's key memory.
func (c *LUKS1ToLUKS2) Wipe() {
	c.oldKey.Wipe()
	for _, m := range c.mats {
		m.Wipe()
	}
}

// PlanLUKS1ToLUKS2 plans the LUKS2 header that replaces v's LUKS1 header
// (marked as in conversion or not): same UUID, one keyslot per kept
// passphrase with the KDF given, the old or a new volume key and cipher,
// one crypt segment at the data offset. The two metadata copies and the
// keyslots must fit in front of the data beside the LUKS1 keyslots that
// stay in use until the switch; when they do not, the error (Device, one
// line) says which data offset, and so which shift of the data, would make
// room. It writes nothing.
func PlanLUKS1ToLUKS2(v *Volume, oldKey []byte, p LUKS1ToLUKS2Params) (*LUKS1ToLUKS2, error) {
	o, err := attachedLUKS1(v, oldKey, "converts")
	if err != nil {
		return nil, err
	}
	if p.MetadataSize == 0 {
		p.MetadataSize = DefaultMetadataSize
	}
	payload := uint64(o.PayloadOffset) * sectorSize
	if p.DataOffset == 0 {
		p.DataOffset = payload
	}
	if p.DataOffset < payload {
		return nil, fmt.Errorf("%w: data offset %d lies before the LUKS1 payload at %d", errclass.Usage, p.DataOffset, payload)
	}
	if p.Key == nil {
		p.Key = oldKey
	}
	if p.Cipher == "" {
		p.Cipher = o.Cipher()
	}
	if len(p.Keep) == 0 {
		return nil, fmt.Errorf("%w: no passphrase to carry over: the volume would have no keyslot", errclass.Usage)
	}
	kept, bySlot, err := keptSlots(v, oldKey, p.Keep)
	if err != nil {
		return nil, err
	}
	c := &LUKS1ToLUKS2{base: o.Raw, Slots: kept}
	front := func(s int) bool { return uint64(o.Keyslots[s].KeyMaterialOffset)*sectorSize < 2*p.MetadataSize }
	// LUKS1 keyslots in use until the switch must not lie where the LUKS2
	// copies go: kept ones move to a free keyslot further on, others go.
	live := map[int]bool{}
	for s, k := range o.Keyslots {
		if !k.Enabled() {
			continue
		}
		_, keep := bySlot[s]
		switch {
		case !front(s):
			live[s] = true
		case !keep:
			c.drop = append(c.drop, s)
		}
	}
	for i, s := range kept {
		if !front(s) {
			continue
		}
		to := -1
		for t, k := range o.Keyslots {
			if !k.Enabled() && !front(t) && !live[t] {
				to = t
				break
			}
		}
		if to < 0 {
			return nil, fmt.Errorf("%w: LUKS1 keyslot %d lies where the LUKS2 metadata goes and no free LUKS1 keyslot is left to move it to: keep fewer keyslots", errclass.Device, s)
		}
		live[to] = true
		c.moves = append(c.moves, relayMove{from: s, to: to, pass: p.Keep[i].Pass, iter: max(o.Keyslots[s].Iterations, 1000)}) // AddKeyslot takes no less than cryptsetup's minimum
	}
	secs := afSectors(uint64(o.KeyBytes))
	var busy []Area
	for s := range live {
		busy = append(busy, Area{Offset: uint64(o.Keyslots[s].KeyMaterialOffset) * sectorSize, Size: secs * sectorSize})
	}
	place := func(m *Metadata, hdrSize, size uint64) (uint64, error) {
		return fitAround(m, hdrSize, size, busy)
	}
	build := func(dataOffset uint64) (*Fresh2, error) {
		f, err := formatLUKS2(FormatParams{
			UUID: o.UUID, Label: p.Label, Subsystem: p.Subsystem, Cipher: p.Cipher, Key: p.Key,
			SectorSize: p.SectorSize, MetadataSize: p.MetadataSize, DataOffset: dataOffset,
			Pass: p.Keep[0].Pass, Keyslot: kept[0], KDF: p.Keep[0].KDF,
			DigestIterations: p.DigestIterations, AFHash: p.AFHash,
		}, place)
		if err != nil {
			return nil, err
		}
		mats := []*KeyslotMaterial{f.Material}
		for i := 1; i < len(kept); i++ {
			spec := KeyslotSpec{KDF: p.Keep[i].KDF, Encryption: p.Cipher, CipherKeySize: uint32(len(p.Key)), AFHash: p.AFHash}
			if spec.KDF.Type == "" {
				spec.KDF.Type = "argon2id"
			}
			if spec.AFHash == "" {
				spec.AFHash = "sha256"
			}
			m, err := f.Draft.addKeyslot(kept[i], p.Key, p.Keep[i].Pass, spec, 0, place)
			if err != nil {
				for _, m := range mats {
					m.Wipe()
				}
				return nil, err
			}
			mats = append(mats, m)
		}
		c.Draft, c.mats = f.Draft, mats
		return f, nil
	}
	if _, err := build(p.DataOffset); err != nil {
		if errclass.Code(err) != errclass.ExitDevice {
			return nil, err
		}
		// Room beyond the LUKS1 payload is never LUKS1 keyslot material.
		area := (uint64(len(p.Key))*stripes + 4095) / 4096 * 4096
		need := (payload + uint64(len(kept))*area + 1<<20 - 1) / (1 << 20) * (1 << 20)
		return nil, fmt.Errorf("%w: the LUKS2 header (two %d-byte metadata copies and %d keyslots of %d bytes) does not fit in front of the data at %d beside the LUKS1 keyslots in use until the switch: the data must move by %d bytes (data offset %d)", errclass.Device, p.MetadataSize, len(kept), area, p.DataOffset, need-payload, need)
	}
	if p.DataOffset >= uint64(v.size) {
		c.Wipe()
		return nil, fmt.Errorf("%w: data offset %d is beyond the device's %d bytes", errclass.Device, p.DataOffset, v.size)
	}
	var err2 error
	if c.oldKey, err2 = newKey(len(oldKey)); err2 != nil {
		c.Wipe()
		return nil, fmt.Errorf("luks: allocate key memory: %w", err2)
	}
	copy(c.oldKey.Bytes(), oldKey)
	return c, nil
}

// keptSlots finds the keyslot each kept passphrase opens, checks it gives
// oldKey, and refuses two passphrases for one keyslot.
func keptSlots[C Carry1 | Carry2](v *Volume, oldKey []byte, keep []C) ([]int, map[int]int, error) {
	kept := make([]int, len(keep))
	bySlot := map[int]int{}
	for i, c := range keep {
		slot, pass := carry(c)
		u, err := v.Unlock(pass, slot)
		if err != nil {
			return nil, nil, fmt.Errorf("kept passphrase %d: %w", i+1, err)
		}
		same := subtle.ConstantTimeCompare(u.Key.Bytes(), oldKey) == 1
		u.Wipe()
		if !same {
			return nil, nil, fmt.Errorf("%w: kept passphrase %d opens a keyslot of another volume key", errclass.WrongKey, i+1)
		}
		if j, dup := bySlot[u.Slot]; dup {
			return nil, nil, fmt.Errorf("%w: kept passphrases %d and %d open the same keyslot %d", errclass.Usage, j+1, i+1, u.Slot)
		}
		bySlot[u.Slot], kept[i] = i, u.Slot
	}
	return kept, bySlot, nil
}

func carry[C Carry1 | Carry2](c C) (int, []byte) {
	switch x := any(c).(type) {
	case Carry1:
		return x.Slot, x.Pass
	case Carry2:
		return x.Slot, x.Pass
	}
	panic("unreachable")
}

// fitAround is firstFit, 4 KiB aligned, that also avoids the busy areas
// (LUKS1 keyslot material still in use).
func fitAround(m *Metadata, hdrSize, size uint64, busy []Area) (uint64, error) {
	used := append([]Area(nil), busy...)
	for _, k := range m.Keyslots {
		used = append(used, k.Area)
	}
	sort.Slice(used, func(i, j int) bool { return used[i].Offset < used[j].Offset })
	pos, end := 2*hdrSize, 2*hdrSize+m.Config.KeyslotsSize
	for _, u := range used {
		if u.Offset >= pos+size {
			break
		}
		pos = max(pos, (u.Offset+u.Size+4095)/4096*4096)
	}
	if pos+size > end {
		return 0, fmt.Errorf("%w: no room for a keyslot of %d bytes in the LUKS2 keyslots area (%d bytes) beside the LUKS1 keyslots in use", errclass.Device, size, m.Config.KeyslotsSize)
	}
	return pos, nil
}

// runMoves makes the old-format LUKS1 commits of a plan: keyslots
// dropped, then kept passphrases moved (re-created in another keyslot,
// the old one removed), each an ordinary one-keyslot commit.
func runMoves(dev blockdev.Device, oldKey *Key, drop []int, moves []relayMove) error {
	commit := func(f func(d *Draft1) (*KeyslotMaterial, error)) error {
		_, h, err := readPhdrSectors(dev)
		if err != nil {
			return err
		}
		d := h.Draft()
		mat, err := f(d)
		if err != nil {
			return err
		}
		if mat != nil {
			err = WriteKeyslotMaterial(dev, mat)
			mat.Wipe()
			if err != nil {
				return err
			}
		}
		return CommitLUKS1(dev, d)
	}
	remove := func(s int) func(d *Draft1) (*KeyslotMaterial, error) {
		return func(d *Draft1) (*KeyslotMaterial, error) { _, err := d.RemoveKeyslot(s); return nil, err }
	}
	for _, s := range drop {
		if err := commit(remove(s)); err != nil {
			return err
		}
	}
	for _, m := range moves {
		if err := commit(func(d *Draft1) (*KeyslotMaterial, error) { return d.AddKeyslot(m.to, oldKey.Bytes(), m.pass, m.iter) }); err != nil {
			return err
		}
		if err := commit(remove(m.from)); err != nil {
			return err
		}
	}
	return nil
}

// Commit replaces the LUKS1 header by the LUKS2 one (docs/DESIGN.md,
// "LUKS1 to LUKS2"): the LUKS1 keyslots in the LUKS2 metadata's way are
// dropped or moved (LUKS1 commits), the LUKS2 keyslots' material is
// written where no LUKS1 keyslot in use lies (luks-keyslot-material), the
// secondary copy over what is now free space (luks2-convert-secondary),
// the primary's first sector, which switches every reader to LUKS2
// (luks2-convert-switch), the rest of the primary (luks2-convert-primary),
// and last the keyslots area outside the LUKS2 keyslots is overwritten
// (WipeLUKS2Unused). It refuses (Conflict) if the LUKS1 header changed
// since the plan.
func (c *LUKS1ToLUKS2) Commit(dev blockdev.Device) error {
	_, cur, err := readPhdrSectors(dev)
	if err != nil {
		return err
	}
	if cur.Raw != c.base {
		return fmt.Errorf("%w: the LUKS1 header changed since the conversion was planned: refusing to overwrite it", errclass.Conflict)
	}
	if err := runMoves(dev, c.oldKey, c.drop, c.moves); err != nil {
		return err
	}
	copies, err := EncodeLUKS2(c.Draft, 1)
	if err != nil {
		return err
	}
	for _, m := range c.mats {
		if _, err := dev.WriteAt(m.Bytes(), m.Offset); err != nil {
			return errclass.IOf(fmt.Sprintf("luks: write keyslot %d material", m.Slot), err)
		}
	}
	if err := dev.Flush(); err != nil {
		return errclass.IOf("luks: flush luks-keyslot-material", err)
	}
	hs := int64(c.Draft.HdrSize)
	if _, err := dev.WriteAt(copies[1], hs); err != nil {
		return errclass.IOf("luks: write LUKS2 secondary header", err)
	}
	if err := dev.Flush(); err != nil {
		return errclass.IOf("luks: flush luks2-convert-secondary", err)
	}
	if err := writeSector(dev, 0, copies[0][:sectorSize], "luks2-convert-switch"); err != nil {
		return err
	}
	if _, err := dev.WriteAt(copies[0][sectorSize:], sectorSize); err != nil {
		return errclass.IOf("luks: write LUKS2 primary header", err)
	}
	if err := dev.Flush(); err != nil {
		return errclass.IOf("luks: flush luks2-convert-primary", err)
	}
	h, err := readLUKS2(dev, dev.Size())
	if err != nil {
		return err
	}
	return WipeLUKS2Unused(dev, h)
}

// FinishLUKS2 completes a LUKS1-to-LUKS2 replacement that crashed after
// its switch: a damaged primary copy is rewritten from the secondary (a
// commit of the same header, seqid + 1), then WipeLUKS2Unused. On a LUKS1
// volume it does nothing and reports false: the replacement must be
// planned again.
func FinishLUKS2(dev blockdev.Device) (bool, error) {
	b := make([]byte, 8)
	if _, err := readAt(dev, b, 0, dev.Size()); err != nil {
		return false, err
	}
	if (bytes.Equal(b[:6], magic1st) || bytes.Equal(b[:6], magicReenc)) && b[6] == 0 && b[7] == 1 {
		return false, nil
	}
	h, err := readLUKS2(dev, dev.Size())
	if err != nil {
		return false, err
	}
	if h.Primary != nil || h.Secondary != nil {
		d, err := h.Draft()
		if err != nil {
			return false, err
		}
		if err := CommitLUKS2(dev, d); err != nil {
			return false, err
		}
		if h, err = readLUKS2(dev, dev.Size()); err != nil {
			return false, err
		}
	}
	return true, WipeLUKS2Unused(dev, h)
}

// WipeLUKS2Unused overwrites with random bytes everything between the two
// metadata copies and the data that no keyslot area (of any type) uses,
// and flushes (luks-keyslot-wipe): the key material a LUKS1 header left
// there, or removed keyslots left, is gone.
func WipeLUKS2Unused(dev blockdev.Device, h *LUKS2) error {
	m := h.Meta
	end := uint64(0)
	for _, g := range m.Segments {
		if g.Offset > 0 && (end == 0 || g.Offset < end) {
			end = g.Offset
		}
	}
	if end == 0 {
		end = 2*h.HdrSize + m.Config.KeyslotsSize
	}
	end = min(end, uint64(dev.Size()))
	var used []Area
	for _, k := range m.Keyslots {
		used = append(used, k.Area)
	}
	sort.Slice(used, func(i, j int) bool { return used[i].Offset < used[j].Offset })
	pos := 2 * h.HdrSize
	for _, u := range append(used, Area{Offset: end}) {
		if u.Offset > pos {
			if err := writeRandom(dev, Area{Offset: pos, Size: min(u.Offset, end) - pos}); err != nil {
				return err
			}
		}
		pos = max(pos, u.Offset+u.Size)
		if pos >= end {
			break
		}
	}
	if err := dev.Flush(); err != nil {
		return errclass.IOf("luks: flush luks-keyslot-wipe", err)
	}
	return nil
}
