package blockdev

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// errClosed is os.ErrClosed so callers can test for it the usual way.
var errClosed = os.ErrClosed

// Mem is an in-memory Device for unit tests. Writes are immediately
// "durable" and Flush does nothing: use tests/fault for crash behaviour.
// It is safe for concurrent use.
type Mem struct {
	mu     sync.RWMutex
	b      []byte
	closed bool
}

var _ Device = (*Mem)(nil)

// NewMem returns a zero-filled Mem of size bytes.
func NewMem(size int64) *Mem { return &Mem{b: make([]byte, size)} }

// MemFrom returns a Mem over b itself (not a copy): the test keeps b to
// inspect or corrupt the contents.
func MemFrom(b []byte) *Mem { return &Mem{b: b} }

// Bytes returns the live contents (not a copy).
func (m *Mem) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.b
}

func memErr(op string, off int64, n int, err error) error {
	return fmt.Errorf("blockdev: %s mem at %d (+%d): %w", op, off, n, err)
}

func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, memErr("read", off, len(p), errClosed)
	}
	if off < 0 {
		return 0, memErr("read", off, len(p), ErrOutOfRange)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= int64(len(m.b)) {
		return 0, memErr("read", off, len(p), io.EOF)
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, memErr("read", off, len(p), io.EOF)
	}
	return n, nil
}

func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, memErr("write", off, len(p), errClosed)
	}
	if off < 0 || off > int64(len(m.b)) || int64(len(p)) > int64(len(m.b))-off {
		return 0, memErr("write", off, len(p), ErrOutOfRange)
	}
	return copy(m.b[off:], p), nil
}

func (m *Mem) Flush() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return fmt.Errorf("blockdev: flush mem: %w", errClosed)
	}
	return nil
}

func (m *Mem) Size() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.b))
}

// Close makes later I/O fail, which catches use-after-close in tests; the
// contents stay readable through Bytes.
func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
