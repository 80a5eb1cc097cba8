package online

import (
	"context"
	"errors"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

func memTarget() engine.Target {
	return engine.Target{Data: blockdev.NewMem(4 << 20), Meta: blockdev.NewMem(2 << 20)}
}

// A new conversion takes the old mapping, offset and size from NAME's
// single target, and refuses flags that contradict it, each with its class.
func TestFillFromTableNewConversion(t *testing.T) {
	old := sectorcipher.Mapping{Spec: testkit.Spec(t, "aes-xts-plain64"), Key: testkit.Key(64, 1), SectorSize: 4096, IVOffset: 8}
	live := []dm.Target{dm.MappingTarget(old, "8:16", 2048, 0, 4096, nil)}
	cfg := engine.Config{New: engine.Side{Cipher: "aes-xts-plain64", Key: testkit.Key(64, 9)}}
	if _, err := fillFromTable(&cfg, live, memTarget(), ""); err != nil {
		t.Fatal(err)
	}
	if cfg.Old.Cipher != "aes-xts-plain64" || string(cfg.Old.Key) != string(old.Key) || cfg.Old.SectorSize != 4096 ||
		cfg.Old.IVOffset == nil || *cfg.Old.IVOffset != 8 || cfg.DataOffset == nil || *cfg.DataOffset != 2048*512 || cfg.DataSize != 4096*512 {
		t.Fatalf("filled %+v, offset %v, size %d", cfg.Old, cfg.DataOffset, cfg.DataSize)
	}

	off, size, iv := int64(0), int64(512), uint64(0)
	for name, tc := range map[string]struct {
		cfg  engine.Config
		want error
	}{
		"cipher":      {engine.Config{Old: engine.Side{Cipher: "aes-cbc-essiv:sha256"}}, errclass.Usage},
		"key":         {engine.Config{Old: engine.Side{Key: testkit.Key(64, 2)}}, errclass.WrongKey},
		"sector size": {engine.Config{Old: engine.Side{SectorSize: 512}}, errclass.Usage},
		"iv offset":   {engine.Config{Old: engine.Side{IVOffset: &iv}}, errclass.Usage},
		"data offset": {engine.Config{DataOffset: &off}, errclass.Usage},
		"data size":   {engine.Config{DataSize: size}, errclass.Usage},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := fillFromTable(&tc.cfg, live, memTarget(), ""); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	two := []dm.Target{dm.MappingTarget(old, "8:16", 2048, 0, 2048, nil), dm.MappingTarget(old, "8:16", 2048, 2048, 2048, nil)}
	if _, err := fillFromTable(&engine.Config{}, two, memTarget(), ""); !errors.Is(err, errclass.Device) {
		t.Fatalf("two targets and no recorded conversion: %v", err)
	}
}

// Resuming, the keys come from NAME's table, told apart by the recorded
// key check values, not by where the targets are.
func TestFillFromTableFindsKeysByCheckValue(t *testing.T) {
	oldKey, newKey := testkit.Key(64, 1), testkit.Key(64, 100)
	om := sectorcipher.Mapping{Spec: testkit.Spec(t, "aes-xts-plain64"), Key: oldKey, SectorSize: 512}
	// Zeros under the old key: plausible data for the engine's check.
	data := make([]byte, 4<<20)
	c, err := sectorcipher.New(om)
	if err != nil {
		t.Fatal(err)
	}
	c.Encrypt(data[:1<<20], 0)
	tg := engine.Target{Data: blockdev.MemFrom(data), Meta: blockdev.NewMem(2 << 20)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := engine.Config{
		Old: engine.Side{Cipher: "aes-xts-plain64", Key: oldKey}, New: engine.Side{Cipher: "aes-xts-plain64", Key: newKey},
		DataSize: 1 << 20, Window: 64 << 10,
	}
	_, err = engine.Convert(ctx, tg, cfg, engine.Options{Hooks: &engine.Hooks{AfterWindow: func(done uint64) {
		if done == 2 {
			cancel()
		}
	}}})
	if !errors.Is(err, errclass.Paused) {
		t.Fatalf("want a paused conversion, got %v", err)
	}
	nm := om
	nm.Key = newKey
	decoy := om
	decoy.Key = testkit.Key(64, 50)
	// The decoy (another key with the same cipher) comes first: only the
	// check values can tell it from the recorded keys.
	live := []dm.Target{
		dm.MappingTarget(decoy, "8:16", 0, 0, 8, nil),
		dm.MappingTarget(nm, "8:16", 0, 8, 248, nil),
		dm.MappingTarget(om, "8:16", 0, 256, 1792, nil),
	}
	var got engine.Config
	if _, err := fillFromTable(&got, live, tg, ""); err != nil {
		t.Fatal(err)
	}
	if string(got.Old.Key) != string(oldKey) || string(got.New.Key) != string(newKey) {
		t.Fatalf("keys found: old %x, new %x", got.Old.Key[:4], got.New.Key[:4])
	}
}
