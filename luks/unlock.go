package luks

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"sort"

	"golang.org/x/crypto/pbkdf2"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// AnySlot asks Unlock to try every keyslot that can open the data.
const AnySlot = -1

// Unlocked is the result of opening a keyslot.
type Unlocked struct {
	Key  *Key // the volume key; the caller wipes it
	Slot int
	// Digest is the LUKS2 digest that verified Key (0 for LUKS1).
	Digest int
}

// Wipe wipes the volume key.
func (u *Unlocked) Wipe() {
	if u != nil {
		u.Key.Wipe()
	}
}

// errWrongPass: the keyslot's material merged into a key the digest does
// not accept.
var errWrongPass = errors.New("passphrase does not open this keyslot")

// Unlock derives the volume key from a passphrase: through keyslot slot,
// or with AnySlot through each active keyslot in cryptsetup's order (for
// LUKS2, keyslots bound to the data segment, priority "prefer" first,
// "ignore" skipped). A passphrase that opens none is errclass.WrongKey; a
// keyslot this build cannot run (cipher, hash, KDF) is errclass.Device
// when it was the only one to try.
func (v *Volume) Unlock(pass []byte, slot int) (*Unlocked, error) {
	slots, err := v.candidates(slot)
	if err != nil {
		return nil, err
	}
	var unsupported error
	for _, s := range slots {
		u, err := v.unlockSlot(pass, s)
		if err == nil {
			return u, nil
		}
		if errors.Is(err, errWrongPass) {
			continue
		}
		if slot != AnySlot || errclass.Code(err) != errclass.ExitDevice {
			return nil, err
		}
		if unsupported == nil {
			unsupported = err
		}
	}
	if len(slots) == 0 {
		return nil, fmt.Errorf("%w: the LUKS%d volume has no active keyslot", errclass.WrongKey, v.Version)
	}
	if unsupported != nil {
		return nil, fmt.Errorf("%w: the passphrase opens none of the keyslots cryptshift can run, and %w", errclass.WrongKey, unsupported)
	}
	if slot != AnySlot {
		return nil, fmt.Errorf("%w: the passphrase does not open keyslot %d", errclass.WrongKey, slot)
	}
	return nil, fmt.Errorf("%w: the passphrase opens no keyslot", errclass.WrongKey)
}

// candidates lists the keyslots to try, in order.
func (v *Volume) candidates(slot int) ([]int, error) {
	if v.V1 != nil {
		if slot != AnySlot {
			if slot < 0 || slot >= numKeyslots1 {
				return nil, fmt.Errorf("%w: keyslot %d: LUKS1 has keyslots 0 to 7", errclass.Usage, slot)
			}
			if !v.V1.Keyslots[slot].Enabled() {
				return nil, fmt.Errorf("%w: LUKS1 keyslot %d is not active", errclass.Usage, slot)
			}
			return []int{slot}, nil
		}
		var out []int
		for i, k := range v.V1.Keyslots {
			if k.Enabled() {
				out = append(out, i)
			}
		}
		return out, nil
	}
	m := v.V2.Meta
	if slot != AnySlot {
		k, ok := m.Keyslots[slot]
		if !ok {
			return nil, fmt.Errorf("%w: LUKS2 keyslot %d does not exist", errclass.Usage, slot)
		}
		if k.Type != "luks2" {
			return nil, fmt.Errorf("%w: LUKS2 keyslot %d is of type %q, which holds no passphrase-protected key", errclass.Usage, slot, k.Type)
		}
		return []int{slot}, nil
	}
	var out []int
	for id, k := range m.Keyslots {
		if k.Type != "luks2" || k.Priority != nil && *k.Priority == 0 || !v.boundToData(id) {
			continue
		}
		out = append(out, id)
	}
	sort.Slice(out, func(a, b int) bool {
		pa, pb := m.Keyslots[out[a]].prefer(), m.Keyslots[out[b]].prefer()
		if pa != pb {
			return pa
		}
		return out[a] < out[b]
	})
	return out, nil
}

func (k *Keyslot2) prefer() bool { return k.Priority != nil && *k.Priority == 2 }

