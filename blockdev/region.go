package blockdev

import (
	"fmt"
	"io"
	"sync/atomic"
)

// region is a window [off, off+size) of a parent Device.
type region struct {
	d         Device
	off, size int64
	closed    atomic.Bool
}

// Region returns a view of the size bytes of d starting at off, addressed
// from 0. Accesses past the view's end fail instead of reaching the rest
// of d: the metadata area at the end of a data device must never be
// clobbered by a data write, nor the data by a metadata write. Flush
// flushes d; Close only retires the view and leaves d open.
func Region(d Device, off, size int64) (Device, error) {
	if off < 0 || size < 0 || off > d.Size() || size > d.Size()-off {
		return nil, fmt.Errorf("blockdev: region [%d, +%d) of a %d-byte device: %w", off, size, d.Size(), ErrOutOfRange)
	}
	return &region{d: d, off: off, size: size}, nil
}

func (r *region) errf(op string, off int64, n int, err error) error {
	return fmt.Errorf("blockdev: %s region [%d, +%d) at %d (+%d): %w", op, r.off, r.size, off, n, err)
}

func (r *region) ReadAt(p []byte, off int64) (int, error) {
	if r.closed.Load() {
		return 0, r.errf("read", off, len(p), errClosed)
	}
	if off < 0 {
		return 0, r.errf("read", off, len(p), ErrOutOfRange)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= r.size {
		return 0, r.errf("read", off, len(p), io.EOF)
	}
	want := p
	if int64(len(p)) > r.size-off {
		want = p[:r.size-off]
	}
	n, err := r.d.ReadAt(want, r.off+off)
	if err != nil {
		return n, r.errf("read", off, len(p), err)
	}
	if len(want) < len(p) {
		return n, r.errf("read", off, len(p), io.EOF)
	}
	return n, nil
}

func (r *region) WriteAt(p []byte, off int64) (int, error) {
	if r.closed.Load() {
		return 0, r.errf("write", off, len(p), errClosed)
	}
	if off < 0 || off > r.size || int64(len(p)) > r.size-off {
		return 0, r.errf("write", off, len(p), ErrOutOfRange)
	}
	n, err := r.d.WriteAt(p, r.off+off)
	if err != nil {
		return n, r.errf("write", off, len(p), err)
	}
	return n, nil
}

func (r *region) Flush() error {
	if r.closed.Load() {
		return fmt.Errorf("blockdev: flush region [%d, +%d): %w", r.off, r.size, errClosed)
	}
	if err := r.d.Flush(); err != nil {
		return fmt.Errorf("blockdev: flush region [%d, +%d): %w", r.off, r.size, err)
	}
	return nil
}

func (r *region) Size() int64 { return r.size }

func (r *region) Close() error {
	r.closed.Store(true)
	return nil
}
