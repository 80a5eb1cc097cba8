package header

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/klauspost/crc32"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// randomHeader builds a header that satisfies every rule of Check, with the
// free fields drawn from r so that the encoder sees values near the edges
// of their ranges as well as ordinary ones.
func randomHeader(r *rand.Rand) *Header {
	h := &Header{
		Seq:     r.Uint64(),
		Mode:    Mode(1 + r.IntN(4)),
		State:   State(1 + r.IntN(3)),
		Created: int64(r.Uint64()),
		Updated: int64(r.Uint64()),
		Old:     randomMapping(r),
		New:     randomMapping(r),
	}
	for i := range h.UUID {
		h.UUID[i] = byte(r.Uint32())
	}
	for i := range h.OldKCV {
		h.OldKCV[i] = byte(r.Uint32())
		h.NewKCV[i] = byte(r.Uint32())
	}
	if r.IntN(8) == 0 {
		h.Window = 1 << 32
	} else {
		h.Window = 4096 * (1 + r.Uint64N(512))
	}
	h.DataSize = 4096 * (1 + r.Uint64N(1<<24))
	switch h.State {
	case StateComplete:
		h.Done = h.Windows()
	default:
		h.Done = r.Uint64N(h.Windows() + 1)
	}
	h.OldOffset = 512 * r.Uint64N(1<<20)
	h.NewOffset = h.OldOffset
	if h.Mode == ModeShift {
		gap := h.Window + 512*r.Uint64N(1<<10)
		h.Descending = r.IntN(2) == 0
		if h.Descending {
			h.NewOffset = h.OldOffset + gap
		} else {
			h.OldOffset = h.NewOffset + gap
		}
	}
	h.DeviceSize = max(h.OldOffset, h.NewOffset) + h.DataSize + r.Uint64N(1<<20)
	h.MetaOffset = r.Uint64N(1 << 40)
	h.LogOffset = (h.MetaOffset+4095)/4096*4096 + 4096*r.Uint64N(4)
	h.LogSize = 4096 * (2 + r.Uint64N(1024))
	h.LogHeadOff = 4096 * r.Uint64N(h.LogSize/4096)
	h.LogHeadSeq = 1 + r.Uint64N(math.MaxUint64-1)
	h.DigestOff = h.LogOffset + h.LogSize + r.Uint64N(8192)
	h.DigestSize = h.Windows()*DigestEntrySize + r.Uint64N(4096)
	h.MetaSize = h.DigestOff + h.DigestSize - h.MetaOffset + r.Uint64N(1<<16)
	if r.IntN(2) == 0 {
		// The digest table may also sit below the log.
		h.DigestOff, h.LogOffset = h.LogOffset, (h.LogOffset+h.DigestSize+4095)/4096*4096
		h.MetaSize = h.LogOffset + h.LogSize - h.MetaOffset + r.Uint64N(1<<16)
	}
	return h
}

func randomMapping(r *rand.Rand) Mapping {
	name := make([]byte, r.IntN(mappingCipherLen))
	for i := range name {
		name[i] = byte(1 + r.IntN(255)) // any byte but the terminator
	}
	return Mapping{
		Cipher:         string(name),
		KeyBytes:       uint32(r.IntN(513)),
		SectorSize:     512 << r.IntN(4),
		IVOffset:       r.Uint64(),
		IVLargeSectors: r.IntN(2) == 0,
	}
}

