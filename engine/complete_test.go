package engine

import (
	"context"
	"errors"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
)

// TestNextRotationOnline: online, the old side of the next rotation is
// what NAME's live table says after the first one finished, i.e. the
// finished new mapping spelled out in full, and the CLI gives no more.
// That must start the next conversion, and asking for the finished one
// again (both sides its new mapping) must say it is complete.
func TestNextRotationOnline(t *testing.T) {
	a, b, c := sides[1], sides[8], sides[5]
	f := newFixture(t, a, b, 0, 4*testWindow, 4<<20)
	tgt := f.target()
	run := func(cfg Config) (*Result, error) {
		return Convert(context.Background(), tgt, cfg, Options{Holder: &fakeHolder{t: t, tgt: tgt}})
	}
	if _, err := run(f.config("journal")); err != nil {
		t.Fatal(err)
	}
	again := Config{Old: b.cfg(), New: Side{Key: b.key}}
	res, err := run(again)
	if err != nil || !res.AlreadyComplete {
		t.Fatalf("the finished online conversion asked again: %+v, %v", res, err)
	}
	next := Config{Old: b.cfg(), New: c.cfg(), Window: testWindow, MetaSize: testMeta, Mode: "journal"}
	res, err = run(next)
	if err != nil || res.AlreadyComplete {
		t.Fatalf("next online rotation: %+v, %v", res, err)
	}
	if res.Header.DataSize != 4*testWindow {
		t.Fatalf("next rotation converts %d bytes, the finished one %d", res.Header.DataSize, 4*testWindow)
	}
	f.new_ = c
	f.check(t, res.Header)
	// From C, an old side that contradicts the record is a conflict.
	wrong := c
	wrong.ss = 4096
	before := devHash(f.dev)
	if _, err := run(Config{Old: wrong.cfg(), New: a.cfg(), MetaSize: testMeta}); !errors.Is(err, errclass.Conflict) {
		t.Fatalf("contradicting old side: want errclass.Conflict, got %v", err)
	}
	if devHash(f.dev) != before {
		t.Fatal("refused run wrote")
	}
}
