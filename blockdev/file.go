package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Options select how Open treats the target.
type Options struct {
	// ReadOnly opens without write access; WriteAt then fails.
	ReadOnly bool
	// Exclusive refuses a target someone else is using: for block devices
	// the kernel's O_EXCL claim (EBUSY when mounted, held by device-mapper,
	// or claimed by another opener); for regular files a non-blocking flock
	// and a check that no loop device is backed by the file. Without it,
	// a conversion could race a mounted filesystem writing the same bytes.
	Exclusive bool
	// Direct bypasses the page cache (O_DIRECT). Misaligned requests are
	// served through aligned bounce buffers, so callers never see EINVAL.
	Direct bool
}

// File is a Device backed by a block device or a regular (image) file.
// Its size is fixed at Open: writes past it are refused rather than growing
// an image file, so an image behaves like the disk it stands for.
// It is safe for concurrent use.
type File struct {
	f     *os.File
	path  string
	size  int64
	block bool
	lbs   int
	// align is the offset/length/memory alignment O_DIRECT needs; 0 when
	// the file was not opened with Direct.
	align int
	// rmw serialises read-modify-write of partial blocks: two unaligned
	// writes to disjoint bytes of one block would otherwise lose one update.
	rmw sync.Mutex
}

var _ Device = (*File)(nil)

// sysBlockDir is where loop devices publish their backing files; tests
// point it at a fake tree.
var sysBlockDir = "/sys/block"

// maxBounce bounds the bounce buffer, so a large misaligned request does
// not double its memory footprint.
const maxBounce = 1 << 20

// Open opens an image file or a block device as a Device.
func Open(path string, o Options) (*File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, wrapPath("open", path, err)
	}
	// Decide from a stat before opening: opening a FIFO blocks and opening
	// some character devices has side effects.
	isBlock, err := checkType(st)
	if err != nil {
		return nil, &pathError{op: "open", path: path, class: ErrNotBlockOrFile, err: err}
	}

	flags := os.O_RDWR
	if o.ReadOnly {
		flags = os.O_RDONLY
	}
	if o.Exclusive && isBlock {
		// Without O_CREAT, O_EXCL on a block device asks the kernel for an
		// exclusive claim; it fails with EBUSY if the device is mounted or
		// otherwise held.
		flags |= os.O_EXCL
	}
	if o.Direct {
		flags |= syscall.O_DIRECT
	}
	osf, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, wrapPath("open", path, unwrapOS(err))
	}
	f := &File{f: osf, path: path, block: isBlock}
	if err := f.init(st, o); err != nil {
		osf.Close()
		return nil, err
	}
	return f, nil
}

func checkType(st os.FileInfo) (isBlock bool, err error) {
	m := st.Mode()
	switch {
	case m.IsRegular():
		return false, nil
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		return true, nil
	}
	return false, fmt.Errorf("file type %v", describeMode(m))
}

func describeMode(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&os.ModeCharDevice != 0:
		return "character device"
	case m&os.ModeNamedPipe != 0:
		return "named pipe"
	case m&os.ModeSocket != 0:
		return "socket"
	}
	return m.Type().String()
}

