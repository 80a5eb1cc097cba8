package fsck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

const (
	window = 64 << 10
	dev    = 2 << 20
	data   = 8 * window
)

var oldKey, newKey = bytesOf(64, 1), bytesOf(64, 2)

func bytesOf(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed*31 + byte(i)
	}
	return b
}

// converted returns a device converted from key 1 to key 2 (journal mode),
// stopped after `stop` windows (0 = run to the end).
func converted(t *testing.T, stop uint64) *blockdev.Mem {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	plain := make([]byte, data)
	for i := range plain {
		plain[i] = "filesystem blocks "[r.IntN(18)]
	}
	spec, _ := sectorcipher.ParseSpec("aes-xts-plain64")
	c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: oldKey, SectorSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	c.Encrypt(plain, 0)
	m := blockdev.NewMem(dev)
	copy(m.Bytes(), plain)
	off := int64(0)
	cfg := engine.Config{Old: engine.Side{Cipher: "aes-xts-plain64", Key: oldKey}, New: engine.Side{Cipher: "aes-xts-plain64", Key: newKey},
		DataOffset: &off, DataSize: data, Window: window, MetaSize: 1 << 20}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = engine.Convert(ctx, target(m), cfg, engine.Options{Hooks: &engine.Hooks{AfterWindow: func(d uint64) {
		if d == stop {
			cancel()
		}
	}}})
	if stop == 0 && err != nil || stop != 0 && !errors.Is(err, errclass.Paused) {
		t.Fatalf("convert: %v", err)
	}
	return m
}

func target(m *blockdev.Mem) engine.Target { return engine.Target{Data: m, Meta: m, MetaOnData: true} }

func TestCleanConversionAuditsClean(t *testing.T) {
	m := converted(t, 0)
	r, err := Audit(context.Background(), target(m), oldKey, newKey, Options{Data: true})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() || r.Checked != 8 {
		t.Fatalf("want clean with 8 windows checked, got %d checked:\n%s", r.Checked, r)
	}
}

