package kcipher

import (
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

// Without All, a spec with a userspace cipher gets it, with no device
// made and the choice said; a kernel-only spec goes to the kernel, and
// where the kernel cannot load it (here: no device-mapper on the host),
// the error names the spec. The real kernel path runs in tests/vm
// (TestKernelSpecs).
func TestMakerPicks(t *testing.T) {
	var said []string
	k := &Maker{Logf: func(f string, a ...any) { said = append(said, f) }}
	xts, _ := sectorcipher.ParseSpec("aes-xts-plain64")
	c, err := k.Make(sectorcipher.Mapping{Spec: xts, Key: make([]byte, 64), SectorSize: 512}, 2048)
	if err != nil || c == nil || k.Kernel() {
		t.Fatalf("aes-xts-plain64: %v, kernel %v", err, k.Kernel())
	}
	if _, ok := c.(*Cipher); ok {
		t.Fatal("aes-xts-plain64 went to the kernel under auto")
	}
	if len(said) != 0 {
		t.Fatalf("said %v for a userspace cipher", said)
	}
	serpent, _ := sectorcipher.ParseKernelSpec("serpent-xts-plain64")
	if _, err := New(sectorcipher.Mapping{Spec: serpent, Key: make([]byte, 64), SectorSize: 512}, 8); err == nil {
		t.Skip("this host has device-mapper and loop devices; tests/vm covers the kernel path")
	}
	_, err = k.Make(sectorcipher.Mapping{Spec: serpent, Key: make([]byte, 64), SectorSize: 512}, 2048)
	if err == nil || !strings.Contains(err.Error(), "serpent-xts-plain64 has no userspace cipher") {
		t.Fatalf("serpent without a kernel: %v", err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
}
