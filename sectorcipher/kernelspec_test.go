package sectorcipher

import (
	"errors"
	"strings"
	"testing"
)

// A spec without a userspace cipher parses as the kernel's, verbatim;
// one with a userspace cipher parses as ParseSpec parses it; what can
// never be a table's cipher field is refused.
func TestParseKernelSpec(t *testing.T) {
	for _, s := range []string{"serpent-xts-plain64", "xchacha12,aes-adiantum-plain64", "aes-cbc-benbi", "capi:xts(serpent)-plain64", "aes-xts-essiv:sha256"} {
		sp, err := ParseKernelSpec(s)
		if err != nil || !sp.KernelOnly() || sp.Userspace() || sp.String() != s || sp.KernelCipher() != s {
			t.Fatalf("%s: %v (kernel-only %v, userspace %v, %q)", s, err, sp.KernelOnly(), sp.Userspace(), sp.String())
		}
		if _, err := ParseSpec(s); err == nil {
			t.Fatalf("%s: ParseSpec accepts it, so it is not kernel-only", s)
		}
		if err := sp.CheckKey(make([]byte, 32)); err != nil {
			t.Fatalf("%s: 32-byte key: %v", s, err)
		}
		if sp.CheckKey(nil) == nil || sp.CheckKey(make([]byte, maxKernelKey+1)) == nil {
			t.Fatalf("%s: accepts an empty or huge key", s)
		}
		_, err = New(Mapping{Spec: sp, Key: make([]byte, 64), SectorSize: 512})
		if !errors.Is(err, ErrKernelOnly) {
			t.Fatalf("%s: New: %v", s, err)
		}
	}
	for _, s := range []string{"capi:xts(aes)-plain64", "aes-xts-plain64", "none"} {
		sp, err := ParseKernelSpec(s)
		want, _ := ParseSpec(s)
		if err != nil || sp != want || !sp.Userspace() {
			t.Fatalf("%s: %v, %v", s, sp, err)
		}
	}
	for _, s := range []string{"", "aes xts", "aes-xts-plain64\x00", strings.Repeat("a", MaxSpecLen+1), "aes-xts-plain64\n"} {
		if _, err := ParseKernelSpec(s); err == nil {
			t.Fatalf("%q accepted", s)
		}
	}
}
