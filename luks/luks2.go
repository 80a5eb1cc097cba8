package luks

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cryptshift/cryptshift/errclass"
)

// LUKS2 is a validated LUKS2 header: the binary header of the copy in use
// and its JSON metadata.
type LUKS2 struct {
	HdrSize     uint64 // one copy, binary header plus JSON area
	SeqID       uint64
	Label       string
	ChecksumAlg string
	UUID        string
	Subsystem   string
	// Offset is where the copy in use sits: 0 (primary) or HdrSize.
	Offset int64
	// Primary and Secondary say what was found at each copy's place: nil
	// when the copy is valid and current, else why it was not used. A
	// valid copy with a lower seqid is reported as stale.
	Primary, Secondary error
	Meta               *Metadata
	// salts are the per-copy salts of the copies that passed their
	// checksum (nil for one that did not), which a rewrite keeps as
	// cryptsetup does.
	salts [2][]byte
}

// errStale marks a valid copy that lost to the other one's higher seqid.
var errStale = errors.New("valid but older (lower seqid) than the other copy")

// binCopy is one copy's binary header and JSON area, checksum verified.
type binCopy struct {
	hdrSize, seqid uint64
	label, alg     string
	uuid, subsys   string
	salt           []byte
	json           []byte
}

// readBinCopy reads the copy at off and checks, each with its own error,
// its magic, version, own offset, size and checksum, as cryptsetup does
// before it looks at the JSON.
func readBinCopy(r io.ReaderAt, off, devSize int64, secondary bool) (*binCopy, error) {
	where := "primary"
	want := magic1st
	if secondary {
		where, want = "secondary", magic2nd
	}
	where = fmt.Sprintf("%s LUKS2 header at offset %d", where, off)
	if off+binHeaderSize > devSize {
		return nil, fmt.Errorf("%w: %s: beyond the end of the device", errclass.Header, where)
	}
	b := make([]byte, binHeaderSize)
	if _, err := readAt(r, b, off, devSize); err != nil {
		return nil, err
	}
	if !bytes.Equal(b[:6], want) {
		return nil, fmt.Errorf("%w: %s: bad magic", errclass.Header, where)
	}
	if v := binary.BigEndian.Uint16(b[6:8]); v != 2 {
		return nil, fmt.Errorf("%w: %s: unsupported version %d", errclass.Header, where, v)
	}
	if o := binary.BigEndian.Uint64(b[256:264]); o != uint64(off) {
		return nil, fmt.Errorf("%w: %s: records its own offset as %d", errclass.Header, where, o)
	}
	c := &binCopy{
		hdrSize: binary.BigEndian.Uint64(b[8:16]),
		seqid:   binary.BigEndian.Uint64(b[16:24]),
		label:   cString(b[24:72]),
		alg:     cString(b[72:104]),
		uuid:    cString(b[168:208]),
		subsys:  cString(b[208:256]),
		salt:    append([]byte(nil), b[104:168]...),
	}
	if c.hdrSize < minHdrSize || c.hdrSize > maxHdrSize {
		return nil, fmt.Errorf("%w: %s: bogus header size %d", errclass.Header, where, c.hdrSize)
	}
	if secondary && c.hdrSize != uint64(off) {
		return nil, fmt.Errorf("%w: %s: header size %d does not match its offset", errclass.Header, where, c.hdrSize)
	}
	if off+int64(c.hdrSize) > devSize {
		return nil, fmt.Errorf("%w: %s: its JSON area runs past the end of the device", errclass.Header, where)
	}
	c.json = make([]byte, c.hdrSize-binHeaderSize)
	if _, err := readAt(r, c.json, off+binHeaderSize, devSize); err != nil {
		return nil, err
	}
	newHash, ok := hashes[c.alg]
	if !ok {
		return nil, fmt.Errorf("%w: %s: checksum algorithm %q is not supported", errclass.Header, where, c.alg)
	}
	h := newHash()
	stored := append([]byte(nil), b[448:448+h.Size()]...)
	clear(b[448 : 448+64])
	h.Write(b)
	h.Write(c.json)
	if subtle.ConstantTimeCompare(h.Sum(nil), stored) != 1 {
		return nil, fmt.Errorf("%w: %s: checksum mismatch", errclass.Header, where)
	}
	return c, nil
}