// validHeader is a fixed, ordinary header for tests that mutate one field.
func validHeader() *Header {
	h := &Header{
		Seq:        7,
		UUID:       [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		DeviceSize: 1 << 30,
		MetaOffset: 1<<30 - 1<<20,
		MetaSize:   1 << 20,
		DataSize:   1<<30 - 1<<20,
		Window:     1 << 20,
		Mode:       ModeJournal,
		State:      StateInProgress,
		Done:       3,
		LogOffset:  1<<30 - 1<<20,
		LogSize:    1 << 19,
		LogHeadOff: 4096,
		LogHeadSeq: 42,
		DigestOff:  1<<30 - 1<<19,
		DigestSize: 1 << 16,
		Created:    1700000000,
		Updated:    1700000100,
		Old:        Mapping{Cipher: "none", SectorSize: 512},
		New:        Mapping{Cipher: "aes-xts-plain64", KeyBytes: 64, SectorSize: 4096, IVLargeSectors: true},
	}
	h.NewKCV = KCV(bytes.Repeat([]byte{9}, 64), h.UUID)
	return h
}

// reseal recomputes the MAC and the crc of an encoded copy, so that a test
// can reach the checks that sit behind them.
func reseal(b []byte, macKey []byte) {
	sealMAC(b, macKey)
	sealCRC(b)
}

func sealMAC(b []byte, macKey []byte) {
	m := hmac.New(sha256.New, macKey)
	m.Write(b[:offMAC])
	copy(b[offMAC:offMAC+32], m.Sum(nil))
}

func sealCRC(b []byte) {
	binary.LittleEndian.PutUint32(b[offCRC:], crc32.Checksum(b[:offCRC], crc32.MakeTable(crc32.Castagnoli)))
}

func mustMarshal(t testing.TB, h *Header, key []byte) []byte {
	t.Helper()
	b, err := h.Marshal(key)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	return b
}

func TestRoundTripRandomHeaders(t *testing.T) {
	r := rand.New(rand.NewPCG(0x5eed, 1))
	for i := 0; i < 2000; i++ {
		h := randomHeader(r)
		if err := h.Check(); err != nil {
			t.Fatalf("generator produced an invalid header %+v: %v", h, err)
		}
		b := mustMarshal(t, h, testKey)
		if len(b) != Size {
			t.Fatalf("encoded %d bytes, want %d", len(b), Size)
		}
		got, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("Unmarshal of %+v: %v", h, err)
		}
		if !reflect.DeepEqual(got, h) {
			t.Fatalf("round trip changed the header:\n got %+v\nwant %+v", got, h)
		}
		if err := VerifyMAC(b, testKey); err != nil {
			t.Fatalf("VerifyMAC under the sealing key: %v", err)
		}
		if err := VerifyMAC(b, []byte("another key")); !errors.Is(err, ErrAuth) {
			t.Fatalf("VerifyMAC under another key: %v, want ErrAuth", err)
		}
		if again := mustMarshal(t, got, testKey); !bytes.Equal(again, b) {
			t.Fatal("re-marshalling the decoded header gives different bytes")
		}
	}
}

func TestMarshalRejectsLongCipher(t *testing.T) {
	h := validHeader()
	h.New.Cipher = string(bytes.Repeat([]byte{'a'}, mappingCipherLen))
	if _, err := h.Marshal(testKey); err == nil {
		t.Fatal("Marshal accepted a cipher spec with no room for its terminator")
	}
	h.New.Cipher = h.New.Cipher[1:]
	b := mustMarshal(t, h, testKey)
	if got, err := Unmarshal(b); err != nil || got.New.Cipher != h.New.Cipher {
		t.Fatalf("longest cipher spec: %v, %+v", err, got)
	}
}

// A cipher spec with a NUL inside would be cut at the NUL on decoding,
// so Marshal must refuse it rather than write a copy that reads back
// differently or not at all.
func TestMarshalRejectsNULInCipher(t *testing.T) {
	h := validHeader()
	h.Old.Cipher = "aes\x00xts"
	if b, err := h.Marshal(testKey); err == nil {
		_, uerr := Unmarshal(b)
		t.Fatalf("Marshal accepted a cipher spec with a NUL (Unmarshal then says %v)", uerr)
	}
}

