package blockdev

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"
)

// countingDevice counts flushes and closes reaching the parent.
type countingDevice struct {
	*Mem
	flushes, closes int
}

func (c *countingDevice) Flush() error { c.flushes++; return c.Mem.Flush() }
func (c *countingDevice) Close() error { c.closes++; return c.Mem.Close() }

func TestRegionConstructorBounds(t *testing.T) {
	m := NewMem(1000)
	for _, c := range []struct{ off, size int64 }{{-1, 10}, {0, -1}, {1001, 0}, {990, 11}, {1, 1 << 62}} {
		if _, err := Region(m, c.off, c.size); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("Region(%d, %d): %v", c.off, c.size, err)
		}
	}
	for _, c := range []struct{ off, size int64 }{{0, 1000}, {1000, 0}, {990, 10}} {
		if _, err := Region(m, c.off, c.size); err != nil {
			t.Errorf("Region(%d, %d): %v", c.off, c.size, err)
		}
	}
}

// Property test: through a region, every access either stays inside the
// window (and matches a model) or fails without touching the parent.
func TestRegionNeverEscapes(t *testing.T) {
	const psize, roff, rsize = 4096, 1000, 2000
	parent := NewMem(psize)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range parent.Bytes() {
		parent.Bytes()[i] = byte(r.Uint32())
	}
	model := bytes.Clone(parent.Bytes())
	reg, err := Region(parent, roff, rsize)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Size() != rsize {
		t.Fatalf("size %d", reg.Size())
	}
	for i := 0; i < 2000; i++ {
		off := int64(r.IntN(rsize+200)) - 100
		n := r.IntN(400)
		buf := make([]byte, n)
		if r.IntN(2) == 0 {
			for j := range buf {
				buf[j] = byte(r.Uint32())
			}
			w, err := reg.WriteAt(buf, off)
			inside := off >= 0 && off+int64(n) <= rsize
			if inside {
				if err != nil || w != n {
					t.Fatalf("write %d at %d: n=%d %v", n, off, w, err)
				}
				copy(model[roff+off:], buf)
			} else if w != 0 || !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("write %d at %d crossing the region: n=%d %v", n, off, w, err)
			}
		} else {
			got, err := reg.ReadAt(buf, off)
			switch {
			case off < 0:
				if got != 0 || !errors.Is(err, ErrOutOfRange) {
					t.Fatalf("read at %d: n=%d %v", off, got, err)
				}
			case off+int64(n) <= rsize:
				if err != nil || got != n || !bytes.Equal(buf, model[roff+off:roff+off+int64(n)]) {
					t.Fatalf("read %d at %d: n=%d %v", n, off, got, err)
				}
			default:
				want := max(0, rsize-off)
				if int64(got) != want || !errors.Is(err, io.EOF) || !bytes.Equal(buf[:got], model[roff+off:roff+off+want]) {
					t.Fatalf("read %d at %d crossing the end: n=%d %v", n, off, got, err)
				}
			}
		}
		if !bytes.Equal(parent.Bytes(), model) {
			t.Fatalf("op %d: parent differs from the model (escape or lost write)", i)
		}
	}
}

func TestRegionFlushAndClose(t *testing.T) {
	parent := &countingDevice{Mem: NewMem(100)}
	reg, err := Region(parent, 10, 50)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Flush(); err != nil || parent.flushes != 1 {
		t.Fatalf("flush: %v, parent flushes %d", err, parent.flushes)
	}
	if err := reg.Close(); err != nil || parent.closes != 0 {
		t.Fatalf("close: %v, parent closes %d", err, parent.closes)
	}
	if _, err := reg.WriteAt([]byte{1}, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if _, err := parent.WriteAt([]byte{1}, 0); err != nil {
		t.Fatalf("parent unusable after the region closed: %v", err)
	}
}

func TestNestedRegion(t *testing.T) {
	parent := NewMem(100)
	outer, _ := Region(parent, 10, 80)
	inner, err := Region(outer, 20, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inner.WriteAt([]byte("abc"), 27); err != nil {
		t.Fatal(err)
	}
	if got := string(parent.Bytes()[57:60]); got != "abc" {
		t.Fatalf("nested offset wrong: %q", got)
	}
	if _, err := inner.WriteAt([]byte("abcd"), 27); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("nested overrun: %v", err)
	}
	if _, err := Region(outer, 60, 30); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("inner region larger than outer: %v", err)
	}
}

func TestMem(t *testing.T) {
	b := []byte("0123456789")
	m := MemFrom(b)
	if m.Size() != 10 {
		t.Fatalf("size %d", m.Size())
	}
	if _, err := m.WriteAt([]byte("ab"), 3); err != nil {
		t.Fatal(err)
	}
	if string(b) != "012ab56789" || &m.Bytes()[0] != &b[0] {
		t.Fatalf("MemFrom must alias its slice: %q", b)
	}
	buf := make([]byte, 4)
	if n, err := m.ReadAt(buf, 8); n != 2 || !errors.Is(err, io.EOF) || string(buf[:2]) != "89" {
		t.Fatalf("read across end: n=%d %v", n, err)
	}
	if n, err := m.WriteAt([]byte("xyz"), 8); n != 0 || !errors.Is(err, ErrOutOfRange) || string(b) != "012ab56789" {
		t.Fatalf("write across end: n=%d %v %q", n, err, b)
	}
	if _, err := m.ReadAt(buf, -1); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("negative read: %v", err)
	}
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	if z := NewMem(7); z.Size() != 7 || !bytes.Equal(z.Bytes(), make([]byte, 7)) {
		t.Fatal("NewMem not zeroed")
	}
	m.Close()
	if _, err := m.ReadAt(buf, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if string(m.Bytes()) != "012ab56789" {
		t.Fatal("contents lost on close")
	}
}
