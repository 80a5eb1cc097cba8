package engine

import (
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
)

// Sealer is CryptoDevices that can also show what the new mapping stores
// for some plaintext without touching the data area. Checksum mode needs
// it: its record holds the digests of the new ciphertext of every unit,
// durable before the window is written (C1 in docs/DESIGN.md), and the
// new device only shows plaintext. Online, package online seals through a
// private dm-crypt device over a scratch loop device in memory.
type Sealer interface {
	CryptoDevices
	// Seal encrypts buf in place as the new mapping stores plaintext buf
	// at data-area byte start (a multiple of the window). It is called
	// after Open, one window at a time.
	Seal(buf []byte, start int64) error
}

// cryptoFits refuses CryptoDevices a mode cannot use, before anything is
// written: checksum needs a Sealer. Journal's record is the raw old
// ciphertext, which the engine reads from the data device itself.
func cryptoFits(m header.Mode, opts Options) error {
	if opts.Crypto == nil || m != header.ModeChecksum {
		return nil
	}
	if _, ok := opts.Crypto.(Sealer); !ok {
		return fmt.Errorf("%w: kernel crypto: --resilience checksum needs the new mapping's ciphertext before the window is written, which these crypto devices cannot show", errclass.Usage)
	}
	return nil
}

// prepareKernel is prepare for CryptoDevices: the plaintext comes through
// the old device, which decrypts as it reads; whatever a record needs of
// the ciphertext is read raw from the data device, with no crypto. Both
// devices, and the raw data device, are uncached (online they are opened
// O_DIRECT), so the two reads see the same bytes while the window is held.
func (c *conv) prepareKernel(p *prepared, w uint64, start int64, old []byte) {
	defer close(p.done)
	if _, err := c.plainOld.ReadAt(p.cur, start); err != nil {
		p.err = errclass.IOf(fmt.Sprintf("read window %d through the old mapping", w), err)
		return
	}
	p.digest = c.digestPlain(p.cur, w)
	switch c.h.Mode {
	case header.ModeJournal:
		// J1's payload: the window's old ciphertext exactly as stored.
		if _, err := c.t.Data.ReadAt(p.old, int64(c.h.OldOffset)+start); err != nil {
			p.err = errclass.IOf(fmt.Sprintf("read window %d", w), err)
		}
	case header.ModeChecksum:
		// C1's payload: digests of the old ciphertext as stored and of
		// the new ciphertext the new device will store. old is scratch.
		u := c.unit()
		j := p.step
		if _, err := c.t.Data.ReadAt(old, int64(c.h.OldOffset)+start); err != nil {
			p.err = errclass.IOf(fmt.Sprintf("read window %d", w), err)
			return
		}
		parallel(int64(len(old)), func(off, end int64) {
			c.unitHashes(old[off:end], p.hashes, u, off/u, header.SumUnitOld, j)
		})
		copy(old, p.cur)
		if err := c.opts.Crypto.(Sealer).Seal(old, start); err != nil {
			p.err = errclass.IOf(fmt.Sprintf("encrypt window %d through the new mapping", w), err)
			return
		}
		parallel(int64(len(old)), func(off, end int64) {
			c.unitHashes(old[off:end], p.hashes, u, off/u, header.SumUnitNew, j)
		})
	}
}
