package demo

import (
	"errors"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

func TestLayout(t *testing.T) {
	for _, size := range []int64{0, 4<<20 - 4096, 8<<20 + 512} {
		if _, _, err := Layout(size); !errors.Is(err, errclass.Usage) {
			t.Errorf("Layout(%d) = %v, want a usage error", size, err)
		}
	}
	meta, win, err := Layout(16 << 20)
	if err != nil || meta != 2<<20 || win != 1<<20 {
		t.Errorf("Layout(16M) = %d, %d, %v; want 2M of metadata and 1M windows", meta, win, err)
	}
}

// Compare accepts the demo text under the right key and names the first
// byte that differs otherwise.
func TestCompare(t *testing.T) {
	spec, err := sectorcipher.ParseSpec("aes-xts-plain64")
	if err != nil {
		t.Fatal(err)
	}
	key, err := RandomKey(64)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: key, SectorSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	const size = 3 << 20
	img := make([]byte, size)
	Plain(img, 0)
	c.Encrypt(img, 0)
	if err := Compare(blockdev.MemFrom(img), size, c); err != nil {
		t.Fatal(err)
	}
	img[2<<20+77] ^= 1
	if err := Compare(blockdev.MemFrom(img), size, c); !errors.Is(err, errclass.Damaged) {
		t.Fatalf("a changed byte: Compare = %v, want a damage error", err)
	}
}
