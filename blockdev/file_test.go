package blockdev

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"
)

func tempImage(t *testing.T, size int, seed uint64) (string, []byte) {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestOpenRegularFileRoundTrip(t *testing.T) {
	p, want := tempImage(t, 8192, 1)
	f, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Path() != p || f.IsBlockDevice() || f.Size() != 8192 {
		t.Fatalf("path %q block %v size %d", f.Path(), f.IsBlockDevice(), f.Size())
	}
	if lbs := f.LogicalBlockSize(); lbs < 512 || lbs&(lbs-1) != 0 {
		t.Fatalf("logical block size %d", lbs)
	}
	got := make([]byte, 8192)
	if n, err := f.ReadAt(got, 0); err != nil || n != 8192 || !bytes.Equal(got, want) {
		t.Fatalf("read n=%d err=%v equal=%v", n, err, bytes.Equal(got, want))
	}
	if _, err := f.WriteAt([]byte("hello"), 100); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	onDisk, _ := os.ReadFile(p)
	copy(want[100:], "hello")
	if !bytes.Equal(onDisk, want) {
		t.Fatal("file contents differ after write")
	}
}

func TestFileBounds(t *testing.T) {
	p, want := tempImage(t, 4096, 2)
	f, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	buf := make([]byte, 100)
	n, err := f.ReadAt(buf, 4050)
	if n != 46 || !errors.Is(err, io.EOF) || !bytes.Equal(buf[:46], want[4050:]) {
		t.Fatalf("read across end: n=%d err=%v", n, err)
	}
	if !strings.Contains(err.Error(), p) {
		t.Fatalf("error lacks the path: %v", err)
	}
	if n, err := f.ReadAt(buf, 4096); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read at end: n=%d err=%v", n, err)
	}
	if _, err := f.ReadAt(buf, -1); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("negative offset read: %v", err)
	}
	if n, err := f.WriteAt(buf, 4000); n != 0 || !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write across end: n=%d err=%v", n, err)
	}
	if _, err := f.WriteAt(buf, -5); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("negative offset write: %v", err)
	}
	st, _ := os.Stat(p)
	onDisk, _ := os.ReadFile(p)
	if st.Size() != 4096 || !bytes.Equal(onDisk, want) {
		t.Fatal("refused write changed or grew the image")
	}
}

func TestOpenReadOnlyRefusesWrites(t *testing.T) {
	p, want := tempImage(t, 4096, 3)
	f, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{1}, 0); err == nil {
		t.Fatal("write on a read-only File succeeded")
	}
	onDisk, _ := os.ReadFile(p)
	if !bytes.Equal(onDisk, want) {
		t.Fatal("read-only File changed the image")
	}
}

func TestOpenClassifiesErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path string
		want error
	}{
		{filepath.Join(dir, "missing"), ErrNotFound},
		{filepath.Join(file, "child"), ErrNotFound}, // ENOTDIR
		{dir, ErrNotBlockOrFile},
		{"/dev/null", ErrNotBlockOrFile},
		{fifo, ErrNotBlockOrFile}, // must not block opening it
	}
	all := []error{ErrInUse, ErrNotFound, ErrPermission, ErrNotBlockOrFile}
	for _, c := range cases {
		_, err := Open(c.path, Options{})
		if err == nil {
			t.Fatalf("%s: opened", c.path)
		}
		for _, s := range all {
			if errors.Is(err, s) != (s == c.want) {
				t.Errorf("%s: %v: errors.Is(%v) = %v", c.path, err, s, !(s == c.want))
			}
		}
		if !strings.Contains(err.Error(), c.path) {
			t.Errorf("error lacks the path: %v", err)
		}
	}
}

