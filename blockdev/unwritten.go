package blockdev

import "golang.org/x/sys/unix"

// Unwritten reports whether [off, off+n) of an image file holds a hole:
// bytes no write ever reached. A write that failed for want of space
// (ENOSPC on a sparse metadata file) leaves exactly that, so a reader
// without the keys to check a log record's payload can still tell that
// the payload was never written. Block devices have no holes; a file
// system that cannot say (no SEEK_HOLE) reports none.
func (f *File) Unwritten(off, n int64) bool {
	if f.block || n <= 0 {
		return false
	}
	hole := int64(-1)
	err := f.control(func(fd int) error {
		h, err := unix.Seek(fd, off, unix.SEEK_HOLE)
		hole = h
		return err
	})
	// The end of the file counts as a hole for SEEK_HOLE: only one that
	// starts inside the range means unwritten bytes.
	return err == nil && hole >= off && hole < off+n
}
