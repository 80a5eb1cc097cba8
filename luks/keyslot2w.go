package luks

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"strconv"

	"golang.org/x/crypto/pbkdf2"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// KeyslotSpec is how a LUKS2 keyslot is made: its KDF with its costs, the
// cipher that encrypts its material and the AF hash. The KDF salt is never
// taken from here: every keyslot gets a fresh one.
type KeyslotSpec struct {
	KDF           KDF    // Type, and Hash+Iterations (pbkdf2) or Time+Memory+CPUs (argon2)
	Encryption    string // keyslot cipher, e.g. "aes-xts-plain64"
	CipherKeySize uint32 // bytes of KDF output keying Encryption (area.key_size)
	AFHash        string
	Priority      *int64 // nil: absent (normal)
}

// Spec returns the parameters of an existing luks2 keyslot, so that a
// keyslot re-made for a new volume key keeps its KDF type and cost.
func (k *Keyslot2) Spec() KeyslotSpec {
	kdf := k.KDF
	kdf.Salt = nil
	return KeyslotSpec{KDF: kdf, Encryption: k.Area.Encryption, CipherKeySize: k.Area.KeySize, AFHash: k.AF.Hash, Priority: k.Priority}
}

// change is one edit of the JSON text: set path to val, or delete it.
type change struct {
	path []string
	val  json.RawMessage
}

// apply makes several edits and keeps them only if the result is a header
// the reader accepts: edits that are valid only together (a keyslot and
// its digest binding) go in one call.
func (d *Draft2) apply(cs ...change) error {
	js := d.JSON
	for _, c := range cs {
		var err error
		if js, err = editJSON(js, c.path, c.val); err != nil {
			return fmt.Errorf("%w: LUKS2 metadata edit %v: %w", errclass.Header, c.path, err)
		}
	}
	old := d.JSON
	d.JSON = js
	if _, err := d.Metadata(); err != nil {
		d.JSON = old
		return err
	}
	return nil
}

// The JSON objects cryptshift writes, members in cryptsetup's order.
type (
	jsonKeyslot struct {
		Type     string   `json:"type"`
		KeySize  int      `json:"key_size"`
		AF       jsonAF   `json:"af"`
		Area     jsonArea `json:"area"`
		KDF      any      `json:"kdf"`
		Priority *int64   `json:"priority,omitempty"`
	}
	jsonAF struct {
		Type    string `json:"type"`
		Stripes int    `json:"stripes"`
		Hash    string `json:"hash"`
	}
	jsonArea struct {
		Type       string `json:"type"`
		Offset     string `json:"offset"`
		Size       string `json:"size"`
		Encryption string `json:"encryption"`
		KeySize    uint32 `json:"key_size"`
	}
	jsonPBKDF2 struct {
		Type       string `json:"type"`
		Hash       string `json:"hash"`
		Iterations int64  `json:"iterations"`
		Salt       string `json:"salt"`
	}
	jsonArgon2 struct {
		Type   string `json:"type"`
		Time   int64  `json:"time"`
		Memory int64  `json:"memory"`
		CPUs   int64  `json:"cpus"`
		Salt   string `json:"salt"`
	}
	jsonDigest struct {
		Type       string   `json:"type"`
		Keyslots   []string `json:"keyslots"`
		Segments   []string `json:"segments"`
		Hash       string   `json:"hash"`
		Iterations int      `json:"iterations"`
		Salt       string   `json:"salt"`
		Digest     string   `json:"digest"`
	}
)

// AddDigest adds a pbkdf2 digest of key bound to no keyslot and no
// segment, and returns its id. It is how a header holds a second volume key
// (the new one of a conversion) that stock cryptsetup does not map: the
// digest is then given keyslots by AddKeyslot and, at the end, segments.
func (d *Draft2) AddDigest(key []byte, hashName string, iterations int) (int, error) {
	m, err := d.Metadata()
	if err != nil {
		return 0, err
	}
	hf, err := hashFunc(hashName, "LUKS2 digest")
	if err != nil {
		return 0, err
	}
	if iterations < 1000 {
		return 0, fmt.Errorf("%w: LUKS2 digest iterations %d below cryptsetup's minimum of 1000", errclass.Usage, iterations)
	}
	id := -1
	for i := 0; i < maxDigests2; i++ {
		if _, used := m.Digests[i]; !used {
			id = i
			break
		}
	}
	if id < 0 {
		return 0, fmt.Errorf("%w: the LUKS2 header has no free digest (at most %d)", errclass.Device, maxDigests2)
	}
	js, err := digestJSON(key, hashName, iterations, hf, []string{})
	if err != nil {
		return 0, err
	}
	if err := d.apply(change{[]string{"digests", strconv.Itoa(id)}, js}); err != nil {
		return 0, err
	}
	return id, nil
}

