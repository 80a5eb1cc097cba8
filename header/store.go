package header

import (
	"errors"
	"fmt"

	"github.com/cryptshift/cryptshift/blockdev"
)

// The two copies live in the last 8 KiB of the metadata device, so they can
// be found without knowing anything else about the layout: copy 0 in the
// last 4 KiB, copy 1 just below it.
func slotOffset(dev blockdev.Device, slot int) int64 {
	return dev.Size() - int64(slot+1)*Size
}

// Copy is what one slot held when it was read.
type Copy struct {
	Raw    []byte
	Header *Header // nil when Err is set
	Err    error
}

// Store reads and commits the pair of header copies on a metadata device.
type Store struct {
	dev blockdev.Device
	// Flush, when set, is called instead of the device's Flush after each
	// copy is written: the engine routes it through its named flush points
	// (engine.FlushHeaderCommit), where the mutation test can drop it.
	Flush  func() error
	Copies [2]Copy
	newest int // slot holding the copy Current returned, -1 if none
}

// ReadStore reads both copies. It fails only on I/O errors or a device too
// small to hold them; undecodable copies are reported through Copies.
func ReadStore(dev blockdev.Device) (*Store, error) {
	if dev.Size() < 2*Size {
		return nil, fmt.Errorf("metadata device of %d bytes cannot hold a header", dev.Size())
	}
	s := &Store{dev: dev, newest: -1}
	for i := range s.Copies {
		raw := make([]byte, Size)
		if _, err := dev.ReadAt(raw, slotOffset(dev, i)); err != nil {
			return nil, fmt.Errorf("read header copy %d: %w", i, err)
		}
		h, err := Unmarshal(raw)
		s.Copies[i] = Copy{Raw: raw, Header: h, Err: err}
	}
	return s, nil
}

// Current returns the newest copy whose crc is valid and, when macKey is
// not nil, whose MAC verifies. With macKey nil the result is unauthenticated
// and may only be displayed. It returns ErrNoHeader when neither slot holds a
// header, ErrAuth when the only decodable copies fail the MAC.
func (s *Store) Current(macKey []byte) (*Header, error) {
	best, bestSlot := (*Header)(nil), -1
	var firstErr error
	sawHeader := false
	for i, c := range s.Copies {
		if c.Err != nil {
			if !errors.Is(c.Err, ErrNoHeader) {
				sawHeader = true
				if firstErr == nil {
					firstErr = fmt.Errorf("copy %d: %w", i, c.Err)
				}
			}
			continue
		}
		sawHeader = true
		if macKey != nil {
			if err := VerifyMAC(c.Raw, macKey); err != nil {
				firstErr = fmt.Errorf("copy %d: %w", i, err)
				continue
			}
		}
		if best == nil || c.Header.Seq > best.Seq {
			best, bestSlot = c.Header, i
		}
	}
	if best == nil {
		if !sawHeader {
			return nil, ErrNoHeader
		}
		return nil, firstErr
	}
	s.newest = bestSlot
	cp := *best
	return &cp, nil
}

// Healthy reports whether both copies decode and hold the same header apart
// from the sequence number, i.e. no repair is due. (Commit gives every copy
// its own sequence number, so the copies CommitBoth writes never share one.)
func (s *Store) Healthy() bool {
	if s.Copies[0].Err != nil || s.Copies[1].Err != nil {
		return false
	}
	a, b := *s.Copies[0].Header, *s.Copies[1].Header
	a.Seq, b.Seq = 0, 0
	return a == b
}

// Commit makes h durable as the newest header. It writes h with the next
// sequence number into the slot that does not hold the newest valid copy,
// then flushes: a crash or torn write during Commit can only damage that
// slot, and the previous newest copy still wins on the next read. Committing
// twice in a row therefore also repairs a damaged or stale copy.
func (s *Store) Commit(h *Header, macKey []byte) error {
	// A copy that Unmarshal would reject is as good as a torn one: refuse
	// it before it replaces a valid copy.
	if err := h.Check(); err != nil {
		return fmt.Errorf("commit header: %w", err)
	}
	target := s.NextSlot()
	var maxSeq uint64
	for _, c := range s.Copies {
		if c.Err == nil && c.Header.Seq >= maxSeq {
			maxSeq = c.Header.Seq
		}
	}
	if h.Seq <= maxSeq {
		h.Seq = maxSeq + 1
	}
	raw, err := h.Marshal(macKey)
	if err != nil {
		return err
	}
	if _, err := s.dev.WriteAt(raw, slotOffset(s.dev, target)); err != nil {
		return fmt.Errorf("write header copy %d: %w", target, err)
	}
	if err := s.flush(); err != nil {
		return fmt.Errorf("flush header copy %d: %w", target, err)
	}
	cp := *h
	s.Copies[target] = Copy{Raw: raw, Header: &cp}
	s.newest = target
	return nil
}

func (s *Store) flush() error {
	if s.Flush != nil {
		return s.Flush()
	}
	return s.dev.Flush()
}

// NextSlot is the slot the next Commit writes: the one not holding the
// newest valid copy (as Current found it, or by sequence number alone when
// Current was not called).
func (s *Store) NextSlot() int {
	if s.newest >= 0 {
		return 1 - s.newest
	}
	if s.Copies[0].Err == nil && (s.Copies[1].Err != nil || s.Copies[0].Header.Seq >= s.Copies[1].Header.Seq) {
		return 1
	}
	return 0
}

// CommitBoth commits h and then a second time, so that both slots hold a
// valid copy: used when a conversion starts and at every checkpoint.
// Repairing one damaged copy needs a single Commit, which writes that copy
// only (engine.Opened.RepairHeader).
func (s *Store) CommitBoth(h *Header, macKey []byte) error {
	if err := s.Commit(h, macKey); err != nil {
		return err
	}
	h.Seq++
	return s.Commit(h, macKey)
}