// unwrapOS strips *os.PathError: pathError already names the path.
func unwrapOS(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (f *File) init(pre os.FileInfo, o Options) error {
	st, err := f.f.Stat()
	if err != nil {
		return wrapPath("stat", f.path, unwrapOS(err))
	}
	// The path could have been replaced between the stat and the open.
	if !os.SameFile(pre, st) {
		return &pathError{op: "open", path: f.path, err: errors.New("path changed while opening")}
	}
	if isBlock, err := checkType(st); err != nil || isBlock != f.block {
		return &pathError{op: "open", path: f.path, class: ErrNotBlockOrFile, err: errors.New("file type changed while opening")}
	}

	if f.block {
		if err := f.control(func(fd int) error {
			size, err := unix.IoctlGetUint64(fd, unix.BLKGETSIZE64)
			if err != nil {
				return fmt.Errorf("BLKGETSIZE64: %w", err)
			}
			lbs, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
			if err != nil {
				return fmt.Errorf("BLKSSZGET: %w", err)
			}
			f.size, f.lbs = int64(size), lbs
			return nil
		}); err != nil {
			return wrapPath("open", f.path, err)
		}
		if f.lbs <= 0 {
			return &pathError{op: "open", path: f.path, err: fmt.Errorf("logical block size %d", f.lbs)}
		}
		f.align = f.lbs
	} else {
		f.size = st.Size()
		f.lbs = 512
		f.align = 4096 // when the file system does not report its needs
		var sx unix.Statx_t
		err := f.control(func(fd int) error {
			return unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &sx)
		})
		if err == nil && sx.Mask&unix.STATX_DIOALIGN != 0 && sx.Dio_offset_align > 0 {
			f.lbs = int(sx.Dio_offset_align)
			f.align = max(int(sx.Dio_offset_align), int(sx.Dio_mem_align))
		}
	}
	if !o.Direct {
		f.align = 0
	} else if f.size%int64(f.align) != 0 {
		// A bounce write of the tail block would extend the file past its
		// size; refusing here is simpler than a buffered tail path.
		return &pathError{op: "open", path: f.path,
			err: fmt.Errorf("size %d is not a multiple of the direct I/O alignment %d", f.size, f.align)}
	}

	if o.Exclusive && !f.block {
		if err := f.control(func(fd int) error {
			for {
				err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
				if err != unix.EINTR {
					return err
				}
			}
		}); err != nil {
			return wrapPath("lock", f.path, fmt.Errorf("flock: %w", err))
		}
		if loop := loopBacking(st); loop != "" {
			return &pathError{op: "open", path: f.path, class: ErrInUse,
				err: fmt.Errorf("backs loop device %s", loop)}
		}
	}
	return nil
}

// loopBacking returns the name of a loop device whose backing file is the
// same file as st, or "". A loop device writes its backing file behind any
// lock we hold, so such a file is as busy as a mounted device.
func loopBacking(st os.FileInfo) string {
	paths, _ := filepath.Glob(filepath.Join(sysBlockDir, "loop*", "loop", "backing_file"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		name := strings.TrimSuffix(strings.TrimRight(string(b), "\n"), " (deleted)")
		if bst, err := os.Stat(name); err == nil && os.SameFile(st, bst) {
			return filepath.Base(filepath.Dir(filepath.Dir(p)))
		}
	}
	return ""
}

func (f *File) control(fn func(fd int) error) error {
	rc, err := f.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// Path returns the path given to Open.
func (f *File) Path() string { return f.path }

// IsBlockDevice reports whether the File is a block device (not an image file).
func (f *File) IsBlockDevice() bool { return f.block }

// LogicalBlockSize is the smallest unit the device addresses: BLKSSZGET for
// block devices, the file system's direct I/O offset alignment for files
// (512 when it does not say).
func (f *File) LogicalBlockSize() int { return f.lbs }

// Size is the device size in bytes, fixed at Open.
func (f *File) Size() int64 { return f.size }

func (f *File) ioErr(op string, off int64, n int, err error) error {
	return fmt.Errorf("blockdev: %s %s at %d (+%d): %w", op, f.path, off, n, err)
}

// ReadAt reads len(p) bytes at off. A read crossing the end returns the
// bytes before it and an error matching io.EOF.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, f.ioErr("read", off, len(p), ErrOutOfRange)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= f.size {
		return 0, f.ioErr("read", off, len(p), io.EOF)
	}
	want := p
	if int64(len(p)) > f.size-off {
		want = p[:f.size-off]
	}
	var n int
	var err error
	if f.aligned(want, off) {
		n, err = f.f.ReadAt(want, off)
	} else {
		n, err = f.bounceRead(want, off)
	}
	if err == nil && len(want) < len(p) {
		err = io.EOF
	}
	if err != nil {
		return n, f.ioErr("read", off, len(p), unwrapOS(err))
	}
	return n, nil
}

