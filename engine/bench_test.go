package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
)

// The engine benchmarks convert an image file in place and, as the
// baseline in the same run, copy the same range in place with the same
// window and O_DIRECT: read every byte once and write it once, the floor
// of any conversion. Compare them as ratios (benchstat, or by eye).
const benchData = 128 << 20

func benchImage(b *testing.B) (string, []byte) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "img")
	plain := plaintext(benchData, 1)
	ct := append([]byte(nil), plain...)
	crypt(&testing.T{}, sides[1], ct, true)
	img := make([]byte, benchData+DefaultMetaSize)
	copy(img, ct)
	if err := os.WriteFile(path, img, 0o600); err != nil {
		b.Fatal(err)
	}
	return path, img
}

func BenchmarkCopyInPlace(b *testing.B) {
	path, _ := benchImage(b)
	b.SetBytes(benchData)
	for b.Loop() {
		dev, err := blockdev.Open(path, blockdev.Options{Exclusive: true, Direct: true})
		if err != nil {
			b.Fatal(err)
		}
		buf := blockdev.AlignedBuffer(DefaultWindow)
		for off := int64(0); off < benchData; off += DefaultWindow {
			if _, err := dev.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
			if _, err := dev.WriteAt(buf, off); err != nil {
				b.Fatal(err)
			}
			if err := dev.Flush(); err != nil {
				b.Fatal(err)
			}
		}
		dev.Close()
	}
}

func BenchmarkConvert(b *testing.B) {
	for _, mode := range []string{"journal", "checksum", "shift"} {
		b.Run(mode, func(b *testing.B) {
			path, img := benchImage(b)
			b.SetBytes(benchData)
			for b.Loop() {
				b.StopTimer()
				if err := os.WriteFile(path, img, 0o600); err != nil {
					b.Fatal(err)
				}
				dev, err := blockdev.Open(path, blockdev.Options{Exclusive: true, Direct: true})
				if err != nil {
					b.Fatal(err)
				}
				off := int64(0)
				size := int64(benchData)
				if mode == "shift" {
					size -= DefaultWindow
				}
				cfg := Config{Old: sides[1].cfg(), New: sides[3].cfg(), DataOffset: &off, DataSize: size, Mode: mode}
				b.StartTimer()
				if _, err := Convert(context.Background(), Target{Data: dev, Meta: dev, MetaOnData: true}, cfg, Options{}); err != nil {
					b.Fatal(fmt.Errorf("%s: %w", mode, err))
				}
				b.StopTimer()
				dev.Close()
				b.StartTimer()
			}
		})
	}
}
