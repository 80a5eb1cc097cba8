package luks

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sort"

	"golang.org/x/crypto/pbkdf2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// LUKS1Layout is cryptsetup 2.x's LUKS1 keyslot layout for a volume key of
// keyBytes bytes: keyslot i's material at Offsets[i] (sectors), the first
// at sector 8, each next one at the previous end rounded up to 8 sectors
// (4 KiB), so strides of 128, 256 and 504 sectors for 16-, 32- and 64-byte
// keys. End is the sector just past keyslot 7's material: the smallest
// payload offset that holds the layout.
func LUKS1Layout(keyBytes int) (offsets [numKeyslots1]uint32, end uint64) {
	secs := afSectors(uint64(keyBytes))
	cur := uint64(8)
	for i := range offsets {
		offsets[i] = uint32(cur)
		end = cur + secs
		cur = (end + 7) / 8 * 8
	}
	return offsets, end
}

// Carry1 is a passphrase to carry over into a rewritten LUKS1 header.
type Carry1 struct {
	// Slot is the keyslot the passphrase opens now, or AnySlot to find it.
	Slot int
	Pass []byte
	// Iterations of the new keyslot's PBKDF2; 0 keeps the old keyslot's
	// (raised to cryptsetup's minimum of 1000 if below).
	Iterations uint32
}

// Relayout1Params is a LUKS1 header rewrite for a new volume key.
type Relayout1Params struct {
	Cipher string // new cipher "name-mode", e.g. "aes-xts-plain64"; "" keeps the old one
	Hash   string // new hash for PBKDF2, AF and digest; "" keeps the old one
	// Key is the new volume key; its length is the new key size.
	Key []byte
	// DigestIterations of the new volume key digest (at least 1000).
	DigestIterations uint32
	// Keep lists every passphrase to carry over, at most one per keyslot.
	// Active keyslots not listed are removed.
	Keep []Carry1
}

// relayMove re-creates a kept passphrase in another keyslot of the old
// header (same volume key, same format) and removes the old keyslot, to
// get it out of the way of the new layout.
type relayMove struct {
	from, to int
	pass     []byte
	iter     uint32
}

// Relayout1 is a planned rewrite of a LUKS1 header for a new volume key,
// cipher or key size, with every kept keyslot re-split for the new key at
// cryptsetup 2.x's layout for the new key size (LUKS1Layout). Commit
// writes it crash-safely (docs/DESIGN.md, "LUKS1 re-layout").
type Relayout1 struct {
	base    [phdrSize]byte // the header the plan was made from
	oldKey  *Key
	drop    []int       // active keyslots not kept, removed from the old header first
	moves   []relayMove // kept passphrases moved to another old keyslot
	newPhdr [phdrSize]byte
	mats    []*KeyslotMaterial // the new header's keyslots' material
	// Slots maps each kept passphrase (by its index in Params.Keep) to its
	// keyslot in the new header.
	Slots []int
}

// New is the header Commit writes.
func (r *Relayout1) New() *LUKS1 {
	b := make([]byte, binHeaderSize)
	copy(b, r.newPhdr[:])
	h, err := parseLUKS1Marked(b, 1<<62)
	if err != nil {
		panic("luks: a planned LUKS1 header does not parse: " + err.Error())
	}
	return h
}

// Wipe releases the plan's key memory.
func (r *Relayout1) Wipe() {
	r.oldKey.Wipe()
	for _, m := range r.mats {
		m.Wipe()
	}
}

