package engine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/internal/testkit"
)

// failWrites fails every write: the device a start must not reach.
type failWrites struct{ blockdev.Device }

func (failWrites) WriteAt([]byte, int64) (int, error) { return 0, errors.New("no writes here") }

// TestDecryptAbandonedStart: a start that never wrote DEVICE (its first
// write, the mark, failed) leaves the stash, the trailer and the engine's
// header on --metadata; a later start, also one whose zeroing of the stash
// was cut short before the stash was written again, starts afresh and
// completes to the plaintext at byte 0.
func TestDecryptAbandonedStart(t *testing.T) {
	im, err := testkit.MakeLUKS2(t.TempDir(), 256<<10, 512<<10, []string{"--key-size", "256", "--sector-size", "512"}, [][]string{testkit.CheapPBKDF2}, 5)
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(im.Path)
	if err != nil {
		t.Fatal(err)
	}
	pass, _ := os.ReadFile(im.Passes[0])
	d := im.DataOffset
	dev := blockdev.MemFrom(bytes.Clone(img))
	meta := blockdev.NewMem(2<<20 + d)
	req := DecryptRequest{Passphrases: [][]byte{pass}, Meta: meta, Window: 16 << 10}
	if _, err := ConvertDecryptLUKS2(context.Background(), failWrites{dev}, req, Options{}); err == nil {
		t.Fatal("a start whose DEVICE writes fail succeeded")
	}
	if !bytes.Equal(dev.Bytes(), img) || !IsDecryptMeta(meta) {
		t.Fatal("the failed start wrote DEVICE, or left no record on --metadata")
	}
	for _, cut := range []bool{false, true} {
		dev := blockdev.MemFrom(bytes.Clone(img))
		m := blockdev.MemFrom(bytes.Clone(meta.Bytes()))
		if cut {
			// The restart's zeroing reached the stash's first bytes only.
			l, err := splitDecryptMeta(m, d)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.stash.WriteAt(make([]byte, 4096), 0); err != nil {
				t.Fatal(err)
			}
		}
		r := req
		r.Meta = m
		res, err := ConvertDecryptLUKS2(context.Background(), dev, r, Options{})
		if err != nil || !res.Finished {
			t.Fatalf("cut %v: the restart did not complete: %v", cut, err)
		}
		if !bytes.Equal(dev.Bytes()[:len(im.Plain)], im.Plain) {
			t.Fatalf("cut %v: DEVICE does not hold the plaintext at byte 0", cut)
		}
	}
}
