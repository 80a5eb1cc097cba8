// Package header encodes, authenticates and commits cryptshift's on-disk
// header: the record of what is being converted, how, and how far it got.
// The byte layout is specified in docs/FORMAT.md; keep the two in step.
package header

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/klauspost/crc32"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

// Size is the size of one header copy on disk.
const Size = 4096

// Version is the only format version this code reads and writes.
const Version = 1

var magic = [8]byte{'C', 'R', 'Y', 'P', 'T', 'S', 'H', 'F'}

// Field offsets inside a header copy (docs/FORMAT.md, "Header copy"). The
// encoder, the decoder and the golden test (TestGolden) use these names, and
// TestFormatTables checks them against FORMAT.md's table.
const (
	offMagic      = 0
	offVersion    = 8
	offSize       = 10
	offReserved0  = 12 // 4 bytes
	offSeq        = 16
	offUUID       = 24
	offDeviceSize = 40
	offMetaOffset = 48
	offMetaSize   = 56
	offDataSize   = 64
	offOldOffset  = 72
	offNewOffset  = 80
	offWindow     = 88
	offMode       = 96
	offState      = 97
	offDirection  = 98
	offEngines    = 99
	offReserved1  = 100 // 4 bytes
	offDone       = 104
	offLogOffset  = 112
	offLogSize    = 120
	offLogHead    = 128
	offLogHeadSeq = 136
	offDigestOff  = 144
	offDigestSize = 152
	offCreated    = 160
	offUpdated    = 168
	offOldMapping = 176
	offNewMapping = offOldMapping + mappingSize
	offOldKCV     = 320
	offNewKCV     = 352
	offReserved2  = 384  // up to offMAC
	offMAC        = 4024 // HMAC-SHA256 over [0, offMAC)
	offReserved3  = 4056 // up to offCRC
	offCRC        = 4092 // crc32c over [0, offCRC)
)

