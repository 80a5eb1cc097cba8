package luks

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
)

// ErrInConversion is wrapped by Open's error for a LUKS1 volume that
// cryptshift marked as in conversion (MarkLUKS1): stock cryptsetup sees no
// LUKS header there, and only cryptshift recover may act on it.
var ErrInConversion = errors.New("LUKS1 volume marked as in conversion by cryptshift")

// The mark's tag sits in the phdr's second sector after the phdr itself
// (bytes 592 to 1023 are padding that no keyslot may use: material starts
// at sector 2 at the earliest), followed by the volume's UUID, so that a
// stale tag from another volume or an old run is not taken for this one.
const (
	markTagOffset  = phdrSize
	markUUIDOffset = markTagOffset + 16
	markEnd        = markUUIDOffset + 40
)

var markTag = []byte("cryptshift:luks1")

// markedBy reports whether the first two sectors b carry cryptshift's tag
// for the UUID recorded in the phdr.
func markedBy(b []byte) bool {
	if len(b) < markEnd {
		return false
	}
	return bytes.Equal(b[markTagOffset:markUUIDOffset], markTag) &&
		bytes.Equal(b[markUUIDOffset:markEnd], b[168:208])
}

// parseLUKS1Marked is parseLUKS1 for a phdr whose magic is the normal one
// or the in-conversion one (LUKS\xde\xad); Raw keeps the magic as found.
func parseLUKS1Marked(b []byte, devSize int64) (*LUKS1, error) {
	if !bytes.Equal(b[:6], magicReenc) {
		return parseLUKS1(b, devSize)
	}
	c := bytes.Clone(b)
	copy(c, magic1st)
	h, err := parseLUKS1(c, devSize)
	if err != nil {
		return nil, err
	}
	copy(h.Raw[:], magicReenc)
	return h, nil
}

// Marked reports whether the phdr's magic is the in-conversion one.
func (h *LUKS1) Marked() bool { return bytes.Equal(h.Raw[:6], magicReenc) }

// OpenMarked reads a LUKS1 volume whose magic is LUKS\xde\xad, marked by
// cryptshift (MarkLUKS1) or by cryptsetup's legacy reencryption, and
// validates it as Open validates a LUKS1 header. The Volume unlocks and
// maps as usual; its InConversion field says whether the mark is
// cryptshift's. Any other device is refused as Open would refuse it.
func OpenMarked(dev io.ReaderAt, size int64) (*Volume, error) {
	b := make([]byte, binHeaderSize)
	n, err := readAt(dev, b, 0, size)
	if err != nil {
		return nil, err
	}
	if n < 1024 || !bytes.Equal(b[:6], magicReenc) {
		return nil, fmt.Errorf("%w: no LUKS1 header marked as in conversion (magic LUKS\\xde\\xad)", errclass.Device)
	}
	h, err := parseLUKS1Marked(b, size)
	if err != nil {
		return nil, err
	}
	return &Volume{Version: 1, UUID: h.UUID, V1: h, InConversion: markedBy(b), dev: dev, size: size}, nil
}

// MarkLUKS1 marks a LUKS1 volume as in conversion, as cryptsetup's legacy
// reencryption does, so that stock tools (cryptsetup, blkid) no longer see
// a LUKS volume: first the tag and UUID into the padding of the phdr's
// second sector (flush luks1-mark-tag), then the magic LUKS\xde\xad into
// sector 0 (flush luks1-mark-magic). Each is one sector write; the phdr
// fields are written back as they are. A volume already marked by
// cryptshift is left as it is.
func MarkLUKS1(dev blockdev.Device) error {
	b, h, err := readPhdrSectors(dev)
	if err != nil {
		return err
	}
	if h.Marked() {
		if markedBy(b) {
			return nil
		}
		return fmt.Errorf("%w: the LUKS1 volume is in the middle of a cryptsetup-reencrypt run (magic LUKS\\xde\\xad): finish it with cryptsetup first", errclass.Device)
	}
	if !markedBy(b) {
		s1 := bytes.Clone(b[sectorSize : 2*sectorSize])
		copy(s1[markTagOffset-sectorSize:], markTag)
		copy(s1[markUUIDOffset-sectorSize:], b[168:208])
		if err := writeSector(dev, 1, s1, "luks1-mark-tag"); err != nil {
			return err
		}
	}
	s0 := bytes.Clone(b[:sectorSize])
	copy(s0, magicReenc)
	return writeSector(dev, 0, s0, "luks1-mark-magic")
}

// UnmarkLUKS1 undoes MarkLUKS1: the magic LUKS\xba\xbe back into sector 0
// (flush luks1-unmark-magic), then the tag cleared (flush
// luks1-unmark-tag). It refuses a volume cryptsetup's reencryption
// marked. A volume not marked is left as it is, its stale tag cleared.
func UnmarkLUKS1(dev blockdev.Device) error {
	b, h, err := readPhdrSectors(dev)
	if err != nil {
		return err
	}
	if h.Marked() {
		if !markedBy(b) {
			return fmt.Errorf("%w: the LUKS1 volume was marked by cryptsetup-reencrypt, not by cryptshift: refusing to unmark it", errclass.Device)
		}
		s0 := bytes.Clone(b[:sectorSize])
		copy(s0, magic1st)
		if err := writeSector(dev, 0, s0, "luks1-unmark-magic"); err != nil {
			return err
		}
	}
	if bytes.Equal(b[markTagOffset:markUUIDOffset], markTag) {
		s1 := bytes.Clone(b[sectorSize : 2*sectorSize])
		clear(s1[markTagOffset-sectorSize : markEnd-sectorSize])
		return writeSector(dev, 1, s1, "luks1-unmark-tag")
	}
	return nil
}

// readPhdrSectors reads the first two sectors and parses the phdr in
// them, marked or not.
func readPhdrSectors(dev blockdev.Device) ([]byte, *LUKS1, error) {
	b := make([]byte, 2*sectorSize)
	n, err := readAt(dev, b, 0, dev.Size())
	if err != nil {
		return nil, nil, err
	}
	if n < len(b) || !(bytes.Equal(b[:6], magic1st) || bytes.Equal(b[:6], magicReenc)) || b[6] != 0 || b[7] != 1 {
		return nil, nil, fmt.Errorf("%w: no LUKS1 header", errclass.Device)
	}
	h, err := parseLUKS1Marked(b, dev.Size())
	if err != nil {
		return nil, nil, err
	}
	return b, h, nil
}

// writeSector writes one whole 512-byte sector and flushes (the flush
// point named).
func writeSector(dev blockdev.Device, s int64, b []byte, flush string) error {
	if len(b) != sectorSize {
		panic("luks: writeSector needs one sector")
	}
	if _, err := dev.WriteAt(b, s*sectorSize); err != nil {
		return errclass.IOf(fmt.Sprintf("luks: write sector %d", s), err)
	}
	if err := dev.Flush(); err != nil {
		return errclass.IOf("luks: flush "+flush, err)
	}
	return nil
}