// PlanRelayout1 plans the rewrite of v's LUKS1 header (marked as in
// conversion or not) for a new volume key: new cipher, key size and hash
// as p says, the digest of p.Key, and each kept passphrase in a keyslot
// re-split for the new key, all eight keyslots at cryptsetup's layout for
// the new key size. oldKey is the current volume key; every kept
// passphrase must open its keyslot (WrongKey otherwise). It writes
// nothing. It refuses (Device) a layout that does not fit under the
// payload offset, saying which offset would be needed, and a set of kept
// keyslots that cannot coexist with their new keyslots under it.
func PlanRelayout1(v *Volume, oldKey []byte, p Relayout1Params) (*Relayout1, error) {
	o, err := attachedLUKS1(v, oldKey, "re-lays out")
	if err != nil {
		return nil, err
	}
	nk := len(p.Key)
	cipher := p.Cipher
	if cipher == "" {
		cipher = o.Cipher()
	}
	hashName := p.Hash
	if hashName == "" {
		hashName = o.HashSpec
	}
	name, mode, ok := cutCipher(cipher)
	if !ok || len(name) >= 32 || len(mode) >= 32 || len(hashName) >= 32 {
		return nil, fmt.Errorf("%w: LUKS1 cipher %q must be name-mode, each shorter than 32 bytes", errclass.Usage, cipher)
	}
	spec, err := sectorcipher.ParseSpec(cipher)
	if err != nil || spec.IsNone() {
		return nil, fmt.Errorf("%w: LUKS1 cipher %q is not supported by cryptshift (supported: %s)", errclass.Usage, cipher, supportedSpecs())
	}
	if err := (sectorcipher.Mapping{Spec: spec, Key: p.Key, SectorSize: sectorSize}).Validate(); err != nil {
		return nil, fmt.Errorf("%w: a %d-bit key for %s: %w", errclass.Usage, nk*8, cipher, err)
	}
	hf, err := hashFunc(hashName, "LUKS1")
	if err != nil {
		return nil, err
	}
	if p.DigestIterations < 1000 {
		return nil, fmt.Errorf("%w: digest iterations %d below cryptsetup's minimum of 1000", errclass.Usage, p.DigestIterations)
	}
	newOffs, end := LUKS1Layout(nk)
	if end > uint64(o.PayloadOffset) {
		return nil, fmt.Errorf("%w: the LUKS1 header has no room for %d-bit keyslots: they need a payload offset of at least %d sectors (%d with cryptsetup's 1 MiB alignment), the data start at sector %d", errclass.Device, nk*8, end, (end+2047)/2048*2048, o.PayloadOffset)
	}
	if len(p.Keep) == 0 {
		return nil, fmt.Errorf("%w: no passphrase to carry over: the volume would have no keyslot", errclass.Usage)
	}
	kept, bySlot, err := keptSlots(v, oldKey, p.Keep)
	if err != nil {
		return nil, err
	}
	r := &Relayout1{base: o.Raw}
	var stay []int // active, not kept, in keyslots 0 to 5: removed at the switch
	for i, k := range o.Keyslots {
		if _, ok := bySlot[i]; !ok && k.Enabled() {
			if i >= 6 {
				r.drop = append(r.drop, i)
			} else {
				stay = append(stay, i)
			}
		}
	}
	// The switch writes sector 0 only, so the old header must already
	// have the new header's sector 1: keyslots 6 and 7 disabled at their
	// new offsets. Kept passphrases therefore live in keyslots 0 to 5 of
	// the old header (moved there first if needed) and of the new one, and
	// the new keyslots' material must not overlap an old active keyslot's.
	oldSecs := afSectors(uint64(o.KeyBytes))
	newSecs := afSectors(uint64(nk))
	overlap := func(a uint32, as uint64, b uint32, bs uint64) bool {
		return uint64(a) < uint64(b)+bs && uint64(b) < uint64(a)+as
	}
	best, bestCost := []int(nil), -1
	var bestNew []int
	var try func(i int, used uint8, place []int)
	try = func(i int, used uint8, place []int) {
		if i == len(kept) {
			var live []uint32
			for _, s := range stay {
				live = append(live, o.Keyslots[s].KeyMaterialOffset)
			}
			moves := 0
			for j, s := range place {
				live = append(live, o.Keyslots[s].KeyMaterialOffset)
				if s != kept[j] {
					moves++
				}
			}
			var free []int
			for j := 0; j < 6; j++ {
				clash := false
				for _, l := range live {
					clash = clash || overlap(newOffs[j], newSecs, l, oldSecs)
				}
				if !clash {
					free = append(free, j)
				}
			}
			if len(free) < len(kept) {
				return
			}
			nw := assignSlots(kept, free)
			cost := moves * 100
			for j, s := range nw {
				if s != kept[j] {
					cost++
				}
			}
			if bestCost < 0 || cost < bestCost {
				best, bestCost, bestNew = append([]int(nil), place...), cost, nw
			}
			return
		}
		for s := 0; s < 6; s++ {
			// A kept passphrase stays where it is or moves to a keyslot
			// that is disabled in the old header.
			if used&(1<<s) != 0 || s != kept[i] && o.Keyslots[s].Enabled() {
				continue
			}
			try(i+1, used|1<<s, append(place, s))
		}
	}
	var stayMask uint8
	for _, s := range stay {
		stayMask |= 1 << s
	}
	try(0, stayMask, nil)
	if best == nil {
		return nil, fmt.Errorf("%w: the LUKS1 header has no room to hold %d old and %d new keyslots side by side under the payload offset (sector %d), as a crash-safe re-layout for a %d-bit key needs: keep fewer keyslots", errclass.Device, len(kept)+len(stay), len(kept), o.PayloadOffset, nk*8)
	}
	for i, s := range best {
		if s != kept[i] {
			it := max(o.Keyslots[kept[i]].Iterations, 1000) // AddKeyslot takes no less than cryptsetup's minimum
			r.moves = append(r.moves, relayMove{from: kept[i], to: s, pass: p.Keep[i].Pass, iter: it})
		}
	}
	// The intermediate old header with sector 1 as the new one has it
	// must be valid: keyslots 6 and 7 at the new offsets, old size.
	inter := o.Raw
	for _, s := range []int{6, 7} {
		off := keyslot1Offset + s*keyslot1Size
		binary.BigEndian.PutUint32(inter[off+40:], newOffs[s])
	}
	ib := make([]byte, binHeaderSize)
	copy(ib, inter[:])
	if _, err := parseLUKS1Marked(ib, 1<<62); err != nil {
		return nil, fmt.Errorf("%w: the old keyslots overlap the new layout's keyslots 6 and 7 (sectors %d and %d), which a crash-safe re-layout writes first: %v", errclass.Device, newOffs[6], newOffs[7], err)
	}
	// The new header.
	ph := o.Raw
	clear(ph[8:168])
	copy(ph[8:40], name)
	copy(ph[40:72], mode)
	copy(ph[72:104], hashName)
	binary.BigEndian.PutUint32(ph[104:], o.PayloadOffset)
	binary.BigEndian.PutUint32(ph[108:], uint32(nk))
	if _, err := rand.Read(ph[132:164]); err != nil {
		return nil, fmt.Errorf("luks: digest salt: %w", err)
	}
	binary.BigEndian.PutUint32(ph[164:], p.DigestIterations)
	dsum := pbkdf2.Key(p.Key, ph[132:164], int(p.DigestIterations), mkDigestSize, hf)
	copy(ph[112:132], dsum)
	wipe(dsum)
	for s := 0; s < numKeyslots1; s++ {
		off := keyslot1Offset + s*keyslot1Size
		clear(ph[off : off+keyslot1Size])
		binary.BigEndian.PutUint32(ph[off:], slotDisabled)
		binary.BigEndian.PutUint32(ph[off+40:], newOffs[s])
		binary.BigEndian.PutUint32(ph[off+44:], stripes)
	}
	var err2 error
	if r.oldKey, err2 = newKey(len(oldKey)); err2 != nil {
		return nil, fmt.Errorf("luks: allocate key memory: %w", err2)
	}
	copy(r.oldKey.Bytes(), oldKey)
	r.Slots = bestNew
	for i, s := range bestNew {
		it := p.Keep[i].Iterations
		if it == 0 {
			it = max(o.Keyslots[kept[i]].Iterations, 1000)
		}
		if it < 1000 {
			r.Wipe()
			return nil, fmt.Errorf("%w: PBKDF2 iterations %d below cryptsetup's minimum of 1000", errclass.Usage, it)
		}
		off := keyslot1Offset + s*keyslot1Size
		var salt [saltSize]byte
		if _, err := rand.Read(salt[:]); err != nil {
			r.Wipe()
			return nil, fmt.Errorf("luks: keyslot salt: %w", err)
		}
		kdf := KDF{Type: "pbkdf2", Hash: hashName, Iterations: int64(it), Salt: salt[:]}
		mat, err := sealMaterial(p.Key, p.Keep[i].Pass, kdf, spec, nk, hf, fmt.Sprintf("new LUKS1 keyslot %d", s))
		if err != nil {
			r.Wipe()
			return nil, err
		}
		r.mats = append(r.mats, &KeyslotMaterial{Slot: s, Offset: int64(newOffs[s]) * sectorSize, data: mat})
		binary.BigEndian.PutUint32(ph[off:], slotEnabled)
		binary.BigEndian.PutUint32(ph[off+4:], it)
		copy(ph[off+8:off+40], salt[:])
	}
	r.newPhdr = ph
	nb := make([]byte, binHeaderSize)
	copy(nb, ph[:])
	if _, err := parseLUKS1Marked(nb, v.size); err != nil {
		r.Wipe()
		return nil, fmt.Errorf("luks: the planned LUKS1 header is invalid: %w", err)
	}
	return r, nil
}