// Every single-bit flip is caught by the crc; and with the crc recomputed
// (a deliberate change rather than decay), by the MAC or the reserved-byte
// rule.
func TestEveryBitFlipRejected(t *testing.T) {
	orig := mustMarshal(t, validHeader(), testKey)
	b := make([]byte, Size)
	for bit := 0; bit < Size*8; bit++ {
		copy(b, orig)
		b[bit/8] ^= 1 << (bit % 8)
		if _, err := Unmarshal(b); !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNoHeader) {
			t.Fatalf("bit %d flipped: Unmarshal says %v", bit, err)
		}
		if bit/8 >= offCRC {
			continue // the crc field itself: resealing would undo the flip
		}
		sealCRC(b)
		_, uerr := Unmarshal(b)
		merr := VerifyMAC(b, testKey)
		if uerr == nil && merr == nil {
			t.Fatalf("bit %d flipped with the crc recomputed: accepted", bit)
		}
		if bit/8 < offMAC+32 && !errors.Is(merr, ErrAuth) {
			t.Fatalf("bit %d flipped with the crc recomputed: VerifyMAC says %v", bit, merr)
		}
	}
}

func TestReservedBytesRejected(t *testing.T) {
	orig := mustMarshal(t, validHeader(), testKey)
	type span struct {
		name   string
		lo, hi int
		val    byte
	}
	spans := []span{
		{"after size", 12, 16, 1},
		{"after engines", 100, 104, 1},
		{"engines", 99, 100, 4},
		{"engines high bit", 99, 100, 0x80},
		{"body", 384, offMAC, 1},
		{"after MAC", offMAC + 32, offCRC, 1},
		{"old mapping pad", 176 + 60, 176 + 64, 1},
		{"new mapping pad", 248 + 60, 248 + 64, 1},
		{"old cipher after NUL", 176 + len("none") + 1, 176 + mappingCipherLen, 'x'},
		{"old flags", 176 + 56, 176 + 60, 2},
		{"new flags", 248 + 56, 248 + 60, 0x80},
		{"direction", 98, 99, 2},
	}
	for _, s := range spans {
		for _, i := range []int{s.lo, (s.lo + s.hi) / 2, s.hi - 1} {
			b := bytes.Clone(orig)
			b[i] |= s.val
			reseal(b, testKey)
			if _, err := Unmarshal(b); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: byte %d set: Unmarshal says %v", s.name, i, err)
			}
		}
	}
	// The terminator itself gone: the spec runs into the key size field.
	b := bytes.Clone(orig)
	for i := 176; i < 176+mappingCipherLen; i++ {
		b[i] = 'x'
	}
	reseal(b, testKey)
	if _, err := Unmarshal(b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("unterminated cipher spec: Unmarshal says %v", err)
	}
}

func TestUnmarshalEnvelope(t *testing.T) {
	orig := mustMarshal(t, validHeader(), testKey)
	for _, n := range []int{0, Size - 1, Size + 1} {
		b := make([]byte, n)
		copy(b, orig)
		if _, err := Unmarshal(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%d-byte copy: %v", n, err)
		}
		if err := VerifyMAC(b, testKey); !errors.Is(err, ErrCorrupt) {
			t.Errorf("VerifyMAC of a %d-byte copy: %v", n, err)
		}
	}
	if _, err := Unmarshal(make([]byte, Size)); !errors.Is(err, ErrNoHeader) {
		t.Errorf("zeroed copy: %v", err)
	}
	b := bytes.Clone(orig)
	binary.LittleEndian.PutUint16(b[offVersion:], Version+1)
	reseal(b, testKey)
	if _, err := Unmarshal(b); !errors.Is(err, ErrUnsupported) {
		t.Errorf("version %d: %v", Version+1, err)
	}
	b = bytes.Clone(orig)
	binary.LittleEndian.PutUint16(b[offSize:], 512)
	reseal(b, testKey)
	if _, err := Unmarshal(b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("size field 512: %v", err)
	}
}

