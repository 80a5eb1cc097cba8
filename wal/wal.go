// Package wal is cryptshift's write-ahead log: an append-only sequence of
// authenticated records in the log area of the metadata device. A record
// says how far the conversion got and, for the window being rewritten, what
// recovery needs to finish it (a copy of its old ciphertext, or hashes of its
// old and new sectors). The byte layout is in docs/FORMAT.md.
package wal

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/klauspost/crc32"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/header"
)

// BlockSize is the alignment of records: every record starts on a 4 KiB
// boundary so that it can be written with O_DIRECT on 4Kn devices.
const BlockSize = 4096

var magic = [8]byte{'C', 'S', 'L', 'O', 'G', 'R', 'E', 'C'}

// Field offsets inside a record's header block (docs/FORMAT.md, "Record
// header"). The encoder, the decoder and the golden test (TestGolden) use
// these names, and TestFormatTable checks them against FORMAT.md's table.
const (
	offMagic       = 0
	offSeq         = 8
	offUUID        = 16
	offType        = 32
	offReserved0   = 36 // 4 bytes
	offDone        = 40
	offPayloadLen  = 48
	offEncodedLen  = 56
	offOffset      = 64
	offPayloadHash = 72 // 16 bytes of digest, then 16 zero bytes
	offReserved1   = 104
	offMAC         = 4056 // HMAC-SHA256 over [0, offMAC)
	offReserved2   = 4088
	offCRC         = 4092 // crc32c over [0, offCRC), for keyless inspection
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Type says what a record carries.
type Type uint32

const (
	// TypeProgress: windows [0, Done) are converted and durable; no window is
	// open.
	TypeProgress Type = 1
	// TypeJournal: windows [0, Done) are converted; window Done is open and
	// the payload is its complete old ciphertext.
	TypeJournal Type = 2
	// TypeChecksum: windows [0, Done) are converted; window Done is open and
	// the payload holds, per unit, the hash of its old and of its new
	// ciphertext.
	TypeChecksum Type = 3
)

func (t Type) String() string {
	switch t {
	case TypeProgress:
		return "progress"
	case TypeJournal:
		return "journal"
	case TypeChecksum:
		return "checksum"
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// EndsWithWindowCopy reports whether the last of recs (the records after a
// checkpoint, in order) is a journal or checksum record: a copy of the old
// state of window Done, made before that window was touched. It is the log's
// half of header.(*Header).WindowOpen.
func EndsWithWindowCopy(recs []Record) bool {
	return len(recs) > 0 && recs[len(recs)-1].Type != TypeProgress
}

// ErrFull is returned by Append when the record does not fit before the end
// of the log area; the caller checkpoints and resets the log first.
var ErrFull = errors.New("log area full")

// Record is one decoded log record.
type Record struct {
	Seq         uint64
	Type        Type
	Done        uint64
	Payload     []byte   // nil for records returned by Scan; see Log.Payload
	PayloadLen  uint64   // unpadded payload length
	PayloadHash [32]byte // keyed digest of the payload (16 bytes), then 16 zero bytes
	Offset      uint64   // where the record starts, relative to the log area
	Authentic   bool     // the MAC was verified (false when scanned without a key)
}

// EncodedLen is the on-disk length of a record with a payload of n bytes.
func EncodedLen(n int) int64 {
	return BlockSize + (int64(n)+BlockSize-1)/BlockSize*BlockSize
}

// Log appends to and scans one log area.
type Log struct {
	dev    blockdev.Device
	off    int64 // log area on dev
	size   int64
	uuid   [16]byte
	macKey []byte

	tail    int64  // where the next record goes, relative to off
	nextSeq uint64 // its sequence number
	sum     *header.Summer
}

// payloadSum is the keyed digest of record seq's payload.
func (l *Log) payloadSum(seq uint64, p []byte) [32]byte {
	var out [32]byte
	t := l.sum.Sum(header.SumLogPayload, seq, 0, p)
	copy(out[:], t[:])
	return out
}

// New returns a log over dev[off, off+size) whose next record will be
// written at head with sequence number headSeq. The caller positions it
// after the last valid record with Scan before appending.
func New(dev blockdev.Device, off, size int64, uuid [16]byte, macKey []byte, head int64, headSeq uint64) *Log {
	l := &Log{dev: dev, off: off, size: size, uuid: uuid, macKey: macKey, tail: head, nextSeq: headSeq}
	if macKey != nil {
		// NewSummer fails only if AES-256 does, which cannot happen with a
		// 32-byte key.
		sum, err := header.NewSummer(macKey)
		if err != nil {
			panic(err)
		}
		l.sum = sum
	}
	return l
}

// Tail returns where the next record goes and its sequence number.
func (l *Log) Tail() (int64, uint64) { return l.tail, l.nextSeq }

// Reset moves the log head to the start of the area. Only call it after a
// header checkpoint recording (0, nextSeq) as the head is durable: the
// records before it are then no longer needed.
func (l *Log) Reset() { l.tail = 0 }

// Fits reports whether a record with an n-byte payload fits at the tail.
func (l *Log) Fits(n int) bool { return l.tail+EncodedLen(n) <= l.size }

// Capacity is the largest payload a record can carry in an empty log.
func (l *Log) Capacity() int64 { return l.size - BlockSize }

func (l *Log) encodeHeader(r *Record) []byte {
	b := make([]byte, BlockSize)
	le := binary.LittleEndian
	copy(b[offMagic:offSeq], magic[:])
	le.PutUint64(b[offSeq:], r.Seq)
	copy(b[offUUID:offType], l.uuid[:])
	le.PutUint32(b[offType:], uint32(r.Type))
	le.PutUint64(b[offDone:], r.Done)
	le.PutUint64(b[offPayloadLen:], r.PayloadLen)
	le.PutUint64(b[offEncodedLen:], uint64(EncodedLen(int(r.PayloadLen))))
	le.PutUint64(b[offOffset:], r.Offset)
	copy(b[offPayloadHash:offReserved1], r.PayloadHash[:])
	m := hmac.New(sha256.New, l.macKey)
	m.Write(b[:offMAC])
	copy(b[offMAC:offReserved2], m.Sum(nil))
	le.PutUint32(b[offCRC:], crc32.Checksum(b[:offCRC], castagnoli))
	return b
}

// Append writes a record at the tail and advances it. It does not flush:
// the caller's crash argument decides when the record must be durable.
func (l *Log) Append(t Type, done uint64, payload []byte) (Record, error) {
	if l.macKey == nil {
		return Record{}, errors.New("append to log: no MAC key (read-only log)")
	}
	if !l.Fits(len(payload)) {
		return Record{}, fmt.Errorf("append %s record of %d bytes at %d of %d: %w", t, len(payload), l.tail, l.size, ErrFull)
	}
	r := Record{Seq: l.nextSeq, Type: t, Done: done, PayloadLen: uint64(len(payload)),
		Offset: uint64(l.tail), Authentic: true}
	r.PayloadHash = l.payloadSum(r.Seq, payload)
	hdr := l.encodeHeader(&r)
	if len(payload)%BlockSize == 0 {
		// Two writes in one flush epoch are as good as one, and a
		// window-sized journal payload is not copied again.
		if _, err := l.dev.WriteAt(hdr, l.off+l.tail); err != nil {
			return Record{}, fmt.Errorf("write log record %d: %w", r.Seq, err)
		}
		if _, err := l.dev.WriteAt(payload, l.off+l.tail+BlockSize); err != nil {
			return Record{}, fmt.Errorf("write log record %d payload: %w", r.Seq, err)
		}
	} else {
		buf := make([]byte, EncodedLen(len(payload)))
		copy(buf, hdr)
		copy(buf[BlockSize:], payload)
		if _, err := l.dev.WriteAt(buf, l.off+l.tail); err != nil {
			return Record{}, fmt.Errorf("write log record %d: %w", r.Seq, err)
		}
	}
	l.tail += EncodedLen(len(payload))
	l.nextSeq++
	return r, nil
}

// decodeHeader validates the fixed block of a record expected at pos with
// sequence number seq. It returns ok=false for anything that is not exactly
// that record: the end of the valid log.
func (l *Log) decodeHeader(b []byte, pos int64, seq uint64) (Record, bool) {
	le := binary.LittleEndian
	if !bytes.Equal(b[offMagic:offSeq], magic[:]) || le.Uint32(b[offCRC:]) != crc32.Checksum(b[:offCRC], castagnoli) {
		return Record{}, false
	}
	r := Record{
		Seq:        le.Uint64(b[offSeq:]),
		Type:       Type(le.Uint32(b[offType:])),
		Done:       le.Uint64(b[offDone:]),
		PayloadLen: le.Uint64(b[offPayloadLen:]),
		Offset:     le.Uint64(b[offOffset:]),
	}
	copy(r.PayloadHash[:], b[offPayloadHash:offReserved1])
	if r.Seq != seq || !bytes.Equal(b[offUUID:offType], l.uuid[:]) || r.Offset != uint64(pos) {
		return Record{}, false
	}
	if r.Type != TypeProgress && r.Type != TypeJournal && r.Type != TypeChecksum {
		return Record{}, false
	}
	if le.Uint32(b[offReserved0:]) != 0 || !allZero(b[offReserved1:offMAC]) || !allZero(b[offReserved2:offCRC]) {
		return Record{}, false
	}
	if r.PayloadLen > uint64(l.size) || le.Uint64(b[offEncodedLen:]) != uint64(EncodedLen(int(r.PayloadLen))) ||
		pos+EncodedLen(int(r.PayloadLen)) > l.size {
		return Record{}, false
	}
	if l.macKey != nil {
		m := hmac.New(sha256.New, l.macKey)
		m.Write(b[:offMAC])
		if !hmac.Equal(m.Sum(nil), b[offMAC:offReserved2]) {
			return Record{}, false
		}
		r.Authentic = true
	}
	return r, true
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Scan reads records from the head given to New until the first one that
// is missing, torn, out of sequence or unauthentic, and leaves the log
// positioned after the last valid one. Payloads are hashed while scanning
// (a record whose payload does not match its hash ends the log) but not
// kept; Payload reads one back. Only I/O errors are returned as errors: a
// damaged tail is the expected result of a crash and simply ends the log.
func (l *Log) Scan() ([]Record, error) {
	var recs []Record
	hdr := make([]byte, BlockSize)
	var chunk []byte
	for l.tail+BlockSize <= l.size {
		if _, err := l.dev.ReadAt(hdr, l.off+l.tail); err != nil {
			return nil, fmt.Errorf("read log at %d: %w", l.tail, err)
		}
		r, ok := l.decodeHeader(hdr, l.tail, l.nextSeq)
		if !ok {
			break
		}
		// Without the key (status) the payload cannot be checked; such a
		// scan is for display only.
		if l.sum != nil {
			if uint64(cap(chunk)) < r.PayloadLen {
				chunk = make([]byte, r.PayloadLen)
			}
			p := chunk[:r.PayloadLen]
			if _, err := l.dev.ReadAt(p, l.off+int64(r.Offset)+BlockSize); err != nil {
				return nil, fmt.Errorf("read log payload of record %d: %w", r.Seq, err)
			}
			if l.payloadSum(r.Seq, p) != r.PayloadHash {
				break
			}
		}
		recs = append(recs, r)
		l.tail += EncodedLen(int(r.PayloadLen))
		l.nextSeq++
	}
	return recs, nil
}

// Payload reads a scanned record's payload and checks it against the hash
// again, since the device may have changed since the scan.
func (l *Log) Payload(r Record) ([]byte, error) {
	p := make([]byte, r.PayloadLen)
	if _, err := l.dev.ReadAt(p, l.off+int64(r.Offset)+BlockSize); err != nil {
		return nil, fmt.Errorf("read payload of log record %d: %w", r.Seq, err)
	}
	// A keyless log is for display (status) and returns the bytes as read;
	// anything that acts on a payload has the key.
	if l.sum != nil && l.payloadSum(r.Seq, p) != r.PayloadHash {
		return nil, fmt.Errorf("payload of log record %d changed since it was scanned", r.Seq)
	}
	return p, nil
}
