package wal

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/klauspost/crc32"

	"github.com/cryptshift/cryptshift/blockdev"
)

var (
	testUUID = [16]byte{0xc5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	testKey  = []byte("wal test MAC key, thirty-two b..")
)

// fenced fails the test on any access outside [lo, hi) of the device: the
// log must stay inside its area.
type fenced struct {
	blockdev.Device
	t      testing.TB
	lo, hi int64
}

func (f *fenced) check(op string, n int, off int64) {
	if off < f.lo || off+int64(n) > f.hi {
		f.t.Errorf("%s of %d bytes at %d, outside the log area [%d, %d)", op, n, off, f.lo, f.hi)
	}
}

func (f *fenced) ReadAt(p []byte, off int64) (int, error) {
	f.check("read", len(p), off)
	return f.Device.ReadAt(p, off)
}

func (f *fenced) WriteAt(p []byte, off int64) (int, error) {
	f.check("write", len(p), off)
	return f.Device.WriteAt(p, off)
}

// area is a log area of size bytes at a non-zero offset of a larger device,
// with the surrounding bytes filled so that stray writes would show.
type area struct {
	raw       []byte
	dev       *fenced
	off, size int64
}

func newArea(t testing.TB, size int64) *area {
	const guard = 3 * BlockSize
	raw := make([]byte, guard+size+guard)
	for i := range raw {
		if int64(i) < guard || int64(i) >= guard+size {
			raw[i] = 0xa5
		}
	}
	return &area{raw: raw, off: guard, size: size,
		dev: &fenced{Device: blockdev.MemFrom(raw), t: t, lo: guard, hi: guard + size}}
}

func (a *area) bytes() []byte { return a.raw[a.off : a.off+a.size] }

func (a *area) log(key []byte, head int64, seq uint64) *Log {
	return New(a.dev, a.off, a.size, testUUID, key, head, seq)
}

func (a *area) guardsIntact(t *testing.T) {
	t.Helper()
	for i, c := range a.raw {
		if (int64(i) < a.off || int64(i) >= a.off+a.size) && c != 0xa5 {
			t.Fatalf("byte %d outside the log area changed", i)
		}
	}
}

func randomPayload(r *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// reseal recomputes a record header's MAC (under key, when not nil) and crc.
func reseal(b []byte, key []byte) {
	if key != nil {
		m := hmac.New(sha256.New, key)
		m.Write(b[:offMAC])
		copy(b[offMAC:offMAC+32], m.Sum(nil))
	}
	binary.LittleEndian.PutUint32(b[offCRC:], crc32.Checksum(b[:offCRC], crc32.MakeTable(crc32.Castagnoli)))
}

type appended struct {
	rec     Record
	payload []byte
}

func appendAll(t *testing.T, l *Log, sizes []int, r *rand.Rand) []appended {
	t.Helper()
	var out []appended
	for i, n := range sizes {
		p := randomPayload(r, n)
		typ := []Type{TypeProgress, TypeJournal, TypeChecksum}[i%3]
		rec, err := l.Append(typ, uint64(i*3), p)
		if err != nil {
			t.Fatalf("Append of %d bytes: %v", n, err)
		}
		out = append(out, appended{rec, p})
	}
	return out
}

// scanned checks that Scan found exactly the records in want, with their
// payloads, and returns the log positioned after them.
func scanned(t *testing.T, a *area, key []byte, head int64, seq uint64, want []appended) *Log {
	t.Helper()
	l := a.log(key, head, seq)
	recs, err := l.Scan()
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if len(recs) != len(want) {
		t.Fatalf("Scan found %d records, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		w := want[i].rec
		w.Authentic = key != nil
		if !reflect.DeepEqual(r, w) {
			t.Fatalf("record %d: scanned %+v, appended %+v", i, r, w)
		}
		p, err := l.Payload(r)
		if err != nil || !bytes.Equal(p, want[i].payload) {
			t.Fatalf("record %d: payload of %d bytes read back as %d bytes, %v", i, len(want[i].payload), len(p), err)
		}
	}
	return l
}

func TestAppendScanRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 4095, 4096, 64 << 10, 0, 4097}
	var total int64
	for _, n := range sizes {
		total += EncodedLen(n)
	}
	a := newArea(t, total+3*BlockSize)
	const head, seq = BlockSize, 1000
	w := a.log(testKey, head, seq)
	want := appendAll(t, w, sizes, r)
	wantTail, wantSeq := w.Tail()
	if wantTail != head+total || wantSeq != seq+uint64(len(sizes)) {
		t.Fatalf("tail after appends: %d, seq %d", wantTail, wantSeq)
	}
	for i, x := range want {
		if x.rec.Seq != seq+uint64(i) || x.rec.PayloadLen != uint64(len(x.payload)) || !x.rec.Authentic {
			t.Fatalf("Append returned %+v for record %d", x.rec, i)
		}
	}
	l := scanned(t, a, testKey, head, seq, want)
	if tail, next := l.Tail(); tail != wantTail || next != wantSeq {
		t.Errorf("Scan left the log at %d, seq %d; appends ended at %d, seq %d", tail, next, wantTail, wantSeq)
	}
	// Appending after a scan continues the same log.
	more := appendAll(t, l, []int{10}, r)
	scanned(t, a, testKey, head, seq, append(want, more...))
	a.guardsIntact(t)
}

func TestEncodedLen(t *testing.T) {
	for _, n := range []int{0, 1, 4095, 4096, 4097, 64 << 10} {
		got := EncodedLen(n)
		if got%BlockSize != 0 || got < BlockSize+int64(n) || got >= 2*BlockSize+int64(n) {
			t.Errorf("EncodedLen(%d) = %d", n, got)
		}
	}
}

// A crash during Append leaves any mix of the record's 512-byte sectors
// written or not. Scan must end the log before that record unless every
// sector arrived, and keep the records before it.
func TestScanStopsAtTornRecord(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 4096, 3 * 4096} {
		a := newArea(t, 16*BlockSize)
		w := a.log(testKey, 0, 1)
		want := appendAll(t, w, []int{100, 5000}, r)
		before := bytes.Clone(a.bytes())
		last := appendAll(t, w, []int{n}, r)[0]
		after := bytes.Clone(a.bytes())
		start, end := int(last.rec.Offset), int(last.rec.Offset+uint64(EncodedLen(n)))
		for s := start; s < end; s += 512 {
			// The one sector s never made it; everything else did.
			copy(a.bytes(), after)
			copy(a.bytes()[s:s+512], before[s:s+512])
			what := "payload"
			if s-start < BlockSize {
				what = "header"
			}
			if bytes.Equal(before[s:s+512], after[s:s+512]) {
				continue // zero padding over zeros: not torn
			}
			t.Run(what, func(t *testing.T) {
				scanned(t, a, testKey, 0, 1, want)
			})
		}
		// Only a prefix arrived, cut at each sector. Once the rest of the
		// record is padding that was zero already, the record is whole.
		for s := start; s < end; s += 512 {
			copy(a.bytes(), before)
			copy(a.bytes()[start:s], after[start:s])
			if bytes.Equal(a.bytes()[start:end], after[start:end]) {
				scanned(t, a, testKey, 0, 1, append(want, last))
			} else {
				scanned(t, a, testKey, 0, 1, want)
			}
		}
		copy(a.bytes(), after)
		scanned(t, a, testKey, 0, 1, append(want, last))
	}
}

