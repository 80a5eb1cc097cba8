// Package demo runs the main job on a throw-away image: it builds an image
// of recognisable text encrypted under a random key, converts it to another
// random key, verifies it, decrypts it and compares every byte with the
// original, and reports the throughput against an in-place copy. bench
// builds its images with the same functions.
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/internal/units"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// Params is a demo run. Convert and Verify are the command line's own
// convert and verify, progress display and report included, so that the
// demo shows what a user of those commands sees.
type Params struct {
	Dir            string // where the demo directory is created
	Size           int64  // image size, metadata included
	Stdout, Stderr io.Writer
	Convert        func(ctx context.Context, img string, t engine.Target, cfg engine.Config) error
	Verify         func(ctx context.Context, img string, t engine.Target, oldKey, newKey []byte) error
}

// Layout sizes the metadata area and window for an image: the defaults
// for images of 256 MiB and up, smaller ones so that a small image still
// has most of its bytes as data.
func Layout(size int64) (metaSize, window int64, err error) {
	const minSize = 4 << 20
	if size < minSize || size%4096 != 0 {
		return 0, 0, fmt.Errorf("%w: --size %d: want a multiple of 4 KiB, at least %s", errclass.Usage, size, units.Bytes(minSize))
	}
	metaSize = min(int64(engine.DefaultMetaSize), max(2<<20, size/8/4096*4096))
	window = int64(engine.DefaultWindow)
	if metaSize < 16<<20 {
		window = 1 << 20 // the journal log must hold a whole window
	}
	return metaSize, window, nil
}

// Plain fills b, which starts at byte off of the data area, with the
// demo's plaintext: text lines naming their own sector and offset, so the
// data is recognisable in a hex dump and passes the old-key plausibility
// check like a real file system would.
func Plain(b []byte, off int64) {
	const words = "the quick brown fox jumps over the lazy dog while cryptshift rewrites every sector in place "
	for i := 0; i < len(b); i += 512 {
		pos := off + int64(i)
		line := fmt.Sprintf("cryptshift demo sector %012d at byte %016x: ", pos/512, pos)
		s := b[i:min(i+512, len(b))]
		n := copy(s, line)
		for j := n; j < len(s); j++ {
			s[j] = words[(int(pos/512)+j)%len(words)]
		}
		s[len(s)-1] = '\n'
	}
}

// RandomKey is a fresh random key of n bytes.
func RandomKey(n int) ([]byte, error) {
	k := make([]byte, n)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// Run builds the image in a new directory under p.Dir, converts, verifies
// and compares it, reports, and removes everything it created.
func Run(ctx context.Context, p Params) error {
	stdout := p.Stdout
	metaSize, window, err := Layout(p.Size)
	if err != nil {
		return err
	}
	dataSize := p.Size - metaSize
	work, err := os.MkdirTemp(p.Dir, "cryptshift-demo-")
	if err != nil {
		return fmt.Errorf("%w: demo directory: %w", errclass.Device, err)
	}
	defer os.RemoveAll(work)
	img := work + "/disk.img"
	oldKey, err := RandomKey(64)
	if err != nil {
		return err
	}
	newKey, err := RandomKey(64)
	if err != nil {
		return err
	}
	xts, err := sectorcipher.ParseSpec("aes-xts-plain64")
	if err != nil {
		return err
	}
	oldC, err := sectorcipher.New(sectorcipher.Mapping{Spec: xts, Key: oldKey, SectorSize: 512})
	if err != nil {
		return err
	}
	newC, err := sectorcipher.New(sectorcipher.Mapping{Spec: xts, Key: newKey, SectorSize: 512})
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "Demo image %s: %s, of which %s data encrypted with aes-xts-plain64 under a random 512-bit key, %s metadata\n",
		img, units.Bytes(uint64(p.Size)), units.Bytes(uint64(dataSize)), units.Bytes(uint64(metaSize)))
	if err := WriteImage(img, p.Size, dataSize, oldC); err != nil {
		return err
	}
	copyTime, err := timeInPlaceCopy(img, dataSize, window)
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "Converting to a new random key, journal resilience, window %s\n", units.Bytes(uint64(window)))
	d, err := open(img)
	if err != nil {
		return err
	}
	defer d.Close()
	t := engine.Target{Data: d, Meta: d, MetaOnData: true}
	cfg := engine.Config{
		Old:  engine.Side{Cipher: "aes-xts-plain64", Key: oldKey},
		New:  engine.Side{Cipher: "aes-xts-plain64", Key: newKey},
		Mode: "journal", Window: window, MetaSize: metaSize,
	}
	start := time.Now()
	// An interrupted conversion says itself that the files go (the
	// meter's pause message): there is nothing to resume.
	if err := p.Convert(ctx, img, t, cfg); err != nil {
		return err
	}
	convTime := time.Since(start)

	fmt.Fprintln(stdout, "Verifying (header, log, and every window against its recorded digest):")
	if err := p.Verify(ctx, img, t, oldKey, newKey); err != nil {
		return err
	}
	if err := Compare(t.Data, dataSize, newC); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Decrypted all %s with the new key: every byte equals the original.\n", units.Bytes(uint64(dataSize)))
	mibs := func(d time.Duration) float64 { return float64(dataSize) / (1 << 20) / d.Seconds() }
	fmt.Fprintf(stdout, "Conversion: %s in %s, %.1f MiB/s. In-place copy of the same range (read, write, flush): %s, %.1f MiB/s. Conversion took %.2fx the copy time.\n",
		units.Bytes(uint64(dataSize)), units.Duration(convTime), mibs(convTime), units.Duration(copyTime), mibs(copyTime),
		convTime.Seconds()/copyTime.Seconds())
	return nil
}

