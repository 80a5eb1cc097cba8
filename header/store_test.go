package header

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
)

const metaDevSize = 64 << 10

// patterned returns a metadata device whose bytes outside the header slots
// are non-zero, so that a stray write there shows.
func patterned(size int) []byte {
	b := make([]byte, size)
	for i := range b[:size-2*Size] {
		b[i] = byte(i*7 + 1)
	}
	return b
}

func readStore(t *testing.T, b []byte) *Store {
	t.Helper()
	s, err := ReadStore(blockdev.MemFrom(b))
	if err != nil {
		t.Fatalf("ReadStore: %v", err)
	}
	return s
}

func slotBytes(b []byte, slot int) []byte {
	off := len(b) - (slot+1)*Size
	return b[off : off+Size]
}

// sameApartFromSeq compares two headers ignoring the sequence number, which
// Commit assigns.
func sameApartFromSeq(a, b *Header) bool {
	x, y := *a, *b
	x.Seq, y.Seq = 0, 0
	return reflect.DeepEqual(x, y)
}

func TestStoreBlankDevice(t *testing.T) {
	s := readStore(t, make([]byte, 2*Size))
	for _, key := range [][]byte{nil, testKey} {
		if _, err := s.Current(key); !errors.Is(err, ErrNoHeader) {
			t.Errorf("Current(%q) on a blank device: %v, want ErrNoHeader", key, err)
		}
	}
	if s.Healthy() {
		t.Error("a blank device is Healthy")
	}
	if _, err := ReadStore(blockdev.NewMem(2*Size - 1)); err == nil {
		t.Error("ReadStore accepted a device too small for two copies")
	}
}

func TestStoreCurrentPicksNewest(t *testing.T) {
	h := validHeader()
	for _, seqs := range [][2]uint64{{1, 2}, {2, 1}, {5, 5}, {1 << 40, 3}, {3, 1 << 40}} {
		b := make([]byte, metaDevSize)
		for slot, seq := range seqs {
			h.Seq = seq
			copy(slotBytes(b, slot), mustMarshal(t, h, testKey))
		}
		want := max(seqs[0], seqs[1])
		for _, key := range [][]byte{nil, testKey} {
			got, err := readStore(t, b).Current(key)
			if err != nil || got.Seq != want {
				t.Errorf("slots with seqs %v, key %q: Current = %+v, %v; want seq %d", seqs, key, got, err, want)
			}
		}
		newer, older := 0, 1
		if seqs[1] > seqs[0] {
			newer, older = 1, 0
		}
		if seqs[0] == seqs[1] {
			continue
		}
		// The newer copy damaged: the older one is current.
		c := bytes.Clone(b)
		slotBytes(c, newer)[100] ^= 0x10
		if got, err := readStore(t, c).Current(testKey); err != nil || got.Seq != seqs[older] {
			t.Errorf("seqs %v, newer damaged: %+v, %v", seqs, got, err)
		}
		// The newer copy sealed under another key: not current for this
		// key, though a keyless reader (display only) still sees it.
		c = bytes.Clone(b)
		h.Seq = seqs[newer]
		copy(slotBytes(c, newer), mustMarshal(t, h, []byte("other key")))
		if got, err := readStore(t, c).Current(testKey); err != nil || got.Seq != seqs[older] {
			t.Errorf("seqs %v, newer under another key: %+v, %v", seqs, got, err)
		}
		if got, err := readStore(t, c).Current(nil); err != nil || got.Seq != seqs[newer] {
			t.Errorf("seqs %v, newer under another key, keyless: %+v, %v", seqs, got, err)
		}
	}
}

func TestStoreCurrentErrors(t *testing.T) {
	b := make([]byte, metaDevSize)
	if err := readStore(t, b).CommitBoth(validHeader(), testKey); err != nil {
		t.Fatal(err)
	}
	if _, err := readStore(t, b).Current([]byte("wrong key")); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong key: %v, want ErrAuth", err)
	}
	for slot := range 2 {
		c := bytes.Clone(b)
		slotBytes(c, slot)[200] ^= 1
		if _, err := readStore(t, c).Current([]byte("wrong key")); !errors.Is(err, ErrAuth) {
			t.Errorf("slot %d corrupt, other under another key: %v, want ErrAuth", slot, err)
		}
		// A copy that never was a header next to a corrupt one: the device
		// holds a damaged header, not none.
		copy(slotBytes(c, 1-slot), make([]byte, Size))
		if _, err := readStore(t, c).Current(testKey); !errors.Is(err, ErrCorrupt) {
			t.Errorf("slot %d corrupt, other blank: %v, want ErrCorrupt", slot, err)
		}
	}
	c := bytes.Clone(b)
	slotBytes(c, 0)[200] ^= 1
	slotBytes(c, 1)[300] ^= 1
	if _, err := readStore(t, c).Current(testKey); !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrAuth) {
		t.Errorf("both copies corrupt: %v, want ErrCorrupt", err)
	}
}

