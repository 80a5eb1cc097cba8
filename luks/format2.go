package luks

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"hash"
	"strconv"

	"golang.org/x/crypto/pbkdf2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// cryptsetup 2.6 luksFormat's LUKS2 defaults.
const (
	DefaultMetadataSize = 16 << 10 // one header copy: 4 KiB binary header, 12 KiB JSON
	DefaultDataOffset   = 16 << 20 // 1 MiB-aligned, metadata and keyslots in front
	DefaultCipher       = "aes-xts-plain64"
)

// FormatParams describe a LUKS2 header made from nothing, as
// `cryptsetup luksFormat --type luks2` makes one. Zero values take
// cryptsetup 2.6's defaults where it has one; KDF costs are always the
// caller's (cryptsetup benchmarks them; a caller that wants that must say
// so with numbers).
type FormatParams struct {
	UUID      string // "" for a random (version 4) UUID
	Label     string
	Subsystem string
	Cipher    string // DefaultCipher if ""
	// Key is the volume key; its length is the key size.
	Key        []byte
	SectorSize int // data sector size, 512 (default) to 4096, a power of two
	// MetadataSize is one header copy's size (an allowed size, default
	// 16 KiB); DataOffset where the data segment starts (default 16 MiB);
	// KeyslotsSize the keyslots area (default: all between the second copy
	// and the data, at most 128 MiB, as cryptsetup).
	MetadataSize, DataOffset, KeyslotsSize uint64
	// Pass is the passphrase of the one keyslot, Keyslot its id.
	Pass    []byte
	Keyslot int
	// KDF of the keyslot: Type "argon2id" (default), "argon2i" or
	// "pbkdf2", with its costs; the salt is fresh.
	KDF KDF
	// DigestIterations of the pbkdf2 digest (at least 1000); DigestHash
	// and AFHash default to sha256.
	DigestIterations   int
	DigestHash, AFHash string
}

// Fresh2 is a LUKS2 header built from nothing: the draft (seqid 1 when
// written), and the keyslot's material, to be written first.
type Fresh2 struct {
	Draft    *Draft2
	Material *KeyslotMaterial
}

// Wipe releases the keyslot material's memory.
func (f *Fresh2) Wipe() { f.Material.Wipe() }

// FormatLUKS2 builds a LUKS2 header with one "dynamic" crypt segment at
// the data offset, one pbkdf2 digest of the key, and one luks2 keyslot
// for the passphrase, the JSON as cryptsetup 2.6 writes it (members in its
// order). It writes nothing.
func FormatLUKS2(p FormatParams) (*Fresh2, error) {
	return formatLUKS2(p, nil)
}

func formatLUKS2(p FormatParams, place placeFunc) (*Fresh2, error) {
	if p.Cipher == "" {
		p.Cipher = DefaultCipher
	}
	if p.SectorSize == 0 {
		p.SectorSize = sectorSize
	}
	if p.MetadataSize == 0 {
		p.MetadataSize = DefaultMetadataSize
	}
	if p.DataOffset == 0 {
		p.DataOffset = DefaultDataOffset
	}
	if p.KDF.Type == "" {
		p.KDF.Type = "argon2id"
	}
	if p.DigestHash == "" {
		p.DigestHash = "sha256"
	}
	if p.AFHash == "" {
		p.AFHash = "sha256"
	}
	if p.UUID == "" {
		var err error
		if p.UUID, err = randomUUID(); err != nil {
			return nil, err
		}
	} else if !validUUID(p.UUID) {
		return nil, fmt.Errorf("%w: LUKS UUID %q is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", errclass.Usage, p.UUID)
	}
	if !allowedHdrSize(p.MetadataSize) {
		return nil, fmt.Errorf("%w: LUKS2 metadata size %d is not one of 16 KiB to 4 MiB, doubling", errclass.Usage, p.MetadataSize)
	}
	if p.SectorSize < sectorSize || p.SectorSize > 4096 || p.SectorSize&(p.SectorSize-1) != 0 {
		return nil, fmt.Errorf("%w: sector size %d is not a power of two from 512 to 4096", errclass.Usage, p.SectorSize)
	}
	if p.DataOffset%uint64(p.SectorSize) != 0 || p.DataOffset%sectorSize != 0 {
		return nil, fmt.Errorf("%w: data offset %d is not a multiple of the sector size %d", errclass.Usage, p.DataOffset, p.SectorSize)
	}
	if p.DataOffset < 2*p.MetadataSize {
		return nil, fmt.Errorf("%w: data offset %d leaves no room for two %d-byte LUKS2 metadata copies", errclass.Usage, p.DataOffset, p.MetadataSize)
	}
	if p.KeyslotsSize == 0 {
		p.KeyslotsSize = min((p.DataOffset-2*p.MetadataSize)/4096*4096, maxKeyslotsSize)
	}
	if p.KeyslotsSize%4096 != 0 || p.KeyslotsSize > maxKeyslotsSize || 2*p.MetadataSize+p.KeyslotsSize > p.DataOffset {
		return nil, fmt.Errorf("%w: keyslots area of %d bytes: must be a multiple of 4096, at most 128 MiB, between the metadata (%d bytes) and the data at %d", errclass.Usage, p.KeyslotsSize, 2*p.MetadataSize, p.DataOffset)
	}
	spec, err := sectorcipher.ParseSpec(p.Cipher)
	if err != nil || spec.IsNone() {
		return nil, fmt.Errorf("%w: cipher %q is not supported by cryptshift (supported: %s)", errclass.Usage, p.Cipher, supportedSpecs())
	}
	if err := (sectorcipher.Mapping{Spec: spec, Key: p.Key, SectorSize: p.SectorSize}).Validate(); err != nil {
		return nil, fmt.Errorf("%w: a %d-bit key for %s: %w", errclass.Usage, len(p.Key)*8, p.Cipher, err)
	}
	hf, err := hashFunc(p.DigestHash, "LUKS2 digest")
	if err != nil {
		return nil, err
	}
	if p.DigestIterations < 1000 {
		return nil, fmt.Errorf("%w: LUKS2 digest iterations %d below cryptsetup's minimum of 1000", errclass.Usage, p.DigestIterations)
	}
	if p.Keyslot < 0 || p.Keyslot >= maxKeyslots2 {
		return nil, fmt.Errorf("%w: LUKS2 keyslot %d: keyslots are 0 to %d", errclass.Usage, p.Keyslot, maxKeyslots2-1)
	}
	digest, err := digestJSON(p.Key, p.DigestHash, p.DigestIterations, hf, []string{"0"})
	if err != nil {
		return nil, err
	}
	seg, err := marshalPlain(struct {
		Type       string `json:"type"`
		Offset     string `json:"offset"`
		Size       string `json:"size"`
		IVTweak    string `json:"iv_tweak"`
		Encryption string `json:"encryption"`
		SectorSize int    `json:"sector_size"`
	}{"crypt", strconv.FormatUint(p.DataOffset, 10), "dynamic", "0", p.Cipher, p.SectorSize})
	if err != nil {
		return nil, err
	}
	js := fmt.Sprintf(`{"keyslots":{},"tokens":{},"segments":{"0":%s},"digests":{"0":%s},"config":{"json_size":"%d","keyslots_size":"%d"}}`,
		seg, digest, p.MetadataSize-binHeaderSize, p.KeyslotsSize)
	d := &Draft2{HdrSize: p.MetadataSize, Label: p.Label, Subsystem: p.Subsystem, UUID: p.UUID, ChecksumAlg: "sha256", JSON: []byte(js)}
	if _, err := d.Metadata(); err != nil {
		return nil, fmt.Errorf("luks: the LUKS2 header built from the parameters is invalid: %w", err)
	}
	mat, err := d.addKeyslot(p.Keyslot, p.Key, p.Pass, KeyslotSpec{KDF: p.KDF, Encryption: p.Cipher, CipherKeySize: uint32(len(p.Key)), AFHash: p.AFHash}, 0, place)
	if err != nil {
		return nil, err
	}
	if _, err := EncodeLUKS2(d, 1); err != nil {
		mat.Wipe()
		return nil, err
	}
	return &Fresh2{Draft: d, Material: mat}, nil
}