// AddKeyslot adds a luks2 keyslot holding key under pass, made as spec
// says, assigned to digest (which must verify key), at keyslot id slot or,
// with AnySlot, the lowest free one. The area is placed by first fit in
// the keyslots area around every keyslot's area, of any type. It returns
// the material to write before the commit; the draft is unchanged on error.
func (d *Draft2) AddKeyslot(slot int, key, pass []byte, spec KeyslotSpec, digest int) (*KeyslotMaterial, error) {
	return d.addKeyslot(slot, key, pass, spec, digest, nil)
}

// placeFunc places a keyslot area of size bytes in m; nil is firstFit.
type placeFunc func(m *Metadata, hdrSize, size uint64) (uint64, error)

func (d *Draft2) addKeyslot(slot int, key, pass []byte, spec KeyslotSpec, digest int, place placeFunc) (*KeyslotMaterial, error) {
	if place == nil {
		place = firstFit
	}
	m, err := d.Metadata()
	if err != nil {
		return nil, err
	}
	if slot == AnySlot {
		for i := 0; i < maxKeyslots2 && slot == AnySlot; i++ {
			if _, used := m.Keyslots[i]; !used {
				slot = i
			}
		}
		if slot == AnySlot {
			return nil, fmt.Errorf("%w: the LUKS2 header has no free keyslot (at most %d)", errclass.Device, maxKeyslots2)
		}
	} else if slot < 0 || slot >= maxKeyslots2 {
		return nil, fmt.Errorf("%w: LUKS2 keyslot %d: keyslots are 0 to %d", errclass.Usage, slot, maxKeyslots2-1)
	} else if _, used := m.Keyslots[slot]; used {
		return nil, fmt.Errorf("%w: LUKS2 keyslot %d is in use", errclass.Usage, slot)
	}
	dg, ok := m.Digests[digest]
	if !ok || dg.Type != "pbkdf2" {
		return nil, fmt.Errorf("%w: LUKS2 digest %d does not exist or is not pbkdf2", errclass.Usage, digest)
	}
	if err := checkDigest(dg, key); err != nil {
		return nil, err
	}
	if len(key) < 1 || len(key) > maxKeyBytes {
		return nil, fmt.Errorf("%w: key of %d bytes", errclass.Usage, len(key))
	}
	afh, err := hashFunc(spec.AFHash, "keyslot AF")
	if err != nil {
		return nil, err
	}
	cspec, err := sectorcipher.ParseSpec(spec.Encryption)
	if err != nil || cspec.IsNone() {
		return nil, fmt.Errorf("%w: keyslot cipher %q is not supported by cryptshift (supported: %s)", errclass.Usage, spec.Encryption, supportedSpecs())
	}
	kdf, err := kdfJSON(spec.KDF)
	if err != nil {
		return nil, err
	}
	areaSize := (uint64(len(key))*stripes + 4095) / 4096 * 4096
	off, err := place(m, d.HdrSize, areaSize)
	if err != nil {
		return nil, err
	}
	k := spec.KDF
	k.Salt = make([]byte, saltSize)
	if _, err := rand.Read(k.Salt); err != nil {
		return nil, fmt.Errorf("luks: keyslot salt: %w", err)
	}
	where := fmt.Sprintf("new LUKS2 keyslot %d", slot)
	mat, err := sealMaterial(key, pass, k, cspec, int(spec.CipherKeySize), afh, where)
	if err != nil {
		return nil, err
	}
	kdf.setSalt(k.Salt)
	js, err := marshalPlain(jsonKeyslot{
		Type: "luks2", KeySize: len(key),
		AF:       jsonAF{Type: "luks1", Stripes: stripes, Hash: spec.AFHash},
		Area:     jsonArea{Type: "raw", Offset: strconv.FormatUint(off, 10), Size: strconv.FormatUint(areaSize, 10), Encryption: spec.Encryption, KeySize: spec.CipherKeySize},
		KDF:      kdf.v,
		Priority: spec.Priority,
	})
	if err == nil {
		var ids json.RawMessage
		if ids, err = idsJSON(append(append([]int(nil), dg.Keyslots...), slot)); err == nil {
			err = d.apply(change{[]string{"keyslots", strconv.Itoa(slot)}, js},
				change{[]string{"digests", strconv.Itoa(digest), "keyslots"}, ids})
		}
	}
	if err != nil {
		mat.Wipe()
		return nil, err
	}
	return &KeyslotMaterial{Slot: slot, Offset: int64(off), data: mat}, nil
}