func TestStoreCommitSequence(t *testing.T) {
	b := patterned(metaDevSize)
	outside := bytes.Clone(b[:metaDevSize-2*Size])
	h := validHeader()
	h.Seq = 0
	if err := readStore(t, b).CommitBoth(h, testKey); err != nil {
		t.Fatal(err)
	}
	s := readStore(t, b)
	for slot, c := range s.Copies {
		if c.Err != nil || !sameApartFromSeq(c.Header, h) || VerifyMAC(c.Raw, testKey) != nil {
			t.Fatalf("after CommitBoth, slot %d: %+v, %v", slot, c.Header, c.Err)
		}
	}
	if !s.Healthy() {
		t.Error("not Healthy right after CommitBoth")
	}
	prev, err := s.Current(testKey)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		next := *prev
		next.Done = prev.Done + 1
		if err := s.Commit(&next, testKey); err != nil {
			t.Fatal(err)
		}
		if next.Seq <= prev.Seq {
			t.Fatalf("commit %d: seq %d after %d", i, next.Seq, prev.Seq)
		}
		fresh := readStore(t, b)
		got, err := fresh.Current(testKey)
		if err != nil || !reflect.DeepEqual(got, &next) {
			t.Fatalf("commit %d: read back %+v, %v; want %+v", i, got, err, next)
		}
		// The previous header survives in the other slot: that is what
		// a crash during the next commit falls back to.
		if !reflect.DeepEqual(fresh.Copies[0].Header, prev) && !reflect.DeepEqual(fresh.Copies[1].Header, prev) {
			t.Fatalf("commit %d overwrote the previous header", i)
		}
		if fresh.Healthy() {
			t.Errorf("commit %d: Healthy with the other copy a step behind", i)
		}
		prev = &next
	}
	if !bytes.Equal(b[:metaDevSize-2*Size], outside) {
		t.Error("commits wrote outside the header slots")
	}
}

// Commit must not write a copy its own reader would reject: with CommitBoth
// that would destroy both copies.
func TestStoreCommitRefusesInvalidHeader(t *testing.T) {
	b := make([]byte, metaDevSize)
	if err := readStore(t, b).CommitBoth(validHeader(), testKey); err != nil {
		t.Fatal(err)
	}
	before := bytes.Clone(b)
	s := readStore(t, b)
	h, err := s.Current(testKey)
	if err != nil {
		t.Fatal(err)
	}
	h.Done = h.Windows() + 1
	if err := s.CommitBoth(h, testKey); err == nil {
		t.Error("CommitBoth accepted a header that fails Check")
	}
	if !bytes.Equal(b, before) {
		t.Error("a refused commit changed the device")
	}
}

// A crash during Commit leaves the target slot with any mix of old and new
// 512-byte sectors (the Device contract). Whatever the mix, the next read
// finds either the header committed before or the new one, never nothing.
func TestStoreTornCommit(t *testing.T) {
	const sectors = Size / 512
	b := make([]byte, metaDevSize)
	h := validHeader()
	if err := readStore(t, b).CommitBoth(h, testKey); err != nil {
		t.Fatal(err)
	}
	// Several steps, so that the commit lands in each slot in turn.
	for step := range 4 {
		s := readStore(t, b)
		prev, err := s.Current(testKey)
		if err != nil {
			t.Fatal(err)
		}
		old := bytes.Clone(b)
		next := *prev
		next.Done = (prev.Done + 1) % (prev.Windows() + 1)
		if err := s.Commit(&next, testKey); err != nil {
			t.Fatal(err)
		}
		target := -1
		for slot := range 2 {
			if !bytes.Equal(slotBytes(old, slot), slotBytes(b, slot)) {
				if target >= 0 {
					t.Fatalf("step %d: Commit wrote both slots", step)
				}
				target = slot
			}
		}
		if target < 0 {
			t.Fatalf("step %d: Commit wrote nothing", step)
		}
		for mask := range 1 << sectors {
			torn := bytes.Clone(old)
			for i := range sectors {
				if mask&(1<<i) != 0 {
					lo := i * 512
					copy(slotBytes(torn, target)[lo:lo+512], slotBytes(b, target)[lo:lo+512])
				}
			}
			ts := readStore(t, torn)
			got, err := ts.Current(testKey)
			if err != nil {
				t.Fatalf("step %d, sectors %08b new: %v", step, mask, err)
			}
			complete := bytes.Equal(slotBytes(torn, target), slotBytes(b, target))
			switch {
			case complete && !reflect.DeepEqual(got, &next):
				t.Fatalf("step %d, sectors %08b new (copy complete): got seq %d, want the new header", step, mask, got.Seq)
			case !complete && !reflect.DeepEqual(got, prev):
				t.Fatalf("step %d, sectors %08b new: got %+v, want the previous header", step, mask, got)
			}
			// Recovery commits again; that must land and win.
			again := *got
			again.Updated++
			if err := ts.Commit(&again, testKey); err != nil {
				t.Fatal(err)
			}
			if after, err := readStore(t, torn).Current(testKey); err != nil || !reflect.DeepEqual(after, &again) {
				t.Fatalf("step %d, sectors %08b new: commit after the crash read back %+v, %v", step, mask, after, err)
			}
		}
	}
}