func TestScanStopsAtForeignRecord(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	a := newArea(t, 16*BlockSize)
	want := appendAll(t, a.log(testKey, 0, 1), []int{10, 20}, r)
	// Another conversion's log (other UUID, same key even) at the next
	// position, with the right sequence number.
	tail := int64(want[1].rec.Offset) + EncodedLen(20)
	other := New(a.dev, a.off, a.size, [16]byte{0xff}, testKey, tail, 3)
	if _, err := other.Append(TypeProgress, 9, nil); err != nil {
		t.Fatal(err)
	}
	scanned(t, a, testKey, 0, 1, want)
	scanned(t, a, nil, 0, 1, want)
}

// After a checkpoint the log restarts at offset 0; records of the previous
// round further on carry lower sequence numbers and must not be replayed.
func TestScanStopsAtStaleRecordAfterReset(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	a := newArea(t, 16*BlockSize)
	l := a.log(testKey, 0, 1)
	appendAll(t, l, []int{0, 0, 0, 0, 4096, 0}, r)
	_, seq := l.Tail()
	l.Reset()
	if tail, next := l.Tail(); tail != 0 || next != seq {
		t.Fatalf("after Reset: tail %d seq %d, want 0, %d", tail, next, seq)
	}
	// One short record: the old one right after it (seq 2, offset 4096)
	// is well formed in every other way.
	fresh := appendAll(t, l, []int{0}, r)
	scanned(t, a, testKey, 0, seq, fresh)
	scanned(t, a, nil, 0, seq, fresh)
	// And a longer one whose end falls on an old record's start.
	l.Reset()
	l2 := a.log(testKey, 0, seq+1)
	fresh = appendAll(t, l2, []int{3 * 4096}, r)
	scanned(t, a, testKey, 0, seq+1, fresh)
}