// Field offsets inside a recorded mapping (docs/FORMAT.md, "Mapping").
const (
	mapCipher     = 0
	mapKeyBytes   = 48
	mapSectorSize = 52
	mapFlags      = 56
	mapReserved   = 60
	mapIVOffset   = 64
	mappingSize   = 72
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors a caller distinguishes: a copy that is not a header at all, one
// that is torn or damaged, and one whose MAC does not verify under the keys.
var (
	ErrNoHeader    = errors.New("no cryptshift header")
	ErrCorrupt     = errors.New("header corrupt")
	ErrUnsupported = errors.New("unsupported header version")
	ErrAuth        = errors.New("header authentication failed")
)

// Mode is the resilience mode: how a window is protected while it is rewritten.
type Mode uint8

const (
	ModeJournal  Mode = 1
	ModeChecksum Mode = 2
	ModeShift    Mode = 3
	ModeNone     Mode = 4
)

func (m Mode) String() string {
	switch m {
	case ModeJournal:
		return "journal"
	case ModeChecksum:
		return "checksum"
	case ModeShift:
		return "shift"
	case ModeNone:
		return "none"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode maps a --resilience value to a Mode.
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{ModeJournal, ModeChecksum, ModeShift, ModeNone} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown resilience mode %q (want journal, checksum, shift or none)", s)
}

// State is the conversion's lifecycle state.
type State uint8

const (
	StateInProgress State = 1 // windows may be in flight: a crash needs recovery
	StatePaused     State = 2 // stopped cleanly between windows
	StateComplete   State = 3 // every window converted
)

func (s State) String() string {
	switch s {
	case StateInProgress:
		return "in-progress"
	case StatePaused:
		return "paused"
	case StateComplete:
		return "complete"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Mapping describes one side of the conversion without its key.
type Mapping struct {
	Cipher         string // dm-crypt cipher spec, or "none"
	KeyBytes       uint32
	SectorSize     uint32
	IVOffset       uint64 // in 512-byte units, as in the dm table
	IVLargeSectors bool
}

const mappingCipherLen = mapKeyBytes - mapCipher

// Header is the decoded form of one header copy.
type Header struct {
	Seq        uint64
	UUID       [16]byte
	DeviceSize uint64 // size of the data device when the conversion began
	MetaOffset uint64 // metadata area, on the metadata device
	MetaSize   uint64
	DataSize   uint64 // bytes of logical data being converted
	OldOffset  uint64 // where the old mapping's data starts on the data device
	NewOffset  uint64 // where the new mapping's data starts (differs only in shift mode)
	Window     uint64
	Mode       Mode
	State      State
	Descending bool // windows are processed from the end (shift towards higher offsets)
	Engines    Engines
	Done       uint64
	LogOffset  uint64 // log area, on the metadata device
	LogSize    uint64
	LogHeadOff uint64 // first record after the last checkpoint, relative to LogOffset
	LogHeadSeq uint64
	DigestOff  uint64 // digest table, on the metadata device
	DigestSize uint64
	Created    int64 // unix seconds, informational
	Updated    int64
	Old, New   Mapping
	OldKCV     [32]byte
	NewKCV     [32]byte
}

// Marshal encodes h and seals it with crc32c and an HMAC under macKey.
func (h *Header) Marshal(macKey []byte) ([]byte, error) {
	if len(h.Old.Cipher) >= mappingCipherLen || len(h.New.Cipher) >= mappingCipherLen {
		return nil, fmt.Errorf("encode header: cipher spec longer than %d bytes", mappingCipherLen-1)
	}
	// A NUL would end the spec early on decoding: the copy would not read
	// back as written.
	if strings.IndexByte(h.Old.Cipher, 0) >= 0 || strings.IndexByte(h.New.Cipher, 0) >= 0 {
		return nil, errors.New("encode header: cipher spec contains a NUL byte")
	}
	b := make([]byte, Size)
	le := binary.LittleEndian
	copy(b[offMagic:offVersion], magic[:])
	le.PutUint16(b[offVersion:], Version)
	le.PutUint16(b[offSize:], Size)
	le.PutUint64(b[offSeq:], h.Seq)
	copy(b[offUUID:offDeviceSize], h.UUID[:])
	le.PutUint64(b[offDeviceSize:], h.DeviceSize)
	le.PutUint64(b[offMetaOffset:], h.MetaOffset)
	le.PutUint64(b[offMetaSize:], h.MetaSize)
	le.PutUint64(b[offDataSize:], h.DataSize)
	le.PutUint64(b[offOldOffset:], h.OldOffset)
	le.PutUint64(b[offNewOffset:], h.NewOffset)
	le.PutUint64(b[offWindow:], h.Window)
	b[offMode] = byte(h.Mode)
	b[offState] = byte(h.State)
	if h.Descending {
		b[offDirection] = 1
	}
	b[offEngines] = byte(h.Engines)
	le.PutUint64(b[offDone:], h.Done)
	le.PutUint64(b[offLogOffset:], h.LogOffset)
	le.PutUint64(b[offLogSize:], h.LogSize)
	le.PutUint64(b[offLogHead:], h.LogHeadOff)
	le.PutUint64(b[offLogHeadSeq:], h.LogHeadSeq)
	le.PutUint64(b[offDigestOff:], h.DigestOff)
	le.PutUint64(b[offDigestSize:], h.DigestSize)
	le.PutUint64(b[offCreated:], uint64(h.Created))
	le.PutUint64(b[offUpdated:], uint64(h.Updated))
	putMapping(b[offOldMapping:offOldMapping+mappingSize], h.Old)
	putMapping(b[offNewMapping:offNewMapping+mappingSize], h.New)
	copy(b[offOldKCV:offNewKCV], h.OldKCV[:])
	copy(b[offNewKCV:offReserved2], h.NewKCV[:])
	mac := hmac.New(sha256.New, macKey)
	mac.Write(b[:offMAC])
	copy(b[offMAC:offReserved3], mac.Sum(nil))
	le.PutUint32(b[offCRC:], crc32.Checksum(b[:offCRC], castagnoli))
	return b, nil
}

func putMapping(b []byte, m Mapping) {
	le := binary.LittleEndian
	copy(b[mapCipher:mapKeyBytes], m.Cipher)
	le.PutUint32(b[mapKeyBytes:], m.KeyBytes)
	le.PutUint32(b[mapSectorSize:], m.SectorSize)
	if m.IVLargeSectors {
		le.PutUint32(b[mapFlags:], 1)
	}
	le.PutUint64(b[mapIVOffset:], m.IVOffset)
}

func getMapping(b []byte) (Mapping, error) {
	le := binary.LittleEndian
	name := b[mapCipher:mapKeyBytes]
	n := bytes.IndexByte(name, 0)
	if n < 0 {
		return Mapping{}, fmt.Errorf("%w: cipher spec not terminated", ErrCorrupt)
	}
	if !allZero(name[n:]) || !allZero(b[mapReserved:mapIVOffset]) {
		return Mapping{}, fmt.Errorf("%w: non-zero reserved bytes in mapping", ErrCorrupt)
	}
	flags := le.Uint32(b[mapFlags:])
	if flags&^1 != 0 {
		return Mapping{}, fmt.Errorf("%w: unknown mapping flags %#x", ErrCorrupt, flags)
	}
	return Mapping{
		Cipher:         string(name[:n]),
		KeyBytes:       le.Uint32(b[mapKeyBytes:]),
		SectorSize:     le.Uint32(b[mapSectorSize:]),
		IVLargeSectors: flags&1 != 0,
		IVOffset:       le.Uint64(b[mapIVOffset:]),
	}, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Unmarshal decodes one header copy, checking magic, version, crc32c and the
// internal consistency of its fields. It does not check the MAC: that needs
// the keys, and VerifyMAC does it. A decoded header must never drive a write
// before VerifyMAC has accepted it.
func Unmarshal(b []byte) (*Header, error) {
	if len(b) != Size {
		return nil, fmt.Errorf("%w: copy is %d bytes, want %d", ErrCorrupt, len(b), Size)
	}
	if !bytes.Equal(b[offMagic:offVersion], magic[:]) {
		return nil, ErrNoHeader
	}
	le := binary.LittleEndian
	if got, want := le.Uint32(b[offCRC:]), crc32.Checksum(b[:offCRC], castagnoli); got != want {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	if v := le.Uint16(b[offVersion:]); v != Version {
		return nil, fmt.Errorf("%w %d (this cryptshift reads version %d)", ErrUnsupported, v, Version)
	}
	if s := le.Uint16(b[offSize:]); s != Size {
		return nil, fmt.Errorf("%w: header size field %d", ErrCorrupt, s)
	}
	if !allZero(b[offReserved0:offSeq]) || !allZero(b[offReserved1:offDone]) || !allZero(b[offReserved2:offMAC]) || !allZero(b[offReserved3:offCRC]) {
		return nil, fmt.Errorf("%w: non-zero reserved bytes", ErrCorrupt)
	}
	h := &Header{
		Seq:        le.Uint64(b[offSeq:]),
		DeviceSize: le.Uint64(b[offDeviceSize:]),
		MetaOffset: le.Uint64(b[offMetaOffset:]),
		MetaSize:   le.Uint64(b[offMetaSize:]),
		DataSize:   le.Uint64(b[offDataSize:]),
		OldOffset:  le.Uint64(b[offOldOffset:]),
		NewOffset:  le.Uint64(b[offNewOffset:]),
		Window:     le.Uint64(b[offWindow:]),
		Mode:       Mode(b[offMode]),
		State:      State(b[offState]),
		Descending: b[offDirection] == 1,
		Engines:    Engines(b[offEngines]),
		Done:       le.Uint64(b[offDone:]),
		LogOffset:  le.Uint64(b[offLogOffset:]),
		LogSize:    le.Uint64(b[offLogSize:]),
		LogHeadOff: le.Uint64(b[offLogHead:]),
		LogHeadSeq: le.Uint64(b[offLogHeadSeq:]),
		DigestOff:  le.Uint64(b[offDigestOff:]),
		DigestSize: le.Uint64(b[offDigestSize:]),
		Created:    int64(le.Uint64(b[offCreated:])),
		Updated:    int64(le.Uint64(b[offUpdated:])),
	}
	copy(h.UUID[:], b[offUUID:offDeviceSize])
	if b[offDirection] > 1 {
		return nil, fmt.Errorf("%w: direction byte %d", ErrCorrupt, b[offDirection])
	}
	if h.Engines&^knownEngines != 0 {
		return nil, fmt.Errorf("%w: unknown crypto engine bits %#x", ErrCorrupt, b[offEngines])
	}
	var err error
	if h.Old, err = getMapping(b[offOldMapping : offOldMapping+mappingSize]); err != nil {
		return nil, err
	}
	if h.New, err = getMapping(b[offNewMapping : offNewMapping+mappingSize]); err != nil {
		return nil, err
	}
	copy(h.OldKCV[:], b[offOldKCV:offNewKCV])
	copy(h.NewKCV[:], b[offNewKCV:offReserved2])
	if err := h.Check(); err != nil {
		return nil, err
	}
	return h, nil
}

// Check validates the relations between fields that every header must
// satisfy, so that a header that passed Unmarshal cannot make the engine
// compute an out-of-range offset.
func (h *Header) Check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
	}
	switch h.Mode {
	case ModeJournal, ModeChecksum, ModeShift, ModeNone:
	default:
		return bad("unknown resilience mode %d", h.Mode)
	}
	switch h.State {
	case StateInProgress, StatePaused, StateComplete:
	default:
		return bad("unknown state %d", h.State)
	}
	for _, m := range []Mapping{h.Old, h.New} {
		if m.SectorSize < 512 || m.SectorSize > 4096 || m.SectorSize&(m.SectorSize-1) != 0 {
			return bad("sector size %d", m.SectorSize)
		}
		if m.KeyBytes > 512 {
			return bad("key size %d", m.KeyBytes)
		}
	}
	if h.Window == 0 || h.Window%4096 != 0 || h.Window > 1<<32 {
		return bad("window size %d", h.Window)
	}
	if h.DataSize == 0 || h.DataSize%4096 != 0 {
		return bad("data size %d", h.DataSize)
	}
	if h.Done > h.Windows() {
		return bad("progress %d beyond %d windows", h.Done, h.Windows())
	}
	if h.State == StateComplete && h.Done != h.Windows() {
		return bad("complete with %d of %d windows", h.Done, h.Windows())
	}
	if h.OldOffset%512 != 0 || h.NewOffset%512 != 0 {
		return bad("data offsets %d, %d not sector aligned", h.OldOffset, h.NewOffset)
	}
	if h.Mode != ModeShift && h.OldOffset != h.NewOffset {
		return bad("data offset changes outside shift mode")
	}
	if h.Mode == ModeShift {
		gap := absDiff(h.OldOffset, h.NewOffset)
		if gap < h.Window {
			return bad("shift gap %d smaller than window %d", gap, h.Window)
		}
		if h.Descending != (h.NewOffset > h.OldOffset) {
			return bad("shift direction disagrees with offsets")
		}
	} else if h.Descending {
		return bad("descending order outside shift mode")
	}
	for _, end := range []uint64{h.OldOffset, h.NewOffset} {
		if end+h.DataSize < end || end+h.DataSize > h.DeviceSize {
			return bad("data area [%d, +%d) beyond device size %d", end, h.DataSize, h.DeviceSize)
		}
	}
	if h.MetaSize == 0 || h.MetaOffset+h.MetaSize < h.MetaOffset {
		return bad("metadata area size %d", h.MetaSize)
	}
	// Offsets become int64 in the engine and in blockdev; anything past
	// MaxInt64 would turn negative there. Bounding the two areas bounds
	// every offset and size inside them.
	if h.DeviceSize > math.MaxInt64 || h.MetaOffset+h.MetaSize > math.MaxInt64 {
		return bad("device size %d or metadata area [%d, +%d) beyond 2^63", h.DeviceSize, h.MetaOffset, h.MetaSize)
	}
	in := func(off, size uint64) bool {
		return off >= h.MetaOffset && off+size >= off && off+size <= h.MetaOffset+h.MetaSize
	}
	if !in(h.LogOffset, h.LogSize) || h.LogSize < 2*4096 || h.LogOffset%4096 != 0 || h.LogSize%4096 != 0 {
		return bad("log area [%d, +%d)", h.LogOffset, h.LogSize)
	}
	if h.LogHeadOff >= h.LogSize || h.LogHeadOff%4096 != 0 || h.LogHeadSeq == 0 {
		return bad("log head %d seq %d", h.LogHeadOff, h.LogHeadSeq)
	}
	if !in(h.DigestOff, h.DigestSize) || h.DigestSize < h.Windows()*DigestEntrySize {
		return bad("digest table [%d, +%d) for %d windows", h.DigestOff, h.DigestSize, h.Windows())
	}
	if overlaps(h.LogOffset, h.LogSize, h.DigestOff, h.DigestSize) {
		return bad("log and digest table overlap")
	}
	return nil
}

// DigestEntrySize is the size of one window's entry in the digest table.
const DigestEntrySize = 32

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

func overlaps(a, alen, b, blen uint64) bool {
	return a < b+blen && b < a+alen
}

// VerifyMAC checks the HMAC of an encoded copy under macKey.
func VerifyMAC(b []byte, macKey []byte) error {
	if len(b) != Size {
		return fmt.Errorf("%w: copy is %d bytes", ErrCorrupt, len(b))
	}
	mac := hmac.New(sha256.New, macKey)
	mac.Write(b[:offMAC])
	if !hmac.Equal(mac.Sum(nil), b[offMAC:offReserved3]) {
		return ErrAuth
	}
	return nil
}

// WithKey is the recorded mapping as the sector ciphers take it, with key
// (nil for a plaintext side).
func (m Mapping) WithKey(key []byte) (sectorcipher.Mapping, error) {
	spec, err := sectorcipher.ParseKernelSpec(m.Cipher)
	if err != nil {
		return sectorcipher.Mapping{}, fmt.Errorf("recorded cipher: %w", err)
	}
	if key == nil {
		key = []byte{}
	}
	return sectorcipher.Mapping{Spec: spec, Key: key, SectorSize: int(m.SectorSize),
		IVOffset: m.IVOffset, IVLargeSectors: m.IVLargeSectors}, nil
}
