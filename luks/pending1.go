package luks

import (
	"bytes"
	"crypto/sha256"
	"fmt"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
)

// A LUKS1 conversion (engine) converts the data between a re-layout's
// Prepare and its switch, which may be days and several runs apart. The
// header it switches to, with the new keyslots' iterations and salts, is
// kept meanwhile in the header's padding: sectors 2 and 3, which no
// keyslot uses (CheckPendingRoom) and cryptsetup leaves zero. Its layout
// (docs/FORMAT.md, "LUKS1 conversion record"): the tag, the new phdr with
// the normal magic, and a sha256 over both, so that a torn write (one
// sector old, one new) reads as no record at all.
const (
	pendingOffset = 2 * sectorSize
	pendingLen    = 2 * sectorSize
	pendingPhdr   = 16
	pendingPlace  = pendingPhdr + phdrSize // 1 byte: where the engine's metadata lives
	pendingSum    = pendingPlace + 1
	pendingEnd    = pendingSum + sha256.Size
	// pendingFirstSector is the first sector past the record: a keyslot's
	// material must not start before it.
	pendingFirstSector = (pendingOffset + pendingLen) / sectorSize
)

var pendingTag = []byte("cryptshift:next1")

// PendingMeta says where a LUKS1 conversion keeps the engine's metadata,
// so that a later run can tell the user which --metadata to give.
type PendingMeta byte

const (
	MetaAtEnd    PendingMeta = 0 // the end of DEVICE
	MetaSeparate PendingMeta = 1 // a --metadata file or device
)

// CheckPendingRoom refuses a LUKS1 header with a keyslot (enabled or not)
// whose material starts inside the record's sectors: the record would
// overwrite it, or the keyslot's next write the record. cryptsetup's
// layouts start keyslots at sector 8.
func CheckPendingRoom(h *LUKS1) error {
	for i, k := range h.Keyslots {
		if k.KeyMaterialOffset < pendingFirstSector {
			return fmt.Errorf("%w: LUKS1 keyslot %d starts at sector %d, inside the header padding cryptshift needs for its conversion record (sectors 2 and 3)", errclass.Device, i, k.KeyMaterialOffset)
		}
	}
	return nil
}

// WritePendingLUKS1 writes the re-layout's new header as the conversion
// record and flushes (luks1-record): from then on the new volume key can be unlocked
// with any kept passphrase (PendingLUKS1), the new keyslots' material
// being durable already (Prepare). It is the start commit of a LUKS1
// conversion.
func WritePendingLUKS1(dev blockdev.Device, r *Relayout1, meta PendingMeta) error {
	_, cur, err := readPhdrSectors(dev)
	if err != nil {
		return err
	}
	if err := CheckPendingRoom(cur); err != nil {
		return err
	}
	if !bytes.Equal(cur.Raw[sectorSize:], r.newPhdr[sectorSize:]) {
		return fmt.Errorf("%w: the LUKS1 header's sector 1 is not the re-layout's: prepare it first", errclass.Conflict)
	}
	b := make([]byte, pendingLen)
	copy(b, pendingTag)
	copy(b[pendingPhdr:], r.newPhdr[:])
	copy(b[pendingPhdr:], magic1st)
	b[pendingPlace] = byte(meta)
	copy(b[pendingSum:], sha256Sum(b[:pendingSum]))
	if _, err := dev.WriteAt(b, pendingOffset); err != nil {
		return errclass.IOf("luks: write the LUKS1 conversion record", err)
	}
	if err := dev.Flush(); err != nil {
		return errclass.IOf("luks: flush luks1-record", err)
	}
	return nil
}

// PendingLUKS1 returns the volume as the conversion record's header
// describes it (the new key, cipher and keyslots, over the same device),
// or nil when v carries no valid record: none, torn, or not for v's UUID.
// A record whose sector 1 differs from v's is refused (Header): something
// other than cryptshift changed the header.
func (v *Volume) PendingLUKS1() (*Volume, PendingMeta, error) {
	if v.V1 == nil {
		return nil, 0, nil
	}
	b := make([]byte, pendingLen)
	n, err := readAt(v.dev, b, pendingOffset, v.size)
	if err != nil {
		return nil, 0, err
	}
	if n < pendingLen || !bytes.Equal(b[:len(pendingTag)], pendingTag) {
		return nil, 0, nil
	}
	if !bytes.Equal(sha256Sum(b[:pendingSum]), b[pendingSum:pendingEnd]) {
		return nil, 0, nil
	}
	pb := make([]byte, binHeaderSize)
	copy(pb, b[pendingPhdr:pendingPlace])
	h, err := parseLUKS1(pb, v.size)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: the LUKS1 conversion record holds an invalid header: %w", errclass.Header, err)
	}
	if h.UUID != v.UUID {
		return nil, 0, nil // a stale record of another volume
	}
	if !bytes.Equal(h.Raw[sectorSize:], v.V1.Raw[sectorSize:]) {
		return nil, 0, fmt.Errorf("%w: the LUKS1 header's keyslots 6 and 7 differ from cryptshift's conversion record: the header was changed by another tool during the conversion", errclass.Header)
	}
	return &Volume{Version: 1, UUID: h.UUID, V1: h, dev: v.dev, size: v.size}, PendingMeta(b[pendingPlace]), nil
}