func TestChangedWindowIsListed(t *testing.T) {
	m := converted(t, 0)
	m.Bytes()[3*window+100] ^= 1 // inside window 3
	m.Bytes()[6*window] ^= 0x80  // first byte of window 6
	r, err := Audit(context.Background(), target(m), oldKey, newKey, Options{Data: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.Clean() || fmt.Sprint(r.Changed) != "[3 6]" {
		t.Fatalf("want windows 3 and 6 changed, got %v:\n%s", r.Changed, r)
	}
}

func TestPausedConversionChecksOnlyConvertedWindows(t *testing.T) {
	m := converted(t, 3)
	r, err := Audit(context.Background(), target(m), oldKey, newKey, Options{Data: true})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() || r.Checked != 3 {
		t.Fatalf("paused after 3: want clean, 3 checked; got %d:\n%s", r.Checked, r)
	}
}

func TestWrongKeyIsAnError(t *testing.T) {
	m := converted(t, 0)
	_, err := Audit(context.Background(), target(m), oldKey, bytesOf(64, 9), Options{})
	if !errors.Is(err, errclass.WrongKey) {
		t.Fatalf("want ErrWrongKey, got %v", err)
	}
}

// slot returns header copy i of a device image (FORMAT.md: copy 0 is the
// last 4 KiB, copy 1 the 4 KiB below it).
func slot(b []byte, i int) []byte { return b[len(b)-(i+1)*header.Size : len(b)-i*header.Size] }

// onlyChanged fails unless before and after differ in header copy i alone.
func onlyChanged(t *testing.T, before, after []byte, i int) {
	t.Helper()
	lo := len(before) - (i+1)*header.Size
	if !bytes.Equal(before[:lo], after[:lo]) || !bytes.Equal(before[lo+header.Size:], after[lo+header.Size:]) {
		t.Fatalf("the repair wrote outside header copy %d", i)
	}
	if bytes.Equal(slot(before, i), slot(after, i)) {
		t.Fatalf("the repair did not write header copy %d", i)
	}
}

// readStore reads m's header copies, the newest one (unauthenticated) and
// the MAC key of the test keys for its conversion.
func readStore(t *testing.T, m *blockdev.Mem) (*header.Store, *header.Header, []byte) {
	t.Helper()
	s, err := header.ReadStore(m)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := s.Current(nil)
	if err != nil {
		t.Fatal(err)
	}
	mk, err := header.MACKey(oldKey, newKey, cur.UUID)
	if err != nil {
		t.Fatal(err)
	}
	return s, cur, mk
}

// bothAuthentic fails unless both copies decode, verify under the keys and
// hold the same header apart from the sequence number.
func bothAuthentic(t *testing.T, m *blockdev.Mem) {
	t.Helper()
	s, _, mk := readStore(t, m)
	for i, c := range s.Copies {
		if c.Err != nil || header.VerifyMAC(c.Raw, mk) != nil {
			t.Fatalf("copy %d after repair: %v", i, c.Err)
		}
	}
	if !s.Healthy() {
		t.Fatal("copies differ after repair")
	}
}

func TestDamagedCopyFoundAndRepaired(t *testing.T) {
	for _, damaged := range []int{0, 1} {
		m := converted(t, 3)
		slot(m.Bytes(), damaged)[200] ^= 0xff
		before := bytes.Clone(m.Bytes())
		r, err := Audit(context.Background(), target(m), oldKey, newKey, Options{Data: true})
		if err != nil {
			t.Fatal(err)
		}
		if r.Clean() || !strings.Contains(r.String(), fmt.Sprintf("header copy %d is unreadable", damaged)) || r.Repaired != nil {
			t.Fatalf("copy %d: damage not reported:\n%s", damaged, r)
		}
		if !bytes.Equal(before, m.Bytes()) {
			t.Fatal("an audit without Repair wrote")
		}
		r, err = Audit(context.Background(), target(m), oldKey, newKey, Options{Repair: true, Data: true})
		if err != nil {
			t.Fatal(err)
		}
		if !r.Clean() || fmt.Sprint(r.Repaired) != fmt.Sprint([]int{damaged}) || !strings.Contains(r.String(), fmt.Sprintf("repaired: rewrote header copy %d", damaged)) {
			t.Fatalf("copy %d: repair report:\n%s", damaged, r)
		}
		onlyChanged(t, before, m.Bytes(), damaged)
		bothAuthentic(t, m)
		// Nothing left to repair: a second Repair writes nothing.
		repaired := bytes.Clone(m.Bytes())
		r, err = Audit(context.Background(), target(m), oldKey, newKey, Options{Repair: true, Data: true})
		if err != nil || !r.Clean() || r.Repaired != nil || r.Checked != 3 {
			t.Fatalf("copy %d: audit after repair: %v\n%s", damaged, err, r)
		}
		if !bytes.Equal(repaired, m.Bytes()) {
			t.Fatal("Repair wrote to a healthy header")
		}
	}
}

// An authentic copy with a valid crc but an older state (what a crash
// between the two commits of a checkpoint leaves) is information, not
// damage; Repair brings it up to date.
func TestStaleCopyRepaired(t *testing.T) {
	m := converted(t, 3)
	s, _, mk := readStore(t, m)
	older := 0
	if s.Copies[1].Header.Seq < s.Copies[0].Header.Seq {
		older = 1
	}
	stale := *s.Copies[older].Header
	stale.Done = 2
	raw, err := stale.Marshal(mk)
	if err != nil {
		t.Fatal(err)
	}
	copy(slot(m.Bytes(), older), raw)
	before := bytes.Clone(m.Bytes())
	r, err := Audit(context.Background(), target(m), oldKey, newKey, Options{})
	if err != nil || !r.Clean() || !strings.Contains(r.String(), fmt.Sprintf("header copy %d holds an older state", older)) {
		t.Fatalf("stale copy: %v\n%s", err, r)
	}
	r, err = Audit(context.Background(), target(m), oldKey, newKey, Options{Repair: true})
	if err != nil || !r.Clean() || fmt.Sprint(r.Repaired) != fmt.Sprint([]int{older}) || strings.Contains(r.String(), "older state") {
		t.Fatalf("repair of a stale copy: %v\n%s", err, r)
	}
	onlyChanged(t, before, m.Bytes(), older)
	bothAuthentic(t, m)
	if r.Header.Done != 3 {
		t.Fatalf("repair changed the progress to %d", r.Header.Done)
	}
}

// With both copies damaged there is no authenticated header to repair
// from: Repair refuses and writes nothing.
func TestBothCopiesDamagedNotRepaired(t *testing.T) {
	m := converted(t, 3)
	slot(m.Bytes(), 0)[200] ^= 0xff
	slot(m.Bytes(), 1)[300] ^= 0xff
	before := bytes.Clone(m.Bytes())
	_, err := Audit(context.Background(), target(m), oldKey, newKey, Options{Repair: true})
	if !errors.Is(err, errclass.Header) {
		t.Fatalf("want ErrHeader, got %v", err)
	}
	if !bytes.Equal(before, m.Bytes()) {
		t.Fatal("a refused repair wrote")
	}
}

// A crash during the repair tears the copy being rewritten, and only that
// one (onlyChanged above): whatever mix of old and new 512-byte sectors it
// holds, the conversion still opens from the intact copy with the same
// state, and a second repair completes. header's TestStoreTornCommit is
// the exhaustive property for Commit itself; this checks that the repair is
// one such Commit as seen from fsck.
func TestCrashDuringRepair(t *testing.T) {
	m := converted(t, 3)
	slot(m.Bytes(), 0)[200] ^= 0xff
	before := bytes.Clone(m.Bytes())
	if _, err := Audit(context.Background(), target(m), oldKey, newKey, Options{Repair: true}); err != nil {
		t.Fatal(err)
	}
	after := m.Bytes()
	const sectors = header.Size / 512
	for mask := range 1 << sectors {
		torn := bytes.Clone(before)
		for i := range sectors {
			if mask&(1<<i) != 0 {
				copy(slot(torn, 0)[i*512:(i+1)*512], slot(after, 0)[i*512:(i+1)*512])
			}
		}
		tm := blockdev.MemFrom(torn)
		r, err := Audit(context.Background(), target(tm), oldKey, newKey, Options{})
		if err != nil || r.Header.Done != 3 {
			t.Fatalf("sectors %08b new: %v", mask, err)
		}
		if r, err = Audit(context.Background(), target(tm), oldKey, newKey, Options{Repair: true}); err != nil || !r.Clean() {
			t.Fatalf("sectors %08b new: second repair: %v\n%s", mask, err, r)
		}
		bothAuthentic(t, tm)
	}
}