// checkDigest refuses a key the digest does not verify.
func checkDigest(dg *Digest, key []byte) error {
	hf, err := hashFunc(dg.Hash, "LUKS2 digest")
	if err != nil {
		return err
	}
	if dg.Iterations < 1 || len(dg.Digest) == 0 {
		return fmt.Errorf("%w: LUKS2 digest is empty or has no iterations", errclass.Header)
	}
	sum := pbkdf2.Key(key, dg.Salt, int(dg.Iterations), len(dg.Digest), hf)
	if subtle.ConstantTimeCompare(sum, dg.Digest) != 1 {
		return fmt.Errorf("%w: the key does not match the LUKS2 digest it is to be assigned to", errclass.WrongKey)
	}
	return nil
}

// idsJSON is a JSON array of ids as strings, in the given order.
func idsJSON(ids []int) (json.RawMessage, error) {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.Itoa(id)
	}
	return marshalPlain(s)
}

// RemoveKeyslot takes a luks2 keyslot out of the draft: out of its digest
// (a digest left with no keyslot and no segment goes too) and out of every
// token's keyslots (the token itself stays, as cryptsetup leaves it). The
// last keyslot of a digest that maps a segment is refused: that key would
// be lost. It returns the area, to be wiped once the commit is durable.
func (d *Draft2) RemoveKeyslot(slot int) (Area, error) {
	m, err := d.Metadata()
	if err != nil {
		return Area{}, err
	}
	k, ok := m.Keyslots[slot]
	if !ok {
		return Area{}, fmt.Errorf("%w: LUKS2 keyslot %d does not exist", errclass.Usage, slot)
	}
	if k.Type != "luks2" {
		return Area{}, fmt.Errorf("%w: LUKS2 keyslot %d is of type %q, which cryptshift does not remove", errclass.Refused, slot, k.Type)
	}
	cs := []change{{[]string{"keyslots", strconv.Itoa(slot)}, nil}}
	for _, did := range m.digestsOf(slot) {
		dg := m.Digests[did]
		rest := without(dg.Keyslots, slot)
		switch {
		case len(rest) == 0 && len(dg.Segments) > 0:
			return Area{}, fmt.Errorf("%w: LUKS2 keyslot %d is the last one holding the key of segment %v: removing it would lose the data", errclass.Refused, slot, dg.Segments)
		case len(rest) == 0:
			cs = append(cs, change{[]string{"digests", strconv.Itoa(did)}, nil})
		default:
			ids, err := idsJSON(rest)
			if err != nil {
				return Area{}, err
			}
			cs = append(cs, change{[]string{"digests", strconv.Itoa(did), "keyslots"}, ids})
		}
	}
	for tid, t := range m.Tokens {
		if hasInt(t.Keyslots, slot) {
			ids, err := idsJSON(without(t.Keyslots, slot))
			if err != nil {
				return Area{}, err
			}
			cs = append(cs, change{[]string{"tokens", strconv.Itoa(tid), "keyslots"}, ids})
		}
	}
	if err := d.apply(cs...); err != nil {
		return Area{}, err
	}
	return k.Area, nil
}

func without(list []int, x int) []int {
	out := []int{}
	for _, v := range list {
		if v != x {
			out = append(out, v)
		}
	}
	return out
}