func TestCheckRules(t *testing.T) {
	if err := validHeader().Check(); err != nil {
		t.Fatalf("base header: %v", err)
	}
	shift := func(h *Header) {
		h.Mode = ModeShift
		h.DataSize -= 2 * h.Window
		h.NewOffset = 2 * h.Window
		h.Descending = true
	}
	bad := map[string]func(h *Header){
		"mode 0":                   func(h *Header) { h.Mode = 0 },
		"mode 5":                   func(h *Header) { h.Mode = 5 },
		"state 0":                  func(h *Header) { h.State = 0 },
		"state 4":                  func(h *Header) { h.State = 4 },
		"old sector 256":           func(h *Header) { h.Old.SectorSize = 256 },
		"new sector 8192":          func(h *Header) { h.New.SectorSize = 8192 },
		"sector 1536":              func(h *Header) { h.Old.SectorSize = 1536 },
		"sector 0":                 func(h *Header) { h.New.SectorSize = 0 },
		"key 513 bytes":            func(h *Header) { h.New.KeyBytes = 513 },
		"window 0":                 func(h *Header) { h.Window = 0 },
		"window unaligned":         func(h *Header) { h.Window = 4096 + 512 },
		"window over 4 GiB":        func(h *Header) { h.Window = 1<<32 + 4096 },
		"data size 0":              func(h *Header) { h.DataSize = 0 },
		"data size unaligned":      func(h *Header) { h.DataSize += 512 },
		"done beyond windows":      func(h *Header) { h.Done = h.Windows() + 1 },
		"complete but not done":    func(h *Header) { h.State = StateComplete; h.Done = h.Windows() - 1 },
		"old offset unaligned":     func(h *Header) { h.OldOffset, h.NewOffset = 100, 100 },
		"offset change w/o shift":  func(h *Header) { h.NewOffset = h.OldOffset + 4096 },
		"descending w/o shift":     func(h *Header) { h.Descending = true },
		"shift gap below window":   func(h *Header) { shift(h); h.NewOffset = h.Window - 512 },
		"shift gap zero":           func(h *Header) { shift(h); h.NewOffset = 0; h.Descending = false },
		"shift direction wrong":    func(h *Header) { shift(h); h.Descending = false },
		"shift up, says ascending": func(h *Header) { shift(h); h.OldOffset, h.NewOffset = 0, 2*h.Window; h.Descending = false },
		"data beyond device":       func(h *Header) { h.DeviceSize = h.DataSize - 4096 },
		"data end wraps":           func(h *Header) { h.OldOffset, h.NewOffset = math.MaxUint64-4095, math.MaxUint64-4095 },
		"meta size 0":              func(h *Header) { h.MetaSize = 0 },
		"meta area wraps":          func(h *Header) { h.MetaSize = math.MaxUint64 },
		"log below meta":           func(h *Header) { h.LogOffset = h.MetaOffset - 4096 },
		"log past meta":            func(h *Header) { h.LogSize = h.MetaSize },
		"log one block":            func(h *Header) { h.LogSize = 4096 },
		"log unaligned":            func(h *Header) { h.LogOffset += 512 },
		"log size unaligned":       func(h *Header) { h.LogSize -= 512 },
		"log head at end":          func(h *Header) { h.LogHeadOff = h.LogSize },
		"log head unaligned":       func(h *Header) { h.LogHeadOff = 512 },
		"log head seq 0":           func(h *Header) { h.LogHeadSeq = 0 },
		"digest past meta":         func(h *Header) { h.DigestSize = h.MetaSize },
		"digest below meta":        func(h *Header) { h.DigestOff = h.MetaOffset - 1 },
		"digest too small":         func(h *Header) { h.DigestSize = h.Windows()*DigestEntrySize - 1 },
		"digest overlaps log":      func(h *Header) { h.DigestOff = h.LogOffset + h.LogSize - 1 },
		"log overlaps digest":      func(h *Header) { h.DigestOff = h.LogOffset },
	}
	for name, mutate := range bad {
		h := validHeader()
		mutate(h)
		if err := h.Check(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Check says %v", name, err)
			continue
		}
		// The encoder writes what it is given; the decoder must refuse it.
		if b, err := h.Marshal(testKey); err == nil {
			if _, err := Unmarshal(b); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: Unmarshal says %v", name, err)
			}
		}
	}
	// The boundaries of each rule are inside it.
	good := map[string]func(h *Header){
		"shift gap equal to window": func(h *Header) { shift(h); h.NewOffset = h.Window },
		"shift ascending":           func(h *Header) { shift(h); h.OldOffset, h.NewOffset = 2*h.Window, 0; h.Descending = false },
		"log of two blocks":         func(h *Header) { h.LogSize = 8192 },
		"digest exactly fits":       func(h *Header) { h.DigestSize = h.Windows() * DigestEntrySize },
		"digest adjoins log":        func(h *Header) { h.DigestOff = h.LogOffset + h.LogSize },
		"complete":                  func(h *Header) { h.State = StateComplete; h.Done = h.Windows() },
		"data fills device":         func(h *Header) { h.DeviceSize = h.DataSize },
		"partial last window":       func(h *Header) { h.DataSize -= 4096 },
		"window of 4 GiB":           func(h *Header) { h.Window = 1 << 32; h.Done = 0 },
		"sector sizes at bounds":    func(h *Header) { h.Old.SectorSize, h.New.SectorSize = 512, 4096 },
		"key of 512 bytes":          func(h *Header) { h.New.KeyBytes = 512 },
	}
	for name, mutate := range good {
		h := validHeader()
		mutate(h)
		if err := h.Check(); err != nil {
			t.Errorf("%s: Check says %v", name, err)
		}
	}
}

