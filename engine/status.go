package engine

import (
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/wal"
)

// Status is what can be learnt about a conversion without its keys. None of
// it is authenticated: it is for display, never for deciding a write.
type Status struct {
	Header *header.Header
	// Done counts converted windows: the header's checkpoint, advanced by
	// the log records after it.
	Done, Total uint64
	State       header.State
	// Open is the window a crash left in flight, if the log shows one.
	Open    *uint64
	Records int
	// Copies describes each header copy ("ok seq N" or the decoding error).
	Copies [2]string
}

// ReadStatus reads the header and scans the log without keys.
func ReadStatus(t Target) (*Status, error) {
	store, err := readHeader(t)
	if err != nil {
		return nil, err
	}
	h, err := store.Current(nil)
	if err != nil {
		return nil, headerErr(err)
	}
	st := &Status{Header: h, Done: h.Done, Total: h.Windows(), State: h.State}
	for i, c := range store.Copies {
		if c.Err != nil {
			st.Copies[i] = c.Err.Error()
		} else {
			st.Copies[i] = "ok"
		}
	}
	log := wal.New(t.Meta, int64(h.LogOffset), int64(h.LogSize), h.UUID, nil, int64(h.LogHeadOff), h.LogHeadSeq)
	recs, err := log.Scan()
	if err != nil {
		return nil, errclass.IOf("scan log", err)
	}
	recs = writtenRecords(t.Meta, int64(h.LogOffset), recs)
	st.Records = len(recs)
	if n := len(recs); n > 0 && recs[n-1].Done <= st.Total {
		st.Done = recs[n-1].Done
	}
	if h.WindowOpen(st.Done, wal.EndsWithWindowCopy(recs)) {
		w := h.WindowAt(st.Done)
		st.Open = &w
	}
	return st, nil
}

// unwrittenReporter is a metadata device that can tell never-written
// bytes (blockdev.File on an image file).
type unwrittenReporter interface {
	Unwritten(off, n int64) bool
}

// writtenRecords cuts the scanned log at the first record whose payload
// was never written. Without keys the payload's digest cannot be checked,
// so a record whose header block reached the disk and whose payload did
// not (ENOSPC on a sparse metadata file) would otherwise count, and
// status would show a window in flight that recovery, with the keys,
// rightly ignores.
func writtenRecords(meta any, logOff int64, recs []wal.Record) []wal.Record {
	u, ok := meta.(unwrittenReporter)
	if !ok {
		return recs
	}
	for i, r := range recs {
		if r.PayloadLen > 0 && u.Unwritten(logOff+int64(r.Offset)+wal.BlockSize, int64(r.PayloadLen)) {
			return recs[:i]
		}
	}
	return recs
}
