package blockdev

import "unsafe"

// DirectAlign is the alignment AlignedBuffer guarantees. It covers the
// logical block size of every common device (512 and 4096).
const DirectAlign = 4096

// AlignedBuffer returns a zeroed n-byte slice whose first byte is
// DirectAlign-aligned, so it can be passed to an O_DIRECT File without a
// bounce copy. Its capacity is n, so appending reallocates rather than
// silently handing out unaligned memory.
func AlignedBuffer(n int) []byte {
	return alignedAlloc(n, DirectAlign)
}

// alignedAlloc over-allocates by a and slices at the first aligned address;
// the Go allocator never moves heap objects, so the alignment holds for the
// slice's lifetime.
func alignedAlloc(n, a int) []byte {
	if n < 0 {
		panic("blockdev: negative buffer size")
	}
	b := make([]byte, n+a)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % uintptr(a)); r != 0 {
		skip = a - r
	}
	return b[skip : skip+n : skip+n]
}
