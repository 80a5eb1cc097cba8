package sectorcipher

import (
	"errors"
	"fmt"
)

// modeKernel is a spec cryptshift has no userspace cipher for: only the
// kernel's dm-crypt can run it (package kcipher). Its Spec carries the spec
// string verbatim, since only the kernel knows what it means and which
// spellings are equal.
const modeKernel chainMode = 100

// MaxSpecLen is the longest spec ParseKernelSpec accepts: what a header's
// mapping can record (docs/FORMAT.md, "Mapping": 48 bytes, NUL-terminated).
const MaxSpecLen = 47

// maxKernelKey bounds a kernel-only spec's key: dm-crypt's own limit on a
// table's key is far above any cipher's, and lmk/tcw keys carry extra
// parts, so the kernel's setkey decides; this only refuses nonsense.
const maxKernelKey = 512

// ErrKernelOnly is returned by New for a spec only the kernel can run.
var ErrKernelOnly = errors.New("no userspace implementation")

// ParseKernelSpec parses a spec as ParseSpec does, and accepts any other
// well-formed dm-crypt cipher spec ("serpent-xts-plain64",
// "capi:xts(twofish)-plain64", "xchacha12,aes-adiantum-plain64", ...) as a
// kernel-only spec, which New refuses with ErrKernelOnly. Whether the
// kernel accepts it is only known by loading a table with it.
func ParseKernelSpec(s string) (Spec, error) {
	if sp, err := ParseSpec(s); err == nil {
		return sp, nil
	}
	if err := wellFormed(s); err != nil {
		return Spec{}, err
	}
	return Spec{mode: modeKernel, kernel: s}, nil
}

// wellFormed refuses what can never be a dm-crypt cipher field: the table
// line splits on white space, and the header records at most MaxSpecLen
// bytes.
func wellFormed(s string) error {
	if s == "" {
		return fmt.Errorf("sectorcipher: empty cipher spec")
	}
	if len(s) > MaxSpecLen {
		return fmt.Errorf("sectorcipher: cipher spec %q is longer than %d bytes", s, MaxSpecLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("sectorcipher: cipher spec %q has a character no dm-crypt spec has (%q)", s, c)
		}
	}
	return nil
}

// Userspace reports whether New can build s in userspace.
func (s Spec) Userspace() bool { return s.mode != modeKernel && s.valid() }

// KernelOnly reports whether s is a spec only the kernel can run.
func (s Spec) KernelOnly() bool { return s.mode == modeKernel }
