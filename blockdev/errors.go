package blockdev

import (
	"errors"
	"syscall"

	"github.com/cryptshift/cryptshift/errclass"
)

// Sentinel classes of failure. Each but ErrOutOfRange is a kind of
// errclass.Device, so the CLI exits with the "device unusable" code; an
// error is put in a class only when the cause is unambiguous, and anything
// else stays unclassified.
var (
	// ErrInUse: someone else holds the target (mounted, claimed with
	// O_EXCL, flock held, or the file backs a loop device).
	ErrInUse error = deviceClass("in use")
	// ErrNotFound: no such path, or a device node without a device behind it.
	ErrNotFound error = deviceClass("not found")
	// ErrPermission: the caller may not open the target in the asked mode
	// (including write access on a read-only file system or device).
	ErrPermission error = deviceClass("permission denied")
	// ErrNotBlockOrFile: the path is neither a regular file nor a block
	// device (a directory, a character device, a FIFO, a socket).
	ErrNotBlockOrFile error = deviceClass("not a block device or regular file")
	// ErrOutOfRange: an access that would touch bytes past the end of a
	// device or region. Nothing is written when a write is refused for this.
	ErrOutOfRange = errors.New("out of range")
)

// pathError carries both the class (one of the sentinels, or nil) and the
// underlying cause, so errors.Is works for either, e.g. ErrInUse and
// syscall.EBUSY.
type pathError struct {
	op    string
	path  string
	class error
	err   error
}

func (e *pathError) Error() string {
	s := "blockdev: " + e.op + " " + e.path
	if e.class != nil {
		s += ": " + e.class.Error()
	}
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *pathError) Unwrap() []error {
	var errs []error
	if e.class != nil {
		errs = append(errs, e.class)
	}
	if e.err != nil {
		errs = append(errs, e.err)
	}
	return errs
}

// classify puts an errno from open/flock into a sentinel class, or returns
// nil when the errno does not say clearly what went wrong.
func classify(err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return nil
	}
	switch errno {
	case syscall.EBUSY, syscall.EWOULDBLOCK, syscall.ETXTBSY:
		return ErrInUse
	case syscall.ENOENT, syscall.ENOTDIR, syscall.ENXIO, syscall.ENODEV:
		// ENXIO/ENODEV: the node exists but no device is behind it, which
		// for the user is the same as a missing device.
		return ErrNotFound
	case syscall.EACCES, syscall.EPERM, syscall.EROFS:
		return ErrPermission
	case syscall.EISDIR:
		return ErrNotBlockOrFile
	}
	return nil
}

func wrapPath(op, path string, err error) error {
	return &pathError{op: op, path: path, class: classify(err), err: err}
}

// deviceClass is a sentinel that is also an errclass.Device.
type deviceClass string

func (e deviceClass) Error() string { return string(e) }
func (e deviceClass) Unwrap() error { return errclass.Device }
