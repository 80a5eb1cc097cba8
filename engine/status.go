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