func TestScanStopsAtForgedRecord(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	a := newArea(t, 16*BlockSize)
	want := appendAll(t, a.log(testKey, 0, 1), []int{10, 10}, r)
	forged := appendAll(t, a.log(testKey, int64(want[1].rec.Offset)+EncodedLen(10), 3), []int{10}, r)[0]
	hdr := a.bytes()[forged.rec.Offset : forged.rec.Offset+BlockSize]

	// Claim more progress, fixing the crc but not the MAC (no key).
	binary.LittleEndian.PutUint64(hdr[40:], forged.rec.Done+100)
	reseal(hdr, nil)
	scanned(t, a, testKey, 0, 1, want)
	// A keyless scan (status display) cannot tell; it says so.
	recs, err := a.log(nil, 0, 1).Scan()
	if err != nil || len(recs) != 3 || recs[2].Done != forged.rec.Done+100 {
		t.Fatalf("keyless scan of a forged record: %+v, %v", recs, err)
	}
	for _, rec := range recs {
		if rec.Authentic {
			t.Errorf("keyless scan marked record %d authentic", rec.Seq)
		}
	}
	// Sealed under a guessed key: still not authentic.
	reseal(hdr, []byte("guessed key"))
	scanned(t, a, testKey, 0, 1, want)
}

func TestScanRejectsMalformedHeaders(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	a := newArea(t, 8*BlockSize)
	want := appendAll(t, a.log(testKey, 0, 1), []int{10}, r)
	last := appendAll(t, a.log(testKey, BlockSize*2, 2), []int{10}, r)
	good := bytes.Clone(a.bytes())
	hdrAt := func(b []byte) []byte { return b[last[0].rec.Offset : last[0].rec.Offset+BlockSize] }
	le := binary.LittleEndian
	for name, mutate := range map[string]func(h []byte){
		"type 0":            func(h []byte) { le.PutUint32(h[32:], 0) },
		"type 4":            func(h []byte) { le.PutUint32(h[32:], 4) },
		"type padding":      func(h []byte) { h[36] = 1 },
		"reserved body":     func(h []byte) { h[2000] = 1 },
		"reserved after":    func(h []byte) { h[offMAC+32] = 1 },
		"encoded length":    func(h []byte) { le.PutUint64(h[56:], 2*BlockSize+BlockSize) },
		"offset":            func(h []byte) { le.PutUint64(h[64:], 0) },
		"payload past area": func(h []byte) { le.PutUint64(h[48:], 6*BlockSize); le.PutUint64(h[56:], 7*BlockSize) },
		"payload huge":      func(h []byte) { le.PutUint64(h[48:], 1<<62); le.PutUint64(h[56:], 0) },
		"magic":             func(h []byte) { h[0] = 'c' },
	} {
		copy(a.bytes(), good)
		mutate(hdrAt(a.bytes()))
		reseal(hdrAt(a.bytes()), testKey)
		t.Run(name, func(t *testing.T) { scanned(t, a, testKey, 0, 1, want) })
	}
}

