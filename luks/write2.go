package luks

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
)

// Draft2 is a LUKS2 header being prepared for a commit: the binary fields
// and the JSON text, edited by the Draft2 methods. It starts as a copy of
// a header read from the device and changes only what its methods change.
type Draft2 struct {
	HdrSize     uint64
	Label       string
	Subsystem   string
	UUID        string
	ChecksumAlg string
	// JSON is the compact JSON text (no NULs).
	JSON json.RawMessage
	// BaseSeqID is the seqid of the header the draft was made from; the
	// commit writes BaseSeqID+1 and refuses if the device moved on.
	BaseSeqID uint64
	salts     [2][]byte
}

// Draft copies h into a draft. The JSON text is h's raw text compacted,
// which for a header cryptsetup wrote is the text itself.
func (h *LUKS2) Draft() (*Draft2, error) {
	var b bytes.Buffer
	if err := json.Compact(&b, h.Meta.Raw); err != nil {
		return nil, fmt.Errorf("%w: LUKS2 metadata: %w", errclass.Header, err)
	}
	return &Draft2{
		HdrSize: h.HdrSize, Label: h.Label, Subsystem: h.Subsystem, UUID: h.UUID,
		ChecksumAlg: h.ChecksumAlg, JSON: b.Bytes(), BaseSeqID: h.SeqID, salts: h.salts,
	}, nil
}

// Metadata parses and validates the draft's JSON as the reader would.
func (d *Draft2) Metadata() (*Metadata, error) {
	if d.HdrSize < minHdrSize || d.HdrSize > maxHdrSize || !allowedHdrSize(d.HdrSize) {
		return nil, fmt.Errorf("%w: LUKS2 header size %d is not an allowed size", errclass.Header, d.HdrSize)
	}
	area := make([]byte, d.HdrSize-binHeaderSize)
	if len(d.JSON) >= len(area) {
		return nil, fmt.Errorf("%w: LUKS2 metadata of %d bytes does not fit the JSON area of %d (one NUL must follow)", errclass.Header, len(d.JSON), len(area))
	}
	copy(area, d.JSON)
	return parseMetadata(area, d.HdrSize)
}

// EncodeLUKS2 builds the two copies of a header at seqid: each is HdrSize
// bytes, a 4096-byte binary header and the JSON area (the text, then NULs),
// the checksum over the binary header with its checksum field zeroed and
// the whole JSON area. Each copy keeps the salt it had on the device, or
// gets a fresh random one (as cryptsetup does when it restores a copy).
func EncodeLUKS2(d *Draft2, seqid uint64) ([2][]byte, error) {
	var out [2][]byte
	if _, err := d.Metadata(); err != nil {
		return out, err
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"label", d.Label, 48}, {"subsystem", d.Subsystem, 48}, {"UUID", d.UUID, 40}, {"checksum algorithm", d.ChecksumAlg, 32}} {
		if len(f.v) >= f.max || bytes.IndexByte([]byte(f.v), 0) >= 0 {
			return out, fmt.Errorf("%w: LUKS2 %s %q does not fit its %d-byte field", errclass.Usage, f.name, f.v, f.max)
		}
	}
	newHash, ok := hashes[d.ChecksumAlg]
	if !ok {
		return out, fmt.Errorf("%w: LUKS2 checksum algorithm %q is not supported", errclass.Header, d.ChecksumAlg)
	}
	for i := range out {
		b := make([]byte, d.HdrSize)
		if i == 0 {
			copy(b, magic1st)
		} else {
			copy(b, magic2nd)
		}
		binary.BigEndian.PutUint16(b[6:], 2)
		binary.BigEndian.PutUint64(b[8:], d.HdrSize)
		binary.BigEndian.PutUint64(b[16:], seqid)
		copy(b[24:72], d.Label)
		copy(b[72:104], d.ChecksumAlg)
		if len(d.salts[i]) == 64 {
			copy(b[104:168], d.salts[i])
		} else if _, err := rand.Read(b[104:168]); err != nil {
			return out, fmt.Errorf("luks: salt for a LUKS2 header copy: %w", err)
		}
		copy(b[168:208], d.UUID)
		copy(b[208:256], d.Subsystem)
		binary.BigEndian.PutUint64(b[256:], uint64(i)*d.HdrSize)
		copy(b[binHeaderSize:], d.JSON)
		h := newHash()
		h.Write(b)
		copy(b[448:448+64], h.Sum(nil))
		out[i] = b
	}
	return out, nil
}