// Windows must cover the data exactly, whatever the sizes: the engine
// sizes the digest table and ends the conversion by it.
func TestWindowsCoverData(t *testing.T) {
	cases := []struct{ data, window uint64 }{
		{4096, 4096},
		{8192, 4096},
		{12288, 8192},
		{1 << 40, 1 << 32},
		{math.MaxUint64 - 4095, 8192},
		{math.MaxUint64 - 4095, 1 << 32},
	}
	for _, c := range cases {
		h := Header{DataSize: c.data, Window: c.window}
		n := new(big.Int).SetUint64(h.Windows())
		w := new(big.Int).SetUint64(c.window)
		d := new(big.Int).SetUint64(c.data)
		covered := new(big.Int).Mul(n, w)
		short := new(big.Int).Sub(covered, w)
		// n windows cover the data, and n-1 do not.
		if covered.Cmp(d) < 0 || short.Cmp(d) >= 0 {
			t.Errorf("%d bytes in windows of %d: %v windows", c.data, c.window, n)
		}
	}
}

// A header whose sizes do not fit in int64 would turn into negative
// offsets in the engine and the blockdev layer, which take int64.
func TestCheckRejectsSizesBeyondInt64(t *testing.T) {
	for name, mutate := range map[string]func(h *Header){
		"device size": func(h *Header) { h.DeviceSize = 1 << 63 },
		"metadata area": func(h *Header) {
			h.MetaOffset = 1 << 63
			h.LogOffset += h.MetaOffset - (1<<30 - 1<<20)
			h.DigestOff += h.MetaOffset - (1<<30 - 1<<20)
		},
	} {
		h := validHeader()
		mutate(h)
		if err := h.Check(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s beyond int64: Check says %v", name, err)
		}
	}
}

func TestModeAndStateNames(t *testing.T) {
	for _, m := range []Mode{ModeJournal, ModeChecksum, ModeShift, ModeNone} {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseMode("mode(9)"); err == nil {
		t.Error("ParseMode accepted an unknown name")
	}
	seen := map[string]bool{}
	for _, s := range []State{StateInProgress, StatePaused, StateComplete, 0} {
		if seen[s.String()] {
			t.Errorf("state %d shares the name %q", s, s.String())
		}
		seen[s.String()] = true
	}
}