func TestStoreCommitRepairsCorruptSlot(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for slot := range 2 {
		for _, withCurrent := range []bool{true, false} {
			b := make([]byte, metaDevSize)
			h := validHeader()
			if err := readStore(t, b).CommitBoth(h, testKey); err != nil {
				t.Fatal(err)
			}
			for i := range slotBytes(b, slot) {
				slotBytes(b, slot)[i] = byte(r.Uint32())
			}
			copy(slotBytes(b, slot), magic[:]) // damaged, not absent
			s := readStore(t, b)
			if s.Copies[slot].Err == nil || s.Healthy() {
				t.Fatalf("slot %d: damage not seen", slot)
			}
			cur := *h
			if withCurrent {
				got, err := s.Current(testKey)
				if err != nil {
					t.Fatalf("slot %d damaged: %v", slot, err)
				}
				cur = *got
			}
			cur.Updated++
			if err := s.CommitBoth(&cur, testKey); err != nil {
				t.Fatal(err)
			}
			fresh := readStore(t, b)
			for i, c := range fresh.Copies {
				if c.Err != nil || VerifyMAC(c.Raw, testKey) != nil || !sameApartFromSeq(c.Header, &cur) {
					t.Errorf("slot %d damaged, current=%v: after repair copy %d is %+v, %v", slot, withCurrent, i, c.Header, c.Err)
				}
			}
			if !fresh.Healthy() {
				t.Errorf("slot %d damaged, current=%v: not Healthy after repair", slot, withCurrent)
			}
			// A single Commit also repairs: it goes into the damaged slot,
			// since the intact one holds the newest header.
			slotBytes(b, slot)[123] ^= 0xff
			s = readStore(t, b)
			if _, err := s.Current(testKey); err != nil {
				t.Fatal(err)
			}
			cur.Updated++
			if err := s.Commit(&cur, testKey); err != nil {
				t.Fatal(err)
			}
			if c := readStore(t, b).Copies[slot]; c.Err != nil || !reflect.DeepEqual(c.Header, &cur) {
				t.Errorf("slot %d: single Commit did not repair it: %v", slot, c.Err)
			}
		}
	}
}

func TestKCV(t *testing.T) {
	u1 := [16]byte{1}
	u2 := [16]byte{2}
	k1 := []byte("key one, 32 bytes long, exactly")
	k2 := []byte("key two, 32 bytes long, exactly")
	if KCV(nil, u1) != ([32]byte{}) || KCV([]byte{}, u1) != ([32]byte{}) {
		t.Error("KCV of no key is not zero")
	}
	if KCV(k1, u1) == ([32]byte{}) || KCV([]byte{0}, u1) == ([32]byte{}) {
		t.Error("KCV of a key is zero")
	}
	if KCV(k1, u1) != KCV(bytes.Clone(k1), u1) {
		t.Error("KCV is not deterministic")
	}
	if KCV(k1, u1) == KCV(k2, u1) {
		t.Error("KCV does not depend on the key")
	}
	if KCV(k1, u1) == KCV(k1, u2) {
		t.Error("KCV does not depend on the UUID")
	}
}

func TestMACKey(t *testing.T) {
	u := [16]byte{7}
	mk := func(o, n []byte, u [16]byte) []byte {
		t.Helper()
		k, err := MACKey(o, n, u)
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != 32 {
			t.Fatalf("MAC key of %d bytes", len(k))
		}
		return k
	}
	base := mk([]byte("ab"), []byte("c"), u)
	if !bytes.Equal(base, mk([]byte("ab"), []byte("c"), u)) {
		t.Error("MACKey is not deterministic")
	}
	distinct := map[string][]byte{
		"(a, bc)":      mk([]byte("a"), []byte("bc"), u),
		"(abc, none)":  mk([]byte("abc"), nil, u),
		"(none, abc)":  mk(nil, []byte("abc"), u),
		"(c, ab)":      mk([]byte("c"), []byte("ab"), u),
		"other UUID":   mk([]byte("ab"), []byte("c"), [16]byte{8}),
		"(none, none)": mk(nil, nil, u),
	}
	for name, k := range distinct {
		if bytes.Equal(k, base) {
			t.Errorf("MACKey(ab, c) equals MACKey%s", name)
		}
	}
	if bytes.Equal(distinct["(abc, none)"], distinct["(none, abc)"]) {
		t.Error("MACKey does not tell which side a key is on")
	}
}

func TestDigestEntry(t *testing.T) {
	var sum [32]byte
	sum[0] = 1
	e := DigestEntry(testKey, 5, sum)
	if e != DigestEntry(bytes.Clone(testKey), 5, sum) {
		t.Error("DigestEntry is not deterministic")
	}
	other := sum
	other[31] ^= 1
	for name, d := range map[string][DigestEntrySize]byte{
		"window":    DigestEntry(testKey, 6, sum),
		"window+2⁸": DigestEntry(testKey, 5+256, sum),
		"hash":      DigestEntry(testKey, 5, other),
		"key":       DigestEntry([]byte("another key"), 5, sum),
	} {
		if d == e {
			t.Errorf("DigestEntry does not depend on the %s", name)
		}
	}
}