// assignSlots gives each kept passphrase (by its old keyslot) a keyslot of
// the new header among free: its own number when free, else the lowest
// free one left.
func assignSlots(kept, free []int) []int {
	out := make([]int, len(kept))
	taken := map[int]bool{}
	for i, k := range kept {
		out[i] = -1
		for _, f := range free {
			if f == k {
				out[i], taken[f] = f, true
			}
		}
	}
	for i := range out {
		if out[i] >= 0 {
			continue
		}
		for _, f := range free {
			if !taken[f] {
				out[i], taken[f] = f, true
				break
			}
		}
	}
	return out
}

func cutCipher(c string) (name, mode string, ok bool) {
	i := bytes.IndexByte([]byte(c), '-')
	if i <= 0 || i == len(c)-1 {
		return "", "", false
	}
	return c[:i], c[i+1:], true
}

// Commit writes the plan (docs/DESIGN.md, "LUKS1 re-layout"): in the old
// header, the active keyslots 6 and 7 not kept are removed and kept
// passphrases moved out of the new keyslots' way (each an ordinary
// one-keyslot LUKS1 commit), then sector 1 takes the new header's content
// (keyslots 6 and 7 disabled at their new offsets; flush
// luks1-relayout-sector1), the new keyslots' material goes where no old
// active keyslot lies (flush luks-keyslot-material), sector 0 switches to
// the new header in one sector write (flush luks1-relayout-switch), and
// every sector of the keyslot area the new header does not use is
// overwritten (WipeLUKS1Unused). It refuses (Conflict) if the header
// changed since the plan. The magic stays as it is on the device, so a
// volume marked as in conversion stays marked.
func (r *Relayout1) Commit(dev blockdev.Device) error {
	if err := r.Prepare(dev); err != nil {
		return err
	}
	b, _, err := readPhdrSectors(dev)
	if err != nil {
		return err
	}
	s0 := bytes.Clone(r.newPhdr[:sectorSize])
	copy(s0, b[:6]) // the magic as on the device: marked stays marked
	if err := writeSector(dev, 0, s0, "luks1-relayout-switch"); err != nil {
		return err
	}
	_, h, err := readPhdrSectors(dev)
	if err != nil {
		return err
	}
	return WipeLUKS1Unused(dev, h)
}

