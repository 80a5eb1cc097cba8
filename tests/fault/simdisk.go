// Package fault is a simulated disk for crash testing. Disks in one Domain
// share a power supply: the Domain records every write and flush on any of
// them in one trace, and can later build the disk images a power cut at any
// point of that trace could leave, under the blockdev.Device contract (a
// write is durable only after a later flush of the same disk completes; until
// then it may be lost, reordered with other pending writes, or torn at
// 512-byte sector granularity).
//
// Disks also inject I/O errors on demand, so the error paths of the code
// under test run too.
package fault

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/cryptshift/cryptshift/blockdev"
)

// SectorSize is the granularity at which a pending write may tear.
const SectorSize = 512

// OpKind tells a write from a flush in the trace.
type OpKind uint8

const (
	OpWrite OpKind = iota + 1
	OpFlush
)

// Op is one recorded operation. Data is shared with the trace: read it, do
// not modify it.
type Op struct {
	Kind OpKind
	Disk int   // index of the disk in creation order
	Off  int64 // writes only
	Data []byte
}

func (o Op) String() string {
	if o.Kind == OpFlush {
		return fmt.Sprintf("flush disk%d", o.Disk)
	}
	return fmt.Sprintf("write disk%d [%d,+%d)", o.Disk, o.Off, len(o.Data))
}

// Domain is one crash domain: a power cut hits all its disks at once.
// It is safe for concurrent use; concurrent operations are recorded in the
// order they took the domain's lock.
type Domain struct {
	mu    sync.Mutex
	disks []*Disk
	ops   []Op
	cur   cursor
}

// NewDomain returns an empty crash domain.
func NewDomain() *Domain { return &Domain{} }

// NewDisk adds a disk whose medium initially holds a copy of initial; its
// size is len(initial) and never changes.
func (d *Domain) NewDisk(initial []byte) *Disk {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := &Disk{
		dom:     d,
		id:      len(d.disks),
		initial: append([]byte(nil), initial...),
		cache:   append([]byte(nil), initial...),
	}
	d.disks = append(d.disks, k)
	return k
}

// Ops is the number of operations recorded so far; crash points run from 0
// (before any) to Ops() (after all).
func (d *Domain) Ops() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.ops)
}

// Op returns the i-th recorded operation.
func (d *Domain) Op(i int) Op {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ops[i]
}

// Disks returns the domain's disks in creation order (the index is the
// disk number used in Op and in images).
func (d *Domain) Disks() []*Disk {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*Disk(nil), d.disks...)
}

// injector fails the Nth call counted from when it was armed.
type injector struct {
	calls      int64
	at         int64 // 0: disarmed
	persistent bool
}

func (in *injector) arm(n int, persistent bool) {
	if n < 1 {
		panic(fmt.Sprintf("fault: injection at call %d; the next call is 1", n))
	}
	in.at = in.calls + int64(n)
	in.persistent = persistent
}

// hit counts one call and reports whether it must fail.
func (in *injector) hit() bool {
	in.calls++
	if in.at == 0 || in.calls < in.at {
		return false
	}
	if !in.persistent {
		in.at = 0
	}
	return true
}

// Disk is a simulated disk with a volatile write cache. Reads see the
// latest writes; what survives a crash is decided by the Domain.
// It implements blockdev.Device.
type Disk struct {
	dom     *Domain
	id      int
	initial []byte
	cache   []byte // what reads see: the medium plus every write so far
	closed  bool

	failRead, failWrite, failFlush injector
	short                          injector
	shortBytes                     int
}

var _ blockdev.Device = (*Disk)(nil)

// ID is the disk's index in its domain.
func (k *Disk) ID() int { return k.id }

// Size is the disk size in bytes.
func (k *Disk) Size() int64 { return int64(len(k.initial)) }

// Contents returns a copy of what a read of the whole disk would return now.
func (k *Disk) Contents() []byte {
	k.dom.mu.Lock()
	defer k.dom.mu.Unlock()
	return append([]byte(nil), k.cache...)
}

func (k *Disk) errf(op string, off int64, n int, err error) error {
	return fmt.Errorf("fault: %s disk%d at %d (+%d): %w", op, k.id, off, n, err)
}

