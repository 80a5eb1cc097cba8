package engine

import (
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// engines is which crypto engines this run transforms windows with, for
// the header's informational engines field (header.Engines). A plaintext
// side has none. The kernel's ciphers are the ones that can fail
// (failingCipher); CryptoDevices are the kernel's too.
func (c *conv) engines() header.Engines {
	var e header.Engines
	for _, side := range []struct {
		m header.Mapping
		c sectorcipher.Cipher
	}{{c.h.Old, c.oldC}, {c.h.New, c.newC}} {
		if sp, err := sectorcipher.ParseKernelSpec(side.m.Cipher); err == nil && sp.IsNone() {
			continue
		}
		if _, kernel := side.c.(failingCipher); kernel || c.opts.Crypto != nil {
			e |= header.EngineKernel
		} else {
			e |= header.EngineUserspace
		}
	}
	return e
}