// Running as root, EACCES cannot be provoked through the file system, so
// the errno table is checked directly; each class must keep its cause.
func TestClassifyErrno(t *testing.T) {
	cases := map[syscall.Errno]error{
		syscall.EBUSY:       ErrInUse,
		syscall.EWOULDBLOCK: ErrInUse,
		syscall.ENOENT:      ErrNotFound,
		syscall.ENXIO:       ErrNotFound,
		syscall.EACCES:      ErrPermission,
		syscall.EPERM:       ErrPermission,
		syscall.EROFS:       ErrPermission,
		syscall.EISDIR:      ErrNotBlockOrFile,
		syscall.EIO:         nil,
		syscall.EINVAL:      nil,
	}
	for errno, want := range cases {
		err := wrapPath("open", "/dev/x", errno)
		if !errors.Is(err, errno) {
			t.Errorf("%v: cause lost: %v", errno, err)
		}
		for _, s := range []error{ErrInUse, ErrNotFound, ErrPermission, ErrNotBlockOrFile} {
			if errors.Is(err, s) != (s == want) {
				t.Errorf("%v classified wrongly: %v", errno, err)
			}
		}
	}
}

func TestExclusiveRefusesSecondOpener(t *testing.T) {
	p, _ := tempImage(t, 4096, 4)
	f1, err := Open(p, Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(p, Options{Exclusive: true, ReadOnly: true})
	if !errors.Is(err, ErrInUse) || !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("second exclusive open: %v", err)
	}
	// A non-exclusive opener is not refused: Exclusive protects against
	// other exclusive users (and mounts, for block devices), not readers.
	f2, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	f2.Close()
	if err := f1.Close(); err != nil {
		t.Fatal(err)
	}
	f3, err := Open(p, Options{Exclusive: true})
	if err != nil {
		t.Fatalf("exclusive open after the holder closed: %v", err)
	}
	f3.Close()
}

func TestExclusiveRefusesLoopBackingFile(t *testing.T) {
	p, _ := tempImage(t, 4096, 5)
	other, _ := tempImage(t, 4096, 6)
	fake := t.TempDir()
	write := func(loop, content string) {
		d := filepath.Join(fake, loop, "loop")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "backing_file"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("loop0", other+"\n")
	write("loop1", "/nonexistent (deleted)\n")
	old := sysBlockDir
	sysBlockDir = fake
	defer func() { sysBlockDir = old }()

	f, err := Open(p, Options{Exclusive: true})
	if err != nil {
		t.Fatalf("file backing no loop device refused: %v", err)
	}
	f.Close()

	// Same file through a symlink: the check must compare files, not names.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	write("loop7", link+"\n")
	_, err = Open(p, Options{Exclusive: true})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "loop7") {
		t.Fatalf("loop-backed file: %v", err)
	}
	// The refused open must not keep the lock.
	if f, err := Open(p, Options{}); err != nil {
		t.Fatal(err)
	} else {
		f.Close()
	}
	sysBlockDir = old
	if f, err := Open(p, Options{Exclusive: true}); err != nil {
		t.Fatalf("lock leaked by the refused open: %v", err)
	} else {
		f.Close()
	}
}

func TestDirectRefusesUnalignedSize(t *testing.T) {
	p, _ := tempImage(t, 4096+100, 7)
	if _, err := Open(p, Options{Direct: true}); err == nil {
		t.Fatal("direct open of an image with a partial last block succeeded")
	}
}

