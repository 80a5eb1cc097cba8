package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
)

// countingDev counts the bytes read through it.
type countingDev struct {
	blockdev.Device
	read atomic.Int64
}

func (d *countingDev) ReadAt(p []byte, off int64) (int, error) {
	d.read.Add(int64(len(p)))
	return d.Device.ReadAt(p, off)
}

// failWindow1 fails writes to the second window's data, as a dying disk
// would, leaving a conversion in progress with that window open.
type failWindow1 struct{ blockdev.Device }

func (d failWindow1) WriteAt(p []byte, off int64) (int, error) {
	if off >= testWindow && off < 2*testWindow {
		return 0, errors.New("injected write error")
	}
	return d.Device.WriteAt(p, off)
}

// recoveryReads starts a conversion of a sparse image with dataSize bytes
// of zeroed plaintext, has it fail writing the second window (its journal
// record already durable), and returns how many bytes Recover then reads.
func recoveryReads(t *testing.T, dataSize int64) int64 {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, dataSize+testMeta*8); err != nil {
		t.Fatal(err)
	}
	f, err := blockdev.Open(path, blockdev.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off := int64(0)
	nw := sides[1]
	cfg := Config{Old: Side{Cipher: "none"}, New: nw.cfg(), DataOffset: &off, DataSize: dataSize,
		Mode: "journal", Window: testWindow, MetaSize: testMeta * 8}
	fd := failWindow1{f}
	_, err = Convert(context.Background(), Target{Data: fd, Meta: fd, MetaOnData: true}, cfg, Options{})
	if !errors.Is(err, errclass.IO) {
		t.Fatalf("want the injected I/O error, got %v", err)
	}
	cd := &countingDev{Device: f}
	res, err := Recover(context.Background(), Target{Data: cd, Meta: cd, MetaOnData: true}, nil, nw.key, RecoverOptions{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Rolled || res.Window != 1 {
		t.Fatalf("recovery did not roll window 1 forward: %+v", res)
	}
	return cd.read.Load()
}

// TestRecoveryCostDoesNotGrowWithTheDevice: recovery reads the header
// copies, the log after the last checkpoint and the open window, never
// anything that scales with the data area. Counted in bytes, not timed.
func TestRecoveryCostDoesNotGrowWithTheDevice(t *testing.T) {
	small := recoveryReads(t, 16<<20)
	large := recoveryReads(t, 4<<30)
	if large != small {
		t.Fatalf("recovery read %d bytes on a 16 MiB data area and %d on a 4 GiB one", small, large)
	}
}