// boundToData reports whether keyslot id's digest covers data segment 0.
func (v *Volume) boundToData(id int) bool {
	m := v.V2.Meta
	for _, d := range m.digestsOf(id) {
		for _, s := range m.Digests[d].Segments {
			if s == 0 {
				return true
			}
		}
	}
	return false
}

func (v *Volume) unlockSlot(pass []byte, slot int) (*Unlocked, error) {
	if v.V1 != nil {
		return v.unlock1(pass, slot)
	}
	return v.unlock2(pass, slot)
}

func (v *Volume) unlock1(pass []byte, slot int) (*Unlocked, error) {
	h := v.V1
	k := h.Keyslots[slot]
	where := fmt.Sprintf("LUKS1 keyslot %d", slot)
	hf, err := hashFunc(h.HashSpec, where)
	if err != nil {
		return nil, err
	}
	kdf := KDF{Type: "pbkdf2", Hash: h.HashSpec, Iterations: int64(k.Iterations), Salt: k.Salt[:]}
	vk, err := openMaterial(v, pass, kdf, h.Cipher(), int(h.KeyBytes), int(h.KeyBytes), uint64(k.KeyMaterialOffset)*sectorSize, ^uint64(0), h.HashSpec, where)
	if err != nil {
		return nil, err
	}
	// The digest is PBKDF2 of the volume key, 20 bytes, whatever the hash.
	d := pbkdf2.Key(vk.Bytes(), h.MKDigestSalt[:], int(h.MKDigestIterations), mkDigestSize, hf)
	ok := subtle.ConstantTimeCompare(d, h.MKDigest[:]) == 1
	wipe(d)
	if !ok {
		vk.Wipe()
		return nil, errWrongPass
	}
	return &Unlocked{Key: vk, Slot: slot}, nil
}

func (v *Volume) unlock2(pass []byte, slot int) (*Unlocked, error) {
	m := v.V2.Meta
	k := m.Keyslots[slot]
	where := fmt.Sprintf("LUKS2 keyslot %d", slot)
	ds := m.digestsOf(slot)
	if len(ds) != 1 {
		return nil, fmt.Errorf("%w: %s is in %d digests", errclass.Header, where, len(ds))
	}
	dg := m.Digests[ds[0]]
	if dg.Type != "pbkdf2" {
		return nil, fmt.Errorf("%w: %s: digest type %q is not supported (supported: pbkdf2)", errclass.Device, where, dg.Type)
	}
	dh, err := hashFunc(dg.Hash, where+" digest")
	if err != nil {
		return nil, err
	}
	if k.AF.Stripes != stripes {
		return nil, fmt.Errorf("%w: %s: %d AF stripes; cryptsetup always uses %d", errclass.Header, where, k.AF.Stripes, stripes)
	}
	if len(k.KDF.Salt) != saltSize {
		return nil, fmt.Errorf("%w: %s: KDF salt of %d bytes, not %d", errclass.Header, where, len(k.KDF.Salt), saltSize)
	}
	if dg.Iterations < 1 || len(dg.Digest) == 0 {
		return nil, fmt.Errorf("%w: %s: digest %d is empty or has no iterations", errclass.Header, where, ds[0])
	}
	vk, err := openMaterial(v, pass, k.KDF, k.Area.Encryption, int(k.Area.KeySize), int(k.KeySize), k.Area.Offset, k.Area.Size, k.AF.Hash, where)
	if err != nil {
		return nil, err
	}
	d := pbkdf2.Key(vk.Bytes(), dg.Salt, int(dg.Iterations), len(dg.Digest), dh)
	ok := subtle.ConstantTimeCompare(d, dg.Digest) == 1
	wipe(d)
	if !ok {
		vk.Wipe()
		return nil, errWrongPass
	}
	return &Unlocked{Key: vk, Slot: slot, Digest: ds[0]}, nil
}

// maxKeyBytes bounds a key read from a header before memory is allocated
// for its material (cryptsetup's own limit is far below).
const maxKeyBytes = 1024

