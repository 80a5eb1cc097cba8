package engine

import (
	"context"
	"errors"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// standIn runs a kernel-only spec as aes-xts-plain64 with the same key: a
// stand-in for the kernel's cipher, on a host without device-mapper.
func standIn(m sectorcipher.Mapping, _ uint64) (sectorcipher.Cipher, error) {
	if m.Spec.KernelOnly() {
		sp, err := sectorcipher.ParseSpec("aes-xts-plain64")
		if err != nil {
			return nil, err
		}
		m.Spec = sp
	}
	return sectorcipher.New(m)
}

// A conversion whose new spec has no userspace cipher opens for audit
// without any cipher for it; CheckWindow then fails with NoCrypto, and
// with a cipher (the kernel's, here its stand-in) compares as usual.
func TestOpenRecordedKernelOnlySpec(t *testing.T) {
	nw := side{cipher: "serpent-xts-plain64", key: key(64, 11), ss: 512}
	f := newFixture(t, sides[1], nw, 0, 4*testWindow, 4<<20)
	cfg := f.config("journal")
	if _, err := Convert(context.Background(), f.target(), cfg, Options{Ciphers: standIn}); err != nil {
		t.Fatal(err)
	}
	o, err := OpenRecordedWith(f.target(), sides[1].key, nw.key, nil)
	if err != nil {
		t.Fatalf("open for audit without a serpent cipher: %v", err)
	}
	if o.Header().New.Cipher != "serpent-xts-plain64" {
		t.Fatalf("recorded new cipher %q", o.Header().New.Cipher)
	}
	if _, err := o.CheckWindow(0); !errors.Is(err, errclass.NoCrypto) || errclass.Code(err) != errclass.ExitNoCrypto {
		t.Fatalf("CheckWindow without a serpent cipher: %v (exit %d), want NoCrypto", err, errclass.Code(err))
	}
	o, err = OpenRecordedWith(f.target(), sides[1].key, nw.key, standIn)
	if err != nil {
		t.Fatal(err)
	}
	for w := uint64(0); w < o.Header().Windows(); w++ {
		if st, err := o.CheckWindow(w); err != nil || st != DigestMatch {
			t.Fatalf("window %d with the stand-in: %v, %v", w, st, err)
		}
	}
	// A stand-in that is not the recorded transform reads as changed data,
	// so the comparison above could fail.
	wrong := func(m sectorcipher.Mapping, s uint64) (sectorcipher.Cipher, error) {
		if m.Spec.KernelOnly() {
			m.Key = key(64, 12)
		}
		return standIn(m, s)
	}
	o, err = OpenRecordedWith(f.target(), sides[1].key, nw.key, wrong)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := o.CheckWindow(0); err != nil || st != DigestMismatch {
		t.Fatalf("window 0 with a wrong stand-in: %v, %v; want a mismatch", st, err)
	}
}
