package wal

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"slices"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/internal/golden"
)

// The golden records pin format version 1's log byte for byte, one record
// of each type, from fixed inputs. go test -run Golden -update writes
// missing files; see package golden for why it rewrites none.

const formatDoc = "../docs/FORMAT.md"

func TestGoldenRecords(t *testing.T) {
	v := golden.FormatVersion(t, formatDoc)
	if v != header.Version {
		t.Fatalf("docs/FORMAT.md describes format version %d, header.Version is %d", v, header.Version)
	}
	uuid := [16]byte{0x6a, 0x1f, 0x3c, 0x2e, 0x90, 0x41, 0x4b, 0x07, 0x8d, 0x55, 0x12, 0xe4, 0x7b, 0x33, 0xc8, 0x09}
	macKey := bytes.Repeat([]byte{0x5c, 0x3a}, 16)
	journal := make([]byte, 2*BlockSize)
	for i := range journal {
		journal[i] = byte(i*31 + i>>9)
	}
	checksum := make([]byte, 3*32) // three units: old, new digest each
	for i := range checksum {
		checksum[i] = byte(0xf0 - i)
	}
	recs := []struct {
		name    string
		typ     Type
		done    uint64
		payload []byte
	}{
		{"record-progress.bin", TypeProgress, 17, nil},
		{"record-journal.bin", TypeJournal, 17, journal},
		{"record-checksum.bin", TypeChecksum, 18, checksum},
	}
	const size = 16 * BlockSize
	dev := blockdev.NewMem(size)
	const headSeq = 1000
	l := New(dev, 0, size, uuid, macKey, BlockSize, headSeq)
	var logImage []byte
	var written []Record
	for _, r := range recs {
		rec, err := l.Append(r.typ, r.done, r.payload)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, EncodedLen(len(r.payload)))
		if _, err := dev.ReadAt(got, int64(rec.Offset)); err != nil {
			t.Fatal(err)
		}
		want := golden.Check(t, v, r.name, got)
		le := binary.LittleEndian
		if string(want[offMagic:offSeq]) != "CSLOGREC" || le.Uint64(want[offSeq:]) != rec.Seq ||
			Type(le.Uint32(want[offType:])) != r.typ || le.Uint64(want[offDone:]) != r.done {
			t.Fatalf("%s does not hold its fields at the named offsets", r.name)
		}
		logImage = append(logImage, want...)
		written = append(written, rec)
	}
	// The pinned bytes scan back as the records, payloads included.
	img := blockdev.NewMem(size)
	if _, err := img.WriteAt(logImage, BlockSize); err != nil {
		t.Fatal(err)
	}
	back := New(img, 0, size, uuid, macKey, BlockSize, headSeq)
	got, err := back.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(recs) {
		t.Fatalf("golden log scans as %d records, want %d", len(got), len(recs))
	}
	for i, r := range got {
		if !reflect.DeepEqual(r, written[i]) {
			t.Fatalf("record %d scans as %+v, want %+v", i, r, written[i])
		}
		p, err := back.Payload(r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, recs[i].payload) {
			t.Fatalf("record %d: payload differs", i)
		}
	}
}

// TestFormatTable holds the named offsets to FORMAT.md's record table.
func TestFormatTable(t *testing.T) {
	named := []int{offMagic, offSeq, offUUID, offType, offReserved0, offDone, offPayloadLen, offEncodedLen,
		offOffset, offPayloadHash, offReserved1, offMAC, offReserved2, offCRC}
	if doc := golden.TableOffsets(t, formatDoc, "### Record header (4096 bytes), then the payload"); !slices.Equal(doc, named) {
		t.Fatalf("FORMAT.md lists offsets\n%v\nthe code names\n%v", doc, named)
	}
}