// CommitLUKS2 writes the draft to dev as the next header (seqid
// BaseSeqID+1), crash-safely (docs/DESIGN.md, "LUKS header commits"): it
// rereads the header and refuses (Conflict) if it is no longer the one the
// draft came from, then writes first the copy that does not hold the
// current header (the primary when both do, as cryptsetup), flushes
// (luks2-first-copy), writes the other copy and flushes (luks2-second-copy).
// Anything the new header points at (keyslot material) must be durable
// before the call.
func CommitLUKS2(dev blockdev.Device, d *Draft2) error {
	return commitLUKS2(dev, d, "")
}

// commitLUKS2 is CommitLUKS2 that also lets the header carry the
// requirement own (none when ""), for CommitLUKS2Own.
func commitLUKS2(dev blockdev.Device, d *Draft2, own string) error {
	cur, err := readLUKS2(dev, dev.Size())
	if err != nil {
		return fmt.Errorf("luks: reread the LUKS2 header before a commit: %w", err)
	}
	if cur.SeqID != d.BaseSeqID || cur.UUID != d.UUID || cur.HdrSize != d.HdrSize {
		return fmt.Errorf("%w: the LUKS2 header changed since it was read (seqid %d, now %d): refusing to overwrite it", errclass.Conflict, d.BaseSeqID, cur.SeqID)
	}
	var foreign []string
	for _, r := range unknownRequirements(cur.Meta) {
		if r != own || own == "" {
			foreign = append(foreign, r)
		}
	}
	if len(foreign) > 0 {
		return fmt.Errorf("%w: the LUKS2 header has requirements cryptsetup 2.6 does not know (%v): like cryptsetup, cryptshift does not change it", errclass.Device, foreign)
	}
	m, err := d.Metadata()
	if err != nil {
		return err
	}
	if need := 2*d.HdrSize + m.Config.KeyslotsSize; need > uint64(dev.Size()) {
		return fmt.Errorf("%w: device of %d bytes cannot hold the LUKS2 metadata and keyslots (%d bytes)", errclass.Device, dev.Size(), need)
	}
	copies, err := EncodeLUKS2(d, d.BaseSeqID+1)
	if err != nil {
		return err
	}
	for _, i := range commitOrder(cur) {
		if _, err := dev.WriteAt(copies[i], int64(i)*int64(d.HdrSize)); err != nil {
			return errclass.IOf(fmt.Sprintf("luks: write LUKS2 header copy %d", i), err)
		}
		if err := dev.Flush(); err != nil {
			return errclass.IOf(fmt.Sprintf("luks: flush LUKS2 header copy %d", i), err)
		}
	}
	return nil
}

// commitOrder is the order in which to write the copies (0 primary, 1
// secondary): the one not holding the current header first, so that the
// current one is intact until a complete new copy is durable.
func commitOrder(cur *LUKS2) [2]int {
	if cur.Primary == nil && cur.Secondary != nil {
		return [2]int{1, 0}
	}
	return [2]int{0, 1}
}

// unknownRequirements lists mandatory requirements cryptsetup 2.6 does
// not know.
func unknownRequirements(m *Metadata) []string {
	var out []string
	for _, r := range m.Config.Mandatory {
		switch r {
		case "offline-reencrypt", "online-reencrypt", "online-reencrypt-v2", "online-reencrypt-v3":
		default:
			out = append(out, r)
		}
	}
	return out
}
