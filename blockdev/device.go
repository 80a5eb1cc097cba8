// Package blockdev is the only way cryptshift touches storage: real block
// devices and image files, byte ranges of them, and in-memory disks for tests.
// Everything above it (header, wal, engine) sees only the Device interface, so
// the crash harness in tests/fault can stand in for a real disk.
package blockdev

// Device is a random-access store with a volatile write cache.
//
// A WriteAt that returned is not durable: it becomes durable only when a
// Flush issued after it has returned nil. After a power cut, any subset of
// the writes since the last completed Flush may have reached the medium, and
// each of their 512-byte sectors independently old or new. The engine's crash
// argument (docs/DESIGN.md) relies on exactly this contract and nothing more.
type Device interface {
	// ReadAt and WriteAt follow io.ReaderAt/io.WriterAt: a short count
	// always comes with a non-nil error.
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Flush makes every write that returned before it durable.
	Flush() error
	// Size is the device size in bytes.
	Size() int64
	Close() error
}
