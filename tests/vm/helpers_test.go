package vm

import (
	"os"
	"path/filepath"
	"testing"
)

// testImage is shared by the tests of this package so the initramfs (and the
// guest helper's go build) happen once per run.
var testImage = Image{GoPackages: []string{"./tests/vm/internal/syncwriter"}}

// newDisk creates a raw disk image of size bytes filled by fill (zeros if nil).
func newDisk(t *testing.T, name string, size int, fill []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	data := make([]byte, size)
	copy(data, fill)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readDisk(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
