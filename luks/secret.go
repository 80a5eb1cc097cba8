package luks

import (
	"golang.org/x/sys/unix"
)

// wipe zeroes a buffer that carried key material (as dm does with tables).
func wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// Key is secret bytes (a volume key, or a keyslot's derived key and
// material while unlocking) held outside the Go heap, in an anonymous
// mapping locked in RAM so it is never written to swap, and zeroed by
// Wipe. The garbage collector never copies it.
type Key struct {
	b      []byte
	locked bool
}

// newKey allocates n zero bytes of secret memory. mlock can fail under a
// tight RLIMIT_MEMLOCK; the memory is then still outside the heap and
// wiped, only swappable, which Locked reports (cryptshift's plain-mapping
// key files are held the same way today).
func newKey(n int) (*Key, error) {
	if n == 0 {
		return &Key{}, nil
	}
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, err
	}
	k := &Key{b: b}
	k.locked = unix.Mlock(b) == nil
	// Not in core dumps either.
	_ = unix.Madvise(b, unix.MADV_DONTDUMP)
	return k, nil
}

// Bytes returns the key; valid until Wipe.
func (k *Key) Bytes() []byte { return k.b }

// Locked reports whether the key's memory is locked in RAM.
func (k *Key) Locked() bool { return k.locked }

// Wipe zeroes the key and releases its memory. Safe to call twice.
func (k *Key) Wipe() {
	if k == nil || k.b == nil {
		return
	}
	wipe(k.b)
	if k.locked {
		_ = unix.Munlock(k.b)
	}
	_ = unix.Munmap(k.b)
	k.b = nil
}