// ReadAt reads from the cache. A read crossing the end returns the bytes
// before it and an error matching io.EOF.
func (k *Disk) ReadAt(p []byte, off int64) (int, error) {
	k.dom.mu.Lock()
	defer k.dom.mu.Unlock()
	if k.closed {
		return 0, k.errf("read", off, len(p), os.ErrClosed)
	}
	if off < 0 {
		return 0, k.errf("read", off, len(p), blockdev.ErrOutOfRange)
	}
	if k.failRead.hit() {
		return 0, k.errf("read", off, len(p), injected(syscall.EIO))
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= int64(len(k.cache)) {
		return 0, k.errf("read", off, len(p), io.EOF)
	}
	n := copy(p, k.cache[off:])
	if n < len(p) {
		return n, k.errf("read", off, len(p), io.EOF)
	}
	return n, nil
}

// WriteAt updates the cache and records the write as pending. A write
// crossing the end is refused whole.
func (k *Disk) WriteAt(p []byte, off int64) (int, error) {
	k.dom.mu.Lock()
	defer k.dom.mu.Unlock()
	if k.closed {
		return 0, k.errf("write", off, len(p), os.ErrClosed)
	}
	if off < 0 || off > int64(len(k.cache)) || int64(len(p)) > int64(len(k.cache))-off {
		return 0, k.errf("write", off, len(p), blockdev.ErrOutOfRange)
	}
	failed := k.failWrite.hit()
	short := k.short.hit()
	if failed {
		// A failed write is modelled as reaching neither cache nor medium;
		// torn outcomes are the crash enumerator's business.
		return 0, k.errf("write", off, len(p), injected(syscall.EIO))
	}
	n := len(p)
	if short {
		n = min(k.shortBytes, len(p))
	}
	if n > 0 {
		k.record(p[:n], off)
	}
	if short {
		return n, k.errf("write", off, len(p), errors.Join(injected(syscall.EIO), io.ErrShortWrite))
	}
	return n, nil
}

func (k *Disk) record(p []byte, off int64) {
	copy(k.cache[off:], p)
	k.dom.ops = append(k.dom.ops, Op{Kind: OpWrite, Disk: k.id, Off: off, Data: append([]byte(nil), p...)})
}

// Flush records a flush of this disk only: separate devices flush
// separately. A failed flush is not recorded and makes nothing durable.
func (k *Disk) Flush() error {
	k.dom.mu.Lock()
	defer k.dom.mu.Unlock()
	if k.closed {
		return fmt.Errorf("fault: flush disk%d: %w", k.id, os.ErrClosed)
	}
	if k.failFlush.hit() {
		return fmt.Errorf("fault: flush disk%d: %w", k.id, injected(syscall.EIO))
	}
	k.dom.ops = append(k.dom.ops, Op{Kind: OpFlush, Disk: k.id})
	return nil
}

// Close makes later I/O on the disk fail; the trace and the domain's crash
// states are unaffected.
func (k *Disk) Close() error {
	k.dom.mu.Lock()
	defer k.dom.mu.Unlock()
	k.closed = true
	return nil
}

// ErrInjected marks errors the Disk made up, so a test can tell them from
// real bugs; they also match syscall.EIO.
var ErrInjected = errors.New("injected fault")

func injected(errno syscall.Errno) error { return errors.Join(ErrInjected, errno) }

// FailRead makes the nth ReadAt from now (n=1: the next one) fail with EIO;
// with persistent, that one and every later read fail.
func (k *Disk) FailRead(n int, persistent bool) {
	k.dom.mu.Lock()
	defer k.dom.mu.Unlock()
	k.failRead.arm(n, persistent)
}

// FailWrite makes the nth WriteAt from now fail with EIO, writing nothing;
// with persistent, every later write fails too.
func (k *Disk) FailWrite(n int, persistent bool) {
	k.dom.mu.Lock()
	defer k.dom.mu.Unlock()
	k.failWrite.arm(n, persistent)
}

// FailFlush makes the nth Flush from now fail with EIO; with persistent,
// every later flush fails too.
func (k *Disk) FailFlush(n int, persistent bool) {
	k.dom.mu.Lock()
	defer k.dom.mu.Unlock()
	k.failFlush.arm(n, persistent)
}

// ShortWrite makes the nth WriteAt from now write only its first bytes
// bytes (recorded like any write) and return that count with an error
// matching both syscall.EIO and io.ErrShortWrite. It fires once.
func (k *Disk) ShortWrite(n int, bytes int) {
	k.dom.mu.Lock()
	defer k.dom.mu.Unlock()
	k.short.arm(n, false)
	k.shortBytes = max(bytes, 0)
}

// ClearFaults disarms every pending injection on the disk.
func (k *Disk) ClearFaults() {
	k.dom.mu.Lock()
	defer k.dom.mu.Unlock()
	k.failRead.at, k.failWrite.at, k.failFlush.at, k.short.at = 0, 0, 0, 0
}
