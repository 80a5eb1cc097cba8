package engine

import (
	"errors"
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
	"github.com/cryptshift/cryptshift/wal"
)

// Opened is an authenticated, read-only view of a recorded conversion, for
// audits (package fsck). It writes only in RepairHeader.
type Opened struct{ c *conv }

// OpenRecorded authenticates the conversion recorded on t with the keys.
func OpenRecorded(t Target, oldKey, newKey []byte) (*Opened, error) {
	return OpenRecordedWith(t, oldKey, newKey, nil)
}

// OpenRecordedWith is OpenRecorded with ciphers from ciphers (nil: the
// userspace ones). A kernel-only spec it cannot build a cipher for still
// opens: only CheckWindow needs a transform, and it fails with
// errclass.NoCrypto then, so the header, log and layout of such a
// conversion can be audited anywhere.
func OpenRecordedWith(t Target, oldKey, newKey []byte, ciphers CipherMaker) (*Opened, error) {
	base := Options{Ciphers: ciphers}
	mk := func(m sectorcipher.Mapping, sectors uint64) (sectorcipher.Cipher, error) {
		c, err := base.cipher(m, sectors)
		if err != nil && m.Spec.KernelOnly() {
			return noCipher{size: m.SectorSize, err: fmt.Errorf("%w: %w", errclass.NoCrypto, err)}, nil
		}
		return c, err
	}
	c, err := openExisting(t, oldKey, newKey, Options{Ciphers: mk})
	if err != nil {
		return nil, err
	}
	return &Opened{c: c}, nil
}

// noCipher stands for a transform no engine can run here. Its calls leave
// the buffer as it was and Err reports why; the engine checks Err before it
// trusts anything a cipher computed (failingCipher).
type noCipher struct {
	size int
	err  error
}

func (n noCipher) SectorSize() int              { return n.size }
func (n noCipher) Encrypt(buf []byte, _ uint64) {}
func (n noCipher) Decrypt(buf []byte, _ uint64) {}
func (n noCipher) Err() error                   { return n.err }

// Header returns the authenticated header.
func (o *Opened) Header() *header.Header { return o.c.h }

// Copies returns the state of the two header copies.
func (o *Opened) Copies() [2]header.Copy { return o.c.store.Copies }

// Records scans the log after the last checkpoint, authenticating each record.
func (o *Opened) Records() ([]wal.Record, error) {
	h := o.c.h
	log := wal.New(o.c.t.Meta, int64(h.LogOffset), int64(h.LogSize), h.UUID, o.c.macKey, int64(h.LogHeadOff), h.LogHeadSeq)
	recs, err := log.Scan()
	if err != nil {
		return nil, errclass.IOf("scan log", err)
	}
	return recs, nil
}

// DigestState is the outcome of comparing a window with its digest entry.
type DigestState int

const (
	DigestMatch      DigestState = iota // the window decrypts to what was converted
	DigestMismatch                      // it changed since, or is not what was written
	DigestUnrecorded                    // no entry (the table was lost or never written)
)

// CheckWindow decrypts a converted window with the new mapping and compares
// its plaintext digest with the recorded entry.
func (o *Opened) CheckWindow(w uint64) (DigestState, error) {
	c := o.c
	entry, err := c.readDigest(w)
	if err != nil {
		return 0, err
	}
	if entry == ([header.DigestEntrySize]byte{}) {
		return DigestUnrecorded, nil
	}
	start, n := c.h.WindowRange(w)
	buf := make([]byte, n)
	if _, err := c.t.Data.ReadAt(buf, int64(c.h.NewOffset)+start); err != nil {
		return 0, errclass.IOf(fmt.Sprintf("read window %d", w), err)
	}
	d := c.plainDigest(buf, w, start, c.newC)
	if f, ok := c.newC.(failingCipher); ok {
		if err := f.Err(); err != nil {
			if errors.Is(err, errclass.NoCrypto) {
				return 0, err
			}
			return 0, fmt.Errorf("%w: kernel cipher: %w", errclass.IO, err)
		}
	}
	if header.DigestEntry(c.macKey, w, d) != entry {
		return DigestMismatch, nil
	}
	return DigestMatch, nil
}

// RepairHeader rewrites the header copy that is damaged, altered or stale
// (older than the newest) from the authenticated newest copy, and returns
// the slot it rewrote, or -1 when both copies already hold the current
// header and nothing was written. It is one header.Store.Commit: it writes
// the other slot than the authenticated copy's, with the next sequence
// number, then flushes. The authenticated copy is never written, so a crash
// or a torn write during the repair leaves it readable as it was
// (docs/DESIGN.md, "Repairing a header copy").
func (o *Opened) RepairHeader() (int, error) { return o.c.repairHeader() }

// repairHeader is RepairHeader for the conversion c authenticated; recovery
// calls it too, so that a copy torn by a crash during the last checkpoint's
// second commit, after which no window is in flight and nothing else would
// write a header, is healed at the next boot rather than left for verify.
func (c *conv) repairHeader() (int, error) {
	s := c.store
	good := -1
	for i := range s.Copies {
		if c.copyAuthentic(i) && *s.Copies[i].Header == *c.h {
			good = i
		}
	}
	if good < 0 {
		return -1, fmt.Errorf("%w: repair header: no copy holds the authenticated header", errclass.Header)
	}
	bad := 1 - good
	if c.copyAuthentic(bad) && sameApartFromSeq(s.Copies[bad].Header, c.h) {
		return -1, nil
	}
	// Commit writes the slot not holding the newest authenticated copy
	// (Current found it when the conversion was opened): the damaged one.
	if next := s.NextSlot(); next != bad {
		return -1, fmt.Errorf("%w: repair header: the next commit would overwrite copy %d, the authenticated one", errclass.Header, next)
	}
	h := *c.h
	if err := s.Commit(&h, c.macKey); err != nil {
		return -1, errclass.IOf("repair header", err)
	}
	c.h = &h
	return bad, nil
}

func sameApartFromSeq(a, b *header.Header) bool {
	x, y := *a, *b
	x.Seq, y.Seq = 0, 0
	return x == y
}

// CopyAuthentic reports whether header copy i decodes and carries a valid
// MAC under this conversion's keys.
func (o *Opened) CopyAuthentic(i int) bool { return o.c.copyAuthentic(i) }

func (c *conv) copyAuthentic(i int) bool {
	cp := c.store.Copies[i]
	return cp.Err == nil && header.VerifyMAC(cp.Raw, c.macKey) == nil
}