// openMaterial derives the keyslot key, decrypts the AF material in
// 512-byte sectors from IV 0 with the keyslot cipher, and merges it into a
// key of keyLen bytes.
func openMaterial(v *Volume, pass []byte, kdf KDF, cipher string, kdfLen, keyLen int, off, areaSize uint64, afHash, where string) (*Key, error) {
	if keyLen < 1 || keyLen > maxKeyBytes || kdfLen < 1 || kdfLen > maxKeyBytes {
		return nil, fmt.Errorf("%w: %s: key size %d (keyslot cipher key %d) out of range", errclass.Header, where, keyLen, kdfLen)
	}
	spec, err := sectorcipher.ParseSpec(cipher)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: cipher %q is not supported by cryptshift (supported: %s)", errclass.Device, where, cipher, supportedSpecs())
	}
	if spec.IsNone() {
		return nil, fmt.Errorf("%w: %s: keyslot cipher %q encrypts nothing", errclass.Device, where, cipher)
	}
	af, err := hashFunc(afHash, where+" AF")
	if err != nil {
		return nil, err
	}
	size := afSectors(uint64(keyLen)) * sectorSize
	if size > areaSize {
		return nil, fmt.Errorf("%w: %s: key material of %d bytes does not fit its area of %d", errclass.Header, where, size, areaSize)
	}
	if off+size > uint64(v.size) {
		return nil, fmt.Errorf("%w: %s: key material runs past the end of the device", errclass.Device, where)
	}
	dk, err := newKey(kdfLen)
	if err != nil {
		return nil, fmt.Errorf("luks: allocate key memory: %w", err)
	}
	defer dk.Wipe()
	if err := derive(kdf, pass, dk.Bytes(), where); err != nil {
		return nil, err
	}
	c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: dk.Bytes(), SectorSize: sectorSize})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errclass.Header, where, err)
	}
	mat, err := newKey(int(size))
	if err != nil {
		return nil, fmt.Errorf("luks: allocate key memory: %w", err)
	}
	defer mat.Wipe()
	if _, err := readAt(v.dev, mat.Bytes(), int64(off), v.size); err != nil {
		return nil, err
	}
	c.Decrypt(mat.Bytes(), 0)
	vk, err := newKey(keyLen)
	if err != nil {
		return nil, fmt.Errorf("luks: allocate key memory: %w", err)
	}
	afMerge(mat.Bytes(), vk.Bytes(), stripes, af)
	return vk, nil
}

func supportedSpecs() string {
	var out []string
	for _, s := range sectorcipher.SupportedSpecs() {
		if s != "none" {
			out = append(out, s)
		}
	}
	return fmt.Sprint(out)
}

// CheckVolumeKey verifies a volume key obtained elsewhere (a LUKS1 live
// table, a backup) against the header's digest of the data segment. A key
// the digest refuses is errclass.WrongKey.
func (v *Volume) CheckVolumeKey(key []byte) error {
	if v.V1 != nil {
		h := v.V1
		hf, err := hashFunc(h.HashSpec, "LUKS1 digest")
		if err != nil {
			return err
		}
		if len(key) == int(h.KeyBytes) {
			d := pbkdf2.Key(key, h.MKDigestSalt[:], int(h.MKDigestIterations), mkDigestSize, hf)
			if subtle.ConstantTimeCompare(d, h.MKDigest[:]) == 1 {
				return nil
			}
		}
		return fmt.Errorf("%w: the key does not match the LUKS1 header's volume key digest", errclass.WrongKey)
	}
	m := v.V2.Meta
	for id := 0; id < maxDigests2; id++ {
		dg, ok := m.Digests[id]
		if !ok || dg.Type != "pbkdf2" || !hasInt(dg.Segments, 0) {
			continue
		}
		dh, err := hashFunc(dg.Hash, fmt.Sprintf("LUKS2 digest %d", id))
		if err != nil {
			return err
		}
		d := pbkdf2.Key(key, dg.Salt, int(dg.Iterations), len(dg.Digest), dh)
		if subtle.ConstantTimeCompare(d, dg.Digest) == 1 {
			return nil
		}
	}
	return fmt.Errorf("%w: the key does not match the LUKS2 digest of the data segment", errclass.WrongKey)
}

func hasInt(list []int, x int) bool {
	for _, v := range list {
		if v == x {
			return true
		}
	}
	return false
}
