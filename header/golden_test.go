package header

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"testing"

	"github.com/cryptshift/cryptshift/internal/golden"
)

// The golden files pin format version 1 byte for byte. Their inputs are
// fixed (keys, UUID, times, every field chosen non-zero where it can be),
// so the files are the same on every machine. go test -run Golden -update
// writes missing files; see package golden for why it rewrites none.

const formatDoc = "../docs/FORMAT.md"

func goldenKeys() (oldKey, newKey []byte, uuid [16]byte) {
	oldKey, newKey = make([]byte, 32), make([]byte, 64)
	for i := range oldKey {
		oldKey[i] = byte(0x10 + 3*i)
	}
	for i := range newKey {
		newKey[i] = byte(0x80 + 5*i)
	}
	uuid = [16]byte{0x6a, 0x1f, 0x3c, 0x2e, 0x90, 0x41, 0x4b, 0x07, 0x8d, 0x55, 0x12, 0xe4, 0x7b, 0x33, 0xc8, 0x09}
	return oldKey, newKey, uuid
}

// goldenHeader is a shift conversion towards higher offsets, paused half
// way, with a log head away from the start of the log.
func goldenHeader() (*Header, []byte) {
	oldKey, newKey, uuid := goldenKeys()
	const dev, meta, window = 64 << 20, 1 << 20, 256 << 10
	h := &Header{
		Seq: 0x0102030405, UUID: uuid, DeviceSize: dev,
		MetaOffset: dev - meta, MetaSize: meta,
		DataSize: 40<<20 + 12<<10, OldOffset: 4 << 20, NewOffset: 8 << 20,
		Window: window, Mode: ModeShift, State: StatePaused, Descending: true,
		Done:      81,
		LogOffset: dev - meta + 8192, LogSize: meta - 4*4096, LogHeadOff: 8192, LogHeadSeq: 1234,
		DigestOff: dev - meta, DigestSize: 8192,
		Created: 1_764_547_200, Updated: 1_764_550_861,
		Old: Mapping{Cipher: "aes-cbc-essiv:sha256", KeyBytes: 32, SectorSize: 512, IVOffset: 8},
		New: Mapping{Cipher: "aes-xts-plain64", KeyBytes: 64, SectorSize: 4096, IVOffset: 16, IVLargeSectors: true},
	}
	h.OldKCV, h.NewKCV = KCV(oldKey, uuid), KCV(newKey, uuid)
	macKey, err := MACKey(oldKey, newKey, uuid)
	if err != nil {
		panic(err)
	}
	return h, macKey
}

func TestGoldenVersion(t *testing.T) {
	if v := golden.FormatVersion(t, formatDoc); v != Version {
		t.Fatalf("docs/FORMAT.md describes format version %d, header.Version is %d", v, Version)
	}
}

func TestGoldenHeader(t *testing.T) {
	h, macKey := goldenHeader()
	if err := h.Check(); err != nil {
		t.Fatalf("the golden input is not a valid header: %v", err)
	}
	b, err := h.Marshal(macKey)
	if err != nil {
		t.Fatal(err)
	}
	want := golden.Check(t, golden.FormatVersion(t, formatDoc), "header-copy.bin", b)
	// The decoder reads the pinned bytes back, not only what this encoder
	// writes today.
	got, err := Unmarshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *h {
		t.Fatalf("golden copy decodes to\n%+v\nwant\n%+v", got, h)
	}
	if err := VerifyMAC(want, macKey); err != nil {
		t.Fatal(err)
	}
	// A few fields read at their documented offsets, so a reader of this
	// test sees what the names stand for.
	le := binary.LittleEndian
	if string(want[offMagic:offVersion]) != "CRYPTSHF" || le.Uint16(want[offVersion:]) != Version ||
		le.Uint64(want[offDone:]) != h.Done || want[offDirection] != 1 ||
		string(want[offNewMapping:offNewMapping+len(h.New.Cipher)]) != h.New.Cipher {
		t.Fatal("golden copy does not hold its fields at the named offsets")
	}
}

