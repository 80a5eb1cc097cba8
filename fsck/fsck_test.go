package fsck

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
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
	if stop == 0 && err != nil || stop != 0 && !errors.Is(err, engine.ErrPaused) {
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
	if !errors.Is(err, engine.ErrWrongKey) {
		t.Fatalf("want ErrWrongKey, got %v", err)
	}
}

func TestDamagedCopyFoundAndRepaired(t *testing.T) {
	m := converted(t, 0)
	m.Bytes()[dev-4096+200] ^= 0xff // header copy 0
	r, err := Audit(context.Background(), target(m), oldKey, newKey, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Clean() || !strings.Contains(r.String(), "header copy 0") {
		t.Fatalf("damaged copy not reported:\n%s", r)
	}
	if _, err := Audit(context.Background(), target(m), oldKey, newKey, Options{Repair: true}); err != nil {
		t.Fatal(err)
	}
	r, err = Audit(context.Background(), target(m), oldKey, newKey, Options{Data: true})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() {
		t.Fatalf("after repair:\n%s", r)
	}
}