// WriteImage creates the image: encrypted demo text in the data area,
// zeros in the metadata area.
func WriteImage(path string, size, dataSize int64, c sectorcipher.Cipher) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%w: create demo image: %w", errclass.Device, err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("%w: size demo image: %w", errclass.IO, err)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < dataSize; off += int64(len(buf)) {
		b := buf[:min(int64(len(buf)), dataSize-off)]
		Plain(b, off)
		c.Encrypt(b, uint64(off/512))
		if _, err := f.WriteAt(b, off); err != nil {
			return fmt.Errorf("%w: write demo image: %w", errclass.IO, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%w: sync demo image: %w", errclass.IO, err)
	}
	return f.Close()
}

// timeInPlaceCopy reads and rewrites the data area window by window and
// flushes, opened the way the conversion opens it: the ceiling a conversion
// could reach on this storage, since it must read and write every byte too.
func timeInPlaceCopy(path string, dataSize, window int64) (time.Duration, error) {
	d, err := open(path)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	buf := blockdev.AlignedBuffer(int(window))
	start := time.Now()
	for off := int64(0); off < dataSize; off += window {
		b := buf[:min(window, dataSize-off)]
		if _, err := d.ReadAt(b, off); err != nil {
			return 0, fmt.Errorf("%w: copy: %w", errclass.IO, err)
		}
		if _, err := d.WriteAt(b, off); err != nil {
			return 0, fmt.Errorf("%w: copy: %w", errclass.IO, err)
		}
	}
	if err := d.Flush(); err != nil {
		return 0, fmt.Errorf("%w: copy: %w", errclass.IO, err)
	}
	return time.Since(start), nil
}

// Compare decrypts the data area with the new key and compares it with
// freshly generated demo text, a megabyte at a time.
func Compare(d blockdev.Device, dataSize int64, c sectorcipher.Cipher) error {
	got := make([]byte, 1<<20)
	want := make([]byte, len(got))
	for off := int64(0); off < dataSize; off += int64(len(got)) {
		n := min(int64(len(got)), dataSize-off)
		if _, err := d.ReadAt(got[:n], off); err != nil {
			return fmt.Errorf("%w: read back: %w", errclass.IO, err)
		}
		c.Decrypt(got[:n], uint64(off/512))
		Plain(want[:n], off)
		if !bytes.Equal(got[:n], want[:n]) {
			i := 0
			for got[i] == want[i] {
				i++
			}
			return fmt.Errorf("%w: demo data differs from the original at byte %d", errclass.Damaged, off+int64(i))
		}
	}
	return nil
}

// open opens the demo image for the conversion: exclusively, with O_DIRECT
// where the file system supports it (tmpfs does not), as convert would.
func open(path string) (*blockdev.File, error) {
	f, err := blockdev.Open(path, blockdev.Options{Exclusive: true, Direct: true})
	if err != nil {
		f, err = blockdev.Open(path, blockdev.Options{Exclusive: true})
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errclass.Device, err)
	}
	return f, nil
}