// Property test: random misaligned reads and writes through O_DIRECT behave
// exactly like a byte slice.
func TestDirectUnalignedRoundTrip(t *testing.T) {
	const size = 64 << 10
	p, model := tempImage(t, size, 8)
	f, err := Open(p, Options{Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.align == 0 {
		t.Fatal("Direct did not enable the aligned path")
	}
	r := rand.New(rand.NewPCG(8, 8))
	backing := make([]byte, 3*size)
	for i := 0; i < 400; i++ {
		off := r.IntN(size)
		n := 1 + r.IntN(size-off)
		if r.IntN(4) == 0 { // exercise the aligned fast path too
			off &^= 4095
			n = min(4096*(1+r.IntN(4)), size-off)
		}
		shift := r.IntN(4096)
		if r.IntN(2) == 0 {
			buf := backing[shift : shift+n]
			for j := range buf {
				buf[j] = byte(r.Uint32())
			}
			if w, err := f.WriteAt(buf, int64(off)); err != nil || w != n {
				t.Fatalf("write %d at %d: n=%d %v", n, off, w, err)
			}
			copy(model[off:], buf)
		} else {
			buf := backing[shift : shift+n]
			if got, err := f.ReadAt(buf, int64(off)); err != nil || got != n {
				t.Fatalf("read %d at %d: n=%d %v", n, off, got, err)
			}
			if !bytes.Equal(buf, model[off:off+n]) {
				t.Fatalf("read %d at %d: contents differ", n, off)
			}
		}
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	onDisk, _ := os.ReadFile(p)
	if !bytes.Equal(onDisk, model) {
		t.Fatal("image differs from the model")
	}
	// Reads crossing the end still report EOF through the bounce path.
	buf := make([]byte, 10)
	if n, err := f.ReadAt(buf, size-3); n != 3 || !errors.Is(err, io.EOF) || !bytes.Equal(buf[:3], model[size-3:]) {
		t.Fatalf("direct read across end: n=%d err=%v", n, err)
	}
}

// Unaligned writes to disjoint bytes of one block are each a
// read-modify-write of the whole block; none may lose another's bytes.
func TestDirectConcurrentSubBlockWrites(t *testing.T) {
	p, _ := tempImage(t, 8192, 9)
	f, err := Open(p, Options{Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rep := 0; rep < 20; rep++ {
				b := bytes.Repeat([]byte{byte(g + 1)}, 100)
				if _, err := f.WriteAt(b, int64(1000+g*100)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := make([]byte, 1600)
	if _, err := f.ReadAt(got, 1000); err != nil {
		t.Fatal(err)
	}
	for g := 0; g < 16; g++ {
		if !bytes.Equal(got[g*100:g*100+100], bytes.Repeat([]byte{byte(g + 1)}, 100)) {
			t.Fatalf("writer %d's bytes were lost", g)
		}
	}
}

// The host has no usable loop or dm devices, but an unbound loop node is
// still a block device: enough to exercise the ioctls and O_EXCL.
func TestBlockDeviceNode(t *testing.T) {
	const dev = "/dev/loop0"
	st, err := os.Stat(dev)
	if err != nil || st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		t.Skip("no block device node to open")
	}
	f, err := Open(dev, Options{ReadOnly: true, Exclusive: true})
	if err != nil {
		t.Skipf("cannot open %s: %v", dev, err)
	}
	defer f.Close()
	if !f.IsBlockDevice() {
		t.Fatal("block device not recognised")
	}
	if lbs := f.LogicalBlockSize(); lbs < 512 || lbs&(lbs-1) != 0 {
		t.Fatalf("logical block size %d", lbs)
	}
	if f.Size() < 0 || f.Size()%512 != 0 {
		t.Fatalf("size %d", f.Size())
	}
	_, err = Open(dev, Options{ReadOnly: true, Exclusive: true})
	if !errors.Is(err, ErrInUse) || !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("second O_EXCL open: %v", err)
	}
}

func TestAlignedBuffer(t *testing.T) {
	for _, n := range []int{0, 1, 511, 4096, 12345} {
		b := AlignedBuffer(n)
		if len(b) != n || cap(b) != n {
			t.Fatalf("n=%d: len %d cap %d", n, len(b), cap(b))
		}
		if addr := uintptr(unsafe.Pointer(unsafe.SliceData(b))); n > 0 && addr%DirectAlign != 0 {
			t.Fatalf("n=%d: address %#x not aligned", n, addr)
		}
		for _, c := range b {
			if c != 0 {
				t.Fatal("not zeroed")
			}
		}
	}
}
