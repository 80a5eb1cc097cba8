package luks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cryptshift/cryptshift/errclass"
)

var (
	magic1st = []byte{'L', 'U', 'K', 'S', 0xba, 0xbe}
	magic2nd = []byte{'S', 'K', 'U', 'L', 0xba, 0xbe}
	// magicReenc is what cryptsetup's legacy LUKS1 reencryption writes over
	// the magic while it runs, so that nothing opens the half-converted
	// volume.
	magicReenc = []byte{'L', 'U', 'K', 'S', 0xde, 0xad}
)

// secondaryOffsets are the offsets where a LUKS2 secondary header may sit:
// one per allowed metadata size (16 KiB to 4 MiB, doubling).
var secondaryOffsets = []int64{
	0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
}

// Signature is what Detect found: enough to name the volume in a message,
// nothing validated beyond the magic, the version and (LUKS2) the copy's
// own offset, which is what libblkid checks too.
type Signature struct {
	Version int    // 1 or 2; another number when the magic carries an unknown version
	UUID    string // as recorded, trimmed at the first NUL
	Offset  int64  // where the header copy was found: 0, or a LUKS2 secondary's offset
	// Reencrypting: the magic is the one cryptsetup's legacy (LUKS1)
	// reencryption writes while it runs.
	Reencrypting bool
	// InConversion: the magic is LUKS\xde\xad and the phdr carries
	// cryptshift's mark (MarkLUKS1), not cryptsetup's reencryption.
	InConversion bool
}

// String names the volume for messages, e.g. "LUKS2 volume (UUID ...)".
func (s *Signature) String() string {
	what := fmt.Sprintf("LUKS%d volume", s.Version)
	if s.InConversion {
		what = "LUKS1 volume marked as in conversion by cryptshift (magic LUKS\\xde\\xad)"
	} else if s.Reencrypting {
		what = "LUKS1 volume in the middle of a cryptsetup-reencrypt run (magic LUKS\\xde\\xad)"
	}
	if s.Offset != 0 {
		what += fmt.Sprintf(" whose primary header is damaged (secondary header at offset %d)", s.Offset)
	}
	if s.UUID != "" {
		what += fmt.Sprintf(" (UUID %s)", s.UUID)
	}
	return what
}

// Detect looks for a LUKS header the way libblkid and cryptsetup look for
// one: the primary magic at offset 0, else a LUKS2 secondary header at one
// of the nine allowed offsets (a volume whose primary copy was damaged is
// still LUKS: cryptsetup restores the primary from it on the next load).
// It returns nil and no error when there is none. size is the device size
// in bytes; offsets beyond it are not read.
func Detect(r io.ReaderAt, size int64) (*Signature, error) {
	var buf [binHeaderSize]byte
	n, err := readAt(r, buf[:], 0, size)
	if err != nil {
		return nil, err
	}
	if n >= 208 {
		v := int(binary.BigEndian.Uint16(buf[6:8]))
		switch {
		case bytes.Equal(buf[:6], magicReenc):
			return &Signature{Version: v, UUID: cString(buf[168:208]), Reencrypting: true, InConversion: n >= markEnd && markedBy(buf[:n])}, nil
		case bytes.Equal(buf[:6], magic1st) && v != 2:
			return &Signature{Version: v, UUID: cString(buf[168:208])}, nil
		case bytes.Equal(buf[:6], magic1st) && n >= 264 && binary.BigEndian.Uint64(buf[256:264]) == 0:
			return &Signature{Version: 2, UUID: cString(buf[168:208])}, nil
		}
	}
	for _, off := range secondaryOffsets {
		if off+binHeaderSize > size {
			break
		}
		if _, err := readAt(r, buf[:], off, size); err != nil {
			return nil, err
		}
		if bytes.Equal(buf[:6], magic2nd) && binary.BigEndian.Uint16(buf[6:8]) == 2 &&
			binary.BigEndian.Uint64(buf[256:264]) == uint64(off) {
			return &Signature{Version: 2, UUID: cString(buf[168:208]), Offset: off}, nil
		}
	}
	return nil, nil
}

// readAt fills as much of buf from off as the device holds and returns how
// much that was; a read error is I/O.
func readAt(r io.ReaderAt, buf []byte, off, size int64) (int, error) {
	if off >= size {
		return 0, nil
	}
	if rest := size - off; int64(len(buf)) > rest {
		buf = buf[:rest]
	}
	n, err := r.ReadAt(buf, off)
	if err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
		return n, errclass.IOf(fmt.Sprintf("luks: read %d bytes at offset %d", len(buf), off), err)
	}
	return n, nil
}

// cString is b up to its first NUL.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
