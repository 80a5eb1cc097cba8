// Package secret holds key material: memory for keys outside the Go heap,
// locked in RAM and wiped, and the process settings that keep keys out of
// core dumps and swap. It sits below every package that handles keys.
package secret

import (
	"golang.org/x/sys/unix"
)

// Wipe zeroes a buffer that carried key material.
func Wipe(b []byte) {
	// clear compiles to a memclr the compiler does not drop: b escapes.
	clear(b)
}

// Key is secret bytes (a key read from a file, a LUKS volume key, a
// keyslot's derived key and material while unlocking) held outside the Go
// heap, in an anonymous mapping locked in RAM so it is never written to
// swap, and zeroed by Wipe. Nothing in the runtime copies it: append and
// stack growth never touch it, as they may a heap or stack buffer.
type Key struct {
	b      []byte
	locked bool
}

// New allocates n zero bytes of secret memory. mlock can fail under a
// tight RLIMIT_MEMLOCK; the memory is then still outside the heap and
// wiped, only swappable, which Locked reports.
func New(n int) (*Key, error) {
	if n == 0 {
		return &Key{}, nil
	}
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, err
	}
	k := &Key{b: b}
	k.locked = unix.Mlock(b) == nil
	// Not in core dumps either, should the process become dumpable.
	_ = unix.Madvise(b, unix.MADV_DONTDUMP)
	return k, nil
}

// Bytes returns the key; valid until Wipe.
func (k *Key) Bytes() []byte { return k.b }

// Locked reports whether the key's memory is locked in RAM.
func (k *Key) Locked() bool { return k.locked }

// Wipe zeroes the key and releases its memory. Safe to call twice, and on
// nil.
func (k *Key) Wipe() {
	if k == nil || k.b == nil {
		return
	}
	Wipe(k.b)
	if k.locked {
		_ = unix.Munlock(k.b)
	}
	_ = unix.Munmap(k.b)
	k.b = nil
}
