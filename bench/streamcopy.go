package bench

import (
	"fmt"
	"time"

	"github.com/cryptshift/cryptshift/blockdev"
)

// streamBlock is the streaming copy's block: dd's bs=4M.
const streamBlock = 4 << 20

// streamDepth is how many blocks the streaming copy has in flight: one
// being read, one being written, one ready between them.
const streamDepth = 3

// streamCopy is the baseline of the conversion benchmark: the same range
// read and rewritten in place with O_DIRECT in 4 MiB blocks, the next
// block read while the previous one is written, and one flush at the end.
// It is what `dd bs=4M iflag=direct oflag=direct conv=notrunc,fsync` does,
// except that dd alternates reads and writes; a copy tool that overlaps
// them, as a conversion that reads ahead and writes behind does, is the
// fastest in-place rewrite of the range, so it is the ceiling a conversion
// is reported against. Reading ahead is safe in place: block k+1 is read
// before it is written and never after.
func streamCopy(path string, off, size, blockSize int64) (time.Duration, error) {
	d, err := blockdev.Open(path, blockdev.Options{Exclusive: true, Direct: true})
	if err != nil {
		return 0, fmt.Errorf("streaming copy: %w", err)
	}
	defer d.Close()
	type block struct {
		buf []byte
		pos int64
	}
	free := make(chan []byte, streamDepth)
	for range streamDepth {
		free <- blockdev.AlignedBuffer(int(blockSize))
	}
	full := make(chan block, streamDepth)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(full)
		for pos := int64(0); pos < size; pos += blockSize {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				readErr <- nil
				return
			}
			b = b[:min(blockSize, size-pos)]
			if _, err := d.ReadAt(b, off+pos); err != nil {
				readErr <- err
				return
			}
			full <- block{b, pos}
		}
		readErr <- nil
	}()
	var werr error
	for b := range full {
		if werr == nil {
			if _, werr = d.WriteAt(b.buf, off+b.pos); werr != nil {
				close(stop)
			}
		}
		free <- b.buf[:cap(b.buf)]
	}
	if err := <-readErr; err != nil {
		return 0, fmt.Errorf("streaming copy: %w", err)
	}
	if werr != nil {
		return 0, fmt.Errorf("streaming copy: %w", werr)
	}
	if err := d.Flush(); err != nil {
		return 0, fmt.Errorf("streaming copy: %w", err)
	}
	return time.Since(start), nil
}