// SwitchLUKS1 writes sector 0 of the conversion record's header with the
// normal magic (flush luks1-final-switch): in one sector write the volume
// goes from the old header marked as in conversion to the new header,
// which stock cryptsetup opens. next is what PendingLUKS1 returned. A
// volume already switched is left as it is.
func SwitchLUKS1(dev blockdev.Device, next *LUKS1) error {
	b, cur, err := readPhdrSectors(dev)
	if err != nil {
		return err
	}
	if !cur.Marked() && cur.Raw == next.Raw {
		return nil
	}
	if !cur.Marked() || !markedBy(b) {
		return fmt.Errorf("%w: the LUKS1 volume is not marked as in conversion by cryptshift: refusing to switch its header", errclass.Header)
	}
	if !bytes.Equal(b[sectorSize:phdrSize], next.Raw[sectorSize:]) {
		return fmt.Errorf("%w: the LUKS1 header's sector 1 is not the new header's: refusing to switch", errclass.Header)
	}
	s0 := bytes.Clone(next.Raw[:sectorSize])
	copy(s0, magic1st)
	return writeSector(dev, 0, s0, "luks1-final-switch")
}

// FinishLUKS1 completes what cryptshift left in an unmarked LUKS1 header
// (after the switch, or after AbandonLUKS1): every sector of the keyslot
// area no active keyslot uses is overwritten, the conversion record
// included (WipeLUKS1Unused, flush luks-keyslot-wipe), then the tag is
// cleared (flush luks1-unmark-tag). It needs no key and depends only on
// the header on the device, so it is redone after a crash.
func FinishLUKS1(dev blockdev.Device) error {
	_, h, err := readPhdrSectors(dev)
	if err != nil {
		return err
	}
	if h.Marked() {
		return fmt.Errorf("%w: the LUKS1 volume is still marked as in conversion", errclass.Header)
	}
	if err := WipeLUKS1Unused(dev, h); err != nil {
		return err
	}
	return UnmarkLUKS1(dev)
}

// AbandonLUKS1 undoes the start of a conversion that never wrote its
// record: the volume marked by cryptshift, its header the old one (kept
// passphrases possibly moved to other keyslots, which open the old key as
// before). The magic goes back (flush luks1-unmark-magic), then
// FinishLUKS1 overwrites the stray new material and clears the tag.
func AbandonLUKS1(dev blockdev.Device) error {
	b, h, err := readPhdrSectors(dev)
	if err != nil {
		return err
	}
	if h.Marked() {
		if !markedBy(b) {
			return fmt.Errorf("%w: the LUKS1 volume was marked by cryptsetup-reencrypt, not by cryptshift", errclass.Device)
		}
		v := &Volume{Version: 1, UUID: h.UUID, V1: h, dev: dev, size: dev.Size()}
		if next, _, err := v.PendingLUKS1(); err != nil || next != nil {
			return fmt.Errorf("%w: the LUKS1 volume has a conversion record: the conversion started, it cannot be abandoned", errclass.Header)
		}
		s0 := bytes.Clone(b[:sectorSize])
		copy(s0, magic1st)
		if err := writeSector(dev, 0, s0, "luks1-unmark-magic"); err != nil {
			return err
		}
	}
	return FinishLUKS1(dev)
}

// Tagged reports whether the LUKS1 phdr's padding carries cryptshift's tag
// for its UUID (MarkLUKS1 writes it first, FinishLUKS1 clears it last).
func (v *Volume) Tagged() (bool, error) {
	if v.V1 == nil {
		return false, nil
	}
	b := make([]byte, 2*sectorSize)
	n, err := readAt(v.dev, b, 0, v.size)
	if err != nil {
		return false, err
	}
	return n == len(b) && markedBy(b), nil
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
