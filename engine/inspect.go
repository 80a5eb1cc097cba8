package engine

import (
	"fmt"

	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/wal"
)

// Opened is an authenticated, read-only view of a recorded conversion, for
// audits (package fsck). It never writes.
type Opened struct{ c *conv }

// OpenRecorded authenticates the conversion recorded on t with the keys.
func OpenRecorded(t Target, oldKey, newKey []byte) (*Opened, error) {
	c, err := openExisting(t, oldKey, newKey, Options{})
	if err != nil {
		return nil, err
	}
	return &Opened{c: c}, nil
}

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
		return nil, ioErr("scan log", err)
	}
	return recs, nil
}

// WindowAt maps a processing step to a window index.
func (o *Opened) WindowAt(step uint64) uint64 { return o.c.windowAt(step) }

// WindowRange is a window's byte range in the logical data area.
func (o *Opened) WindowRange(w uint64) (start, n int64) { return o.c.windowRange(w) }

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
	start, n := c.windowRange(w)
	buf := make([]byte, n)
	if _, err := c.t.Data.ReadAt(buf, int64(c.h.NewOffset)+start); err != nil {
		return 0, ioErr(fmt.Sprintf("read window %d", w), err)
	}
	if header.DigestEntry(c.macKey, w, c.plainDigest(buf, w, start, c.newC)) != entry {
		return DigestMismatch, nil
	}
	return DigestMatch, nil
}

// RepairHeader rewrites both header copies from the authenticated one.
func (o *Opened) RepairHeader() error {
	h := *o.c.h
	if err := o.c.store.CommitBoth(&h, o.c.macKey); err != nil {
		return ioErr("repair header", err)
	}
	o.c.h = &h
	return nil
}

// CopyAuthentic reports whether header copy i decodes and carries a valid
// MAC under this conversion's keys.
func (o *Opened) CopyAuthentic(i int) bool {
	c := o.c.store.Copies[i]
	return c.Err == nil && header.VerifyMAC(c.Raw, o.c.macKey) == nil
}