// Prepare is Commit's steps 1 to 3 (docs/DESIGN.md, "LUKS1 re-layout"):
// keyslots dropped or moved in the old header, sector 1 as the new header
// has it, the new keyslots' material written and flushed. The header on
// the device is then still the old one, opening every kept passphrase with
// the old key; a LUKS1 conversion (engine) converts the data between this
// and the switch, with the new header kept aside (WritePendingLUKS1).
func (r *Relayout1) Prepare(dev blockdev.Device) error {
	_, cur, err := readPhdrSectors(dev)
	if err != nil {
		return err
	}
	if cur.Raw != r.base {
		return fmt.Errorf("%w: the LUKS1 header changed since the re-layout was planned: refusing to overwrite it", errclass.Conflict)
	}
	if err := runMoves(dev, r.oldKey, r.drop, r.moves); err != nil {
		return err
	}
	b, _, err := readPhdrSectors(dev)
	if err != nil {
		return err
	}
	if !bytes.Equal(b[sectorSize:phdrSize], r.newPhdr[sectorSize:]) {
		s1 := bytes.Clone(b[sectorSize : 2*sectorSize])
		copy(s1, r.newPhdr[sectorSize:])
		if err := writeSector(dev, 1, s1, "luks1-relayout-sector1"); err != nil {
			return err
		}
	}
	for _, m := range r.mats {
		if _, err := dev.WriteAt(m.Bytes(), m.Offset); err != nil {
			return errclass.IOf(fmt.Sprintf("luks: write keyslot %d material", m.Slot), err)
		}
	}
	if err := dev.Flush(); err != nil {
		return errclass.IOf("luks: flush luks-keyslot-material", err)
	}
	return nil
}