// readLUKS2 finds and validates the LUKS2 header as cryptsetup's loader
// does: the primary copy, then the secondary at the primary's hdr_size (or,
// when the primary's binary header is unusable, at the first of the nine
// allowed offsets that holds one with a good checksum); of two valid
// copies the higher seqid wins, the primary on a tie. cryptsetup would now
// rewrite a bad or stale copy; this reader only reports it.
func readLUKS2(r io.ReaderAt, devSize int64) (*LUKS2, error) {
	var metas [2]*Metadata
	var errs [2]error
	var copies [2]*binCopy
	copies[0], errs[0] = readBinCopy(r, 0, devSize, false)
	if copies[0] != nil {
		metas[0], errs[0] = parseMetadata(copies[0].json, copies[0].hdrSize)
		copies[1], errs[1] = readBinCopy(r, int64(copies[0].hdrSize), devSize, true)
	} else {
		if errclass.Code(errs[0]) == errclass.ExitIO {
			return nil, errs[0]
		}
		errs[1] = fmt.Errorf("%w: no secondary LUKS2 header at any of the allowed offsets", errclass.Header)
		for _, off := range secondaryOffsets {
			c, err := readBinCopy(r, off, devSize, true)
			if errclass.Code(err) == errclass.ExitIO {
				return nil, err
			}
			if err == nil {
				copies[1], errs[1] = c, nil
				break
			}
		}
	}
	if errclass.Code(errs[1]) == errclass.ExitIO {
		return nil, errs[1]
	}
	if copies[1] != nil {
		metas[1], errs[1] = parseMetadata(copies[1].json, copies[1].hdrSize)
	}
	use := -1
	switch {
	case metas[0] != nil && metas[1] != nil:
		use = 0
		if copies[1].seqid > copies[0].seqid {
			use = 1
			errs[0] = errStale
		} else if copies[0].seqid > copies[1].seqid {
			errs[1] = errStale
		}
	case metas[0] != nil:
		use = 0
	case metas[1] != nil:
		use = 1
	default:
		return nil, fmt.Errorf("%w: no valid LUKS2 header copy: primary: %w; secondary: %w", errclass.Header, stripClass(errs[0]), stripClass(errs[1]))
	}
	c, m := copies[use], metas[use]
	if need := 2*c.hdrSize + m.Config.KeyslotsSize; need > uint64(devSize) {
		return nil, fmt.Errorf("%w: device is too small: its LUKS2 metadata and keyslots area need at least %d bytes, it has %d", errclass.Device, need, devSize)
	}
	h := &LUKS2{
		HdrSize: c.hdrSize, SeqID: c.seqid, Label: c.label, ChecksumAlg: c.alg,
		UUID: c.uuid, Subsystem: c.subsys, Meta: m,
		Primary: errs[0], Secondary: errs[1],
	}
	if use == 1 {
		h.Offset = int64(c.hdrSize)
	}
	for i, cp := range copies {
		if cp != nil {
			h.salts[i] = cp.salt
		}
	}
	return h, nil
}

// stripClass keeps an inner error's message without repeating its class
// when it is wrapped again.
func stripClass(err error) error {
	if err == nil {
		return errors.New("valid")
	}
	return classless{err}
}

type classless struct{ err error }

func (c classless) Error() string {
	s := c.err.Error()
	for _, p := range []string{errclass.Header.Error() + ": ", errclass.Device.Error() + ": "} {
		if len(s) > len(p) && s[:len(p)] == p {
			return s[len(p):]
		}
	}
	return s
}
