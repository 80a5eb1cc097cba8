package main

import (
	"fmt"
	"io"

	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/internal/kcipher"
)

// --crypto's engines.
const (
	cryptoAuto      = "auto"
	cryptoUserspace = "userspace"
	cryptoKernel    = "kernel"
)

// cipherMaker is the engine's cipher source for --crypto mode: nil (the
// userspace ciphers only) for userspace; the kernel's for every spec for
// kernel; for auto the userspace cipher where one exists and the kernel's
// otherwise. It says on w which engine runs each spec.
func cipherMaker(mode string, w io.Writer) *kcipher.Maker {
	if mode == cryptoUserspace {
		return nil
	}
	return &kcipher.Maker{All: mode == cryptoKernel, Logf: func(f string, a ...any) { fmt.Fprintf(w, f+"\n", a...) }}
}

// maker is k's engine.CipherMaker; nil for the userspace ciphers only.
func maker(k *kcipher.Maker) engine.CipherMaker {
	if k == nil {
		return nil
	}
	return k.Make
}

func closeCiphers(k *kcipher.Maker, w io.Writer) {
	if k == nil {
		return
	}
	if err := k.Close(); err != nil {
		fmt.Fprintf(w, "cryptshift: warning: removing the kernel cipher devices: %v\n", err)
	}
}