// TestGoldenHeaderEngines pins byte 99, the crypto engines, in a copy
// that differs from header-copy.bin only there (and in its seals); and
// header-copy.bin, written before the field existed, reads as unknown.
func TestGoldenHeaderEngines(t *testing.T) {
	h, macKey := goldenHeader()
	v := golden.FormatVersion(t, formatDoc)
	old := golden.Check(t, v, "header-copy.bin", mustMarshalGolden(t, h, macKey))
	oh, err := Unmarshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if oh.Engines != 0 || oh.Engines.String() != "unknown" || len(oh.Engines.List()) != 0 {
		t.Fatalf("a header from before the field: engines %v (%q), want unknown", oh.Engines, oh.Engines.String())
	}
	h.Engines = EngineUserspace | EngineKernel
	want := golden.Check(t, v, "header-copy-engines.bin", mustMarshalGolden(t, h, macKey))
	got, err := Unmarshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *h || got.Engines.String() != "userspace and kernel" {
		t.Fatalf("decodes to %+v (%s), want %+v", got, got.Engines, h)
	}
	if err := VerifyMAC(want, macKey); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if i != offEngines && (i < offMAC || i >= offReserved3) && i < offCRC && want[i] != old[i] {
			t.Fatalf("byte %d differs from header-copy.bin besides byte %d and the seals", i, offEngines)
		}
	}
	if want[offEngines] != 3 {
		t.Fatalf("byte %d is %d, want 3", offEngines, want[offEngines])
	}
}

func mustMarshalGolden(t *testing.T, h *Header, macKey []byte) []byte {
	b, err := h.Marshal(macKey)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGoldenDigestTable pins the first block of a digest table: 128 entries,
// each binding its window index to a plaintext digest.
func TestGoldenDigestTable(t *testing.T) {
	_, macKey := goldenHeader()
	block := make([]byte, 4096)
	for w := uint64(0); w < uint64(len(block)/DigestEntrySize); w++ {
		if w%5 == 4 {
			continue // no entry: 32 zero bytes
		}
		d := sha256.Sum256([]byte{byte(w), byte(w >> 8), 'p', 'l', 'a', 'i', 'n'})
		e := DigestEntry(macKey, w, d)
		copy(block[w*DigestEntrySize:], e[:])
	}
	golden.Check(t, golden.FormatVersion(t, formatDoc), "digest-table-block.bin", block)
}

// TestGoldenKeyedDigests pins Sum in each of its domains: window chunks,
// checksum units and log payloads are all digested this way.
func TestGoldenKeyedDigests(t *testing.T) {
	_, macKey := goldenHeader()
	s, err := NewSummer(macKey)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("cryptshift golden data "), 100)
	var out []byte
	for _, d := range []byte{SumWindowChunk, SumUnitOld, SumUnitNew, SumLogPayload} {
		sum := s.Sum(d, 0x0123456789abcd, 0x89abcdef, data)
		out = append(out, sum[:]...)
	}
	golden.Check(t, golden.FormatVersion(t, formatDoc), "keyed-digests.bin", out)
}

// TestFormatTables holds the named offsets to the tables of FORMAT.md.
func TestFormatTables(t *testing.T) {
	for _, tc := range []struct {
		heading string
		offsets []int
	}{
		{"## Header copy (4096 bytes)", []int{offMagic, offVersion, offSize, offReserved0, offSeq, offUUID,
			offDeviceSize, offMetaOffset, offMetaSize, offDataSize, offOldOffset, offNewOffset, offWindow,
			offMode, offState, offDirection, offEngines, offReserved1, offDone, offLogOffset, offLogSize, offLogHead,
			offLogHeadSeq, offDigestOff, offDigestSize, offCreated, offUpdated, offOldMapping, offNewMapping,
			offOldKCV, offNewKCV, offReserved2, offMAC, offReserved3, offCRC}},
		{"### Mapping (72 bytes)", []int{mapCipher, mapKeyBytes, mapSectorSize, mapFlags, mapReserved, mapIVOffset}},
	} {
		if doc := golden.TableOffsets(t, formatDoc, tc.heading); !slices.Equal(doc, tc.offsets) {
			t.Errorf("%s: FORMAT.md lists offsets\n%v\nthe code names\n%v", tc.heading, doc, tc.offsets)
		}
	}
}