// digestJSON is a pbkdf2 digest object of key with a fresh salt, bound to
// the given segments and no keyslot.
func digestJSON(key []byte, hashName string, iterations int, hf func() hash.Hash, segments []string) ([]byte, error) {
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("luks: digest salt: %w", err)
	}
	sum := pbkdf2.Key(key, salt, iterations, hf().Size(), hf)
	return marshalPlain(jsonDigest{
		Type: "pbkdf2", Keyslots: []string{}, Segments: segments, Hash: hashName, Iterations: iterations,
		Salt: base64.StdEncoding.EncodeToString(salt), Digest: base64.StdEncoding.EncodeToString(sum),
	})
}

// WriteFreshLUKS2 writes a header built by FormatLUKS2 (or
// ConvertLUKS1ToLUKS2's fresh part) onto a device that holds no LUKS
// header: the keyslot material (flush luks-keyslot-material), both copies
// but their first sectors (luks2-fresh-bodies), the secondary's first
// sector (luks2-fresh-magic-1), then the primary's (luks2-fresh-magic-0).
// A crash leaves no LUKS magic at all (the device as the caller left it
// around the header) or a complete header whose keyslot opens
// (docs/DESIGN.md, "A fresh LUKS2 header"). It refuses
// (Refused) a device with a LUKS signature and one too small for the data
// offset.
func WriteFreshLUKS2(dev blockdev.Device, f *Fresh2) error {
	m, err := f.Draft.Metadata()
	if err != nil {
		return err
	}
	if sig, err := Detect(dev, dev.Size()); err != nil {
		return err
	} else if sig != nil {
		return fmt.Errorf("%w: the device already holds a %s: refusing to format over it", errclass.Refused, sig)
	}
	off := m.Segments[0].Offset
	if uint64(dev.Size()) <= off {
		return fmt.Errorf("%w: device of %d bytes is too small for a LUKS2 header with data at %d", errclass.Device, dev.Size(), off)
	}
	copies, err := EncodeLUKS2(f.Draft, f.Draft.BaseSeqID+1)
	if err != nil {
		return err
	}
	if err := WriteKeyslotMaterial(dev, f.Material); err != nil {
		return err
	}
	// The copies without their first sector (magic, seqid, checksum) first,
	// so that no torn copy ever shows a LUKS magic (blkid reports one on
	// the magic and offset alone); then the secondary's first sector, which
	// makes it a complete header, then the primary's.
	hs := int64(f.Draft.HdrSize)
	for i, c := range copies {
		if _, err := dev.WriteAt(c[sectorSize:], int64(i)*hs+sectorSize); err != nil {
			return errclass.IOf(fmt.Sprintf("luks: write LUKS2 header copy %d", i), err)
		}
	}
	if err := dev.Flush(); err != nil {
		return errclass.IOf("luks: flush luks2-fresh-bodies", err)
	}
	for _, i := range []int{1, 0} {
		if err := writeSector(dev, int64(i)*hs/sectorSize, copies[i][:sectorSize], fmt.Sprintf("luks2-fresh-magic-%d", i)); err != nil {
			return err
		}
	}
	return nil
}

// randomUUID is a version 4 UUID from crypto/rand, as cryptsetup makes one.
func randomUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("luks: random UUID: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		default:
			return false
		}
	}
	return true
}