// WipeLUKS1Unused overwrites every sector from sector 2 (after the phdr)
// to the payload that no active keyslot's material uses, with random
// bytes from sector 8 and zeros below,
// and flushes (luks-keyslot-wipe): old key material, wherever a previous
// layout or a removed keyslot left it, is gone. It depends only on the
// header on the device, so recovery can redo it after a crash.
func WipeLUKS1Unused(dev blockdev.Device, h *LUKS1) error {
	if h.PayloadOffset == 0 {
		return fmt.Errorf("%w: detached LUKS1 header: no keyslot area to wipe", errclass.Device)
	}
	type span struct{ lo, hi uint64 }
	var used []span
	secs := afSectors(uint64(h.KeyBytes))
	for _, k := range h.Keyslots {
		if k.Enabled() {
			used = append(used, span{uint64(k.KeyMaterialOffset), uint64(k.KeyMaterialOffset) + secs})
		}
	}
	sort.Slice(used, func(i, j int) bool { return used[i].lo < used[j].lo })
	pos := uint64(2)
	end := uint64(h.PayloadOffset)
	var holes []Area
	for _, u := range append(used, span{end, end}) {
		if u.lo > pos {
			holes = append(holes, Area{Offset: pos * sectorSize, Size: (u.lo - pos) * sectorSize})
		}
		pos = max(pos, u.hi)
	}
	// Sectors 2 to 7 get zeros, as cryptsetup leaves them: random bytes at
	// 1024 could look like another signature (ext4's magic is two bytes at
	// 1080) to blkid. Key material starts at sector 8 in every layout
	// cryptsetup 1.x and 2.x write.
	for _, a := range holes {
		if lo := a.Offset; lo < 8*sectorSize {
			n := min(a.Size, 8*sectorSize-lo)
			if _, err := dev.WriteAt(make([]byte, n), int64(lo)); err != nil {
				return errclass.IOf("luks: zero the LUKS1 header padding", err)
			}
			a.Offset, a.Size = lo+n, a.Size-n
		}
		if a.Size == 0 {
			continue
		}
		if err := writeRandom(dev, a); err != nil {
			return err
		}
	}
	if err := dev.Flush(); err != nil {
		return errclass.IOf("luks: flush luks-keyslot-wipe", err)
	}
	return nil
}

// attachedLUKS1 is what both LUKS1 rewrites check first: v is LUKS1, oldKey
// is its volume key, and the header is attached (the rewrites place
// keyslots under the payload offset). doing names the rewrite in the
// refusal.
func attachedLUKS1(v *Volume, oldKey []byte, doing string) (*LUKS1, error) {
	if v.V1 == nil {
		return nil, fmt.Errorf("%w: not a LUKS1 volume", errclass.Usage)
	}
	if err := v.CheckVolumeKey(oldKey); err != nil {
		return nil, err
	}
	if v.V1.PayloadOffset == 0 {
		return nil, fmt.Errorf("%w: the LUKS1 header is detached (payload offset 0): cryptshift %s only attached headers", errclass.Device, doing)
	}
	return v.V1, nil
}