func TestAppendFull(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	a := newArea(t, 8*BlockSize)
	l := a.log(testKey, 0, 1)
	if got := l.Capacity(); got != 7*BlockSize {
		t.Fatalf("Capacity %d", got)
	}
	if l.Fits(int(l.Capacity()) + 1) {
		t.Error("Fits a payload beyond the capacity")
	}
	want := appendAll(t, l, []int{3 * BlockSize}, r)
	before := bytes.Clone(a.bytes())
	tail, seq := l.Tail()
	for _, n := range []int{3*BlockSize + 1, 4 * BlockSize} {
		if l.Fits(n) {
			t.Errorf("Fits(%d) with %d bytes left", n, a.size-tail)
		}
		if _, err := l.Append(TypeJournal, 1, make([]byte, n)); !errors.Is(err, ErrFull) {
			t.Errorf("Append of %d bytes with %d left: %v, want ErrFull", n, a.size-tail, err)
		}
		if tl, sq := l.Tail(); tl != tail || sq != seq || !bytes.Equal(a.bytes(), before) {
			t.Errorf("a refused Append moved the tail or wrote")
		}
	}
	// Exactly filling the area is allowed.
	want = append(want, appendAll(t, l, []int{3 * BlockSize}, r)...)
	if _, err := l.Append(TypeProgress, 1, nil); !errors.Is(err, ErrFull) {
		t.Errorf("Append to a full log: %v", err)
	}
	scanned(t, a, testKey, 0, 1, want)
	a.guardsIntact(t)
}

func TestAppendWithoutKey(t *testing.T) {
	a := newArea(t, 4*BlockSize)
	if _, err := a.log(nil, 0, 1).Append(TypeProgress, 0, nil); err == nil {
		t.Error("Append without a MAC key succeeded")
	}
	if !bytes.Equal(a.bytes(), make([]byte, a.size)) {
		t.Error("a refused Append wrote")
	}
}

func TestKeylessScanMarksNotAuthentic(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	a := newArea(t, 32*BlockSize)
	want := appendAll(t, a.log(testKey, 0, 1), []int{0, 1, 4096, 5000}, r)
	scanned(t, a, nil, 0, 1, want) // compares with Authentic false
}

func TestPayloadDetectsChange(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 20))
	for _, n := range []int{1, 4096, 10000} {
		a := newArea(t, 16*BlockSize)
		want := appendAll(t, a.log(testKey, 0, 1), []int{n}, r)
		l := a.log(testKey, 0, 1)
		recs, err := l.Scan()
		if err != nil || len(recs) != 1 {
			t.Fatalf("Scan: %d records, %v", len(recs), err)
		}
		if p, err := l.Payload(recs[0]); err != nil || !bytes.Equal(p, want[0].payload) {
			t.Fatalf("Payload before the change: %v", err)
		}
		a.bytes()[BlockSize+r.IntN(n)] ^= 1
		if _, err := l.Payload(recs[0]); err == nil {
			t.Errorf("%d-byte payload changed after the scan: Payload did not notice", n)
		}
	}
}

// Bytes past a payload's end, up to the next block, are padding: changing
// them neither ends the log nor changes the payload.
func TestPaddingIgnored(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	a := newArea(t, 8*BlockSize)
	want := appendAll(t, a.log(testKey, 0, 1), []int{100, 100}, r)
	a.bytes()[BlockSize+100] = 0xee
	scanned(t, a, testKey, 0, 1, want)
}

func TestTypeNames(t *testing.T) {
	seen := map[string]bool{}
	for _, ty := range []Type{TypeProgress, TypeJournal, TypeChecksum, 0, 99} {
		if seen[ty.String()] {
			t.Errorf("type %d shares the name %q", ty, ty.String())
		}
		seen[ty.String()] = true
	}
}

// A genuine record copied to another position (with its payload still in
// place where it was) is not the record expected there.
func TestScanStopsAtMovedRecord(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	a := newArea(t, 8*BlockSize)
	recs := appendAll(t, a.log(testKey, 0, 1), []int{10, 10}, r)
	from := int(recs[1].rec.Offset)
	copy(a.bytes()[from+2*BlockSize:], a.bytes()[from:from+2*BlockSize])
	for _, key := range [][]byte{testKey, nil} {
		got, err := a.log(key, int64(from+2*BlockSize), 2).Scan()
		if err != nil || len(got) != 0 {
			t.Errorf("key %v: a moved record scanned as %+v, %v", key != nil, got, err)
		}
	}
}