// WriteAt writes len(p) bytes at off. A write that would cross the end is
// refused whole with ErrOutOfRange.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > f.size || int64(len(p)) > f.size-off {
		return 0, f.ioErr("write", off, len(p), ErrOutOfRange)
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if f.aligned(p, off) {
		n, err = f.f.WriteAt(p, off)
	} else {
		n, err = f.bounceWrite(p, off)
	}
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return n, f.ioErr("write", off, len(p), unwrapOS(err))
	}
	return n, nil
}

// aligned reports whether p at off can go to the kernel as is.
func (f *File) aligned(p []byte, off int64) bool {
	if f.align == 0 {
		return true
	}
	a := f.align
	return off%int64(a) == 0 && len(p)%a == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%uintptr(a) == 0
}

func (f *File) bounceSpan(off int64, n int) (start, end int64, buf []byte) {
	a := int64(f.align)
	start = off - off%a
	end = off + int64(n)
	if r := end % a; r != 0 {
		end += a - r
	}
	chunk := int64(maxBounce)
	if chunk < a {
		chunk = a
	}
	chunk -= chunk % a
	return start, end, alignedAlloc(int(min(chunk, end-start)), f.align)
}

func (f *File) bounceRead(p []byte, off int64) (int, error) {
	start, end, buf := f.bounceSpan(off, len(p))
	pend := off + int64(len(p))
	done := 0
	for pos := start; pos < end; {
		chunk := buf[:min(int64(len(buf)), end-pos)]
		if _, err := f.f.ReadAt(chunk, pos); err != nil {
			return done, err
		}
		lo, hi := max(pos, off), min(pos+int64(len(chunk)), pend)
		copy(p[lo-off:hi-off], chunk[lo-pos:hi-pos])
		done = int(hi - off)
		pos += int64(len(chunk))
	}
	return done, nil
}

func (f *File) bounceWrite(p []byte, off int64) (int, error) {
	f.rmw.Lock()
	defer f.rmw.Unlock()
	start, end, buf := f.bounceSpan(off, len(p))
	a := int64(f.align)
	pend := off + int64(len(p))
	done := 0
	for pos := start; pos < end; {
		chunk := buf[:min(int64(len(buf)), end-pos)]
		cend := pos + int64(len(chunk))
		lo, hi := max(pos, off), min(cend, pend)
		// Only the partial blocks at either end need their old contents.
		headRead := false
		if lo > pos {
			if _, err := f.f.ReadAt(chunk[:a], pos); err != nil {
				return done, fmt.Errorf("read-modify-write: %w", err)
			}
			headRead = true
		}
		if hi < cend && !(headRead && int64(len(chunk)) == a) {
			if _, err := f.f.ReadAt(chunk[int64(len(chunk))-a:], cend-a); err != nil {
				return done, fmt.Errorf("read-modify-write: %w", err)
			}
		}
		copy(chunk[lo-pos:hi-pos], p[lo-off:hi-off])
		if _, err := f.f.WriteAt(chunk, pos); err != nil {
			return done, err
		}
		done = int(hi - off)
		pos = cend
	}
	return done, nil
}

// Flush makes every completed write durable (fdatasync; on a block device
// this sends a cache flush to the disk).
func (f *File) Flush() error {
	err := f.control(func(fd int) error {
		for {
			err := unix.Fdatasync(fd)
			if err != unix.EINTR {
				return err
			}
		}
	})
	if err != nil {
		return fmt.Errorf("blockdev: flush %s: %w", f.path, err)
	}
	return nil
}

// Close releases the device and any lock Open took.
func (f *File) Close() error {
	if err := f.f.Close(); err != nil {
		return fmt.Errorf("blockdev: close %s: %w", f.path, unwrapOS(err))
	}
	return nil
}
