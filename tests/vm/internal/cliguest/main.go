// Command cliguest runs inside test guests for the scenarios that drive the
// cryptshift CLI online (tests/vm/online_cli_*_test.go, flakey_test.go):
//
//	cliguest reader -dev DEV            time O_DIRECT reads all over DEV until SIGTERM
//	cliguest chunks -dev DEV -ref FILE  compare DEV with FILE chunk by chunk, naming failed chunks
//
// The reader is the application's view of the online conversion's stalls:
// the CLI reports how long it held each window and swapped tables, the
// reader how long its own reads actually waited.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cliguest reader|chunks ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "reader":
		err = reader(os.Args[2:])
	case "chunks":
		err = chunks(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cliguest:", err)
		os.Exit(1)
	}
}

func alignedBuf(n int) []byte {
	b, err := unix.Mmap(-1, 0, (n+4095)&^4095, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	return b[:n]
}

func devSize(fd int) (int64, error) {
	n, err := unix.IoctlGetInt(fd, unix.BLKGETSIZE64)
	return int64(n), err
}

// reader reads 4 KiB at random offsets with O_DIRECT, so every read goes to
// the device (the page cache would hide stalls), and prints the latency
// distribution when told to stop. A read that fails is counted, not fatal:
// the scenarios decide what failures mean.
func reader(args []string) error {
	fs := flag.NewFlagSet("reader", flag.ExitOnError)
	dev := fs.String("dev", "", "device to read")
	pause := fs.Duration("pause", 2*time.Millisecond, "pause between reads")
	tag := fs.String("tag", "", "label for the summary line")
	fs.Parse(args)
	fd, err := unix.Open(*dev, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	size, err := devSize(fd)
	if err != nil {
		return err
	}
	var stop atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; stop.Store(true) }()
	buf := alignedBuf(4096)
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var lat []time.Duration
	fails := 0
	for !stop.Load() {
		off := r.Int64N(size/4096) * 4096
		t0 := time.Now()
		if _, err := unix.Pread(fd, buf, off); err != nil {
			fails++
		} else {
			lat = append(lat, time.Since(t0))
		}
		time.Sleep(*pause)
	}
	fmt.Printf("READER-STAT %s %s failed=%d\n", *tag, summary(lat), fails)
	return nil
}

func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n=0"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	over := 0
	for _, d := range s {
		if d >= 100*time.Millisecond {
			over++
		}
	}
	return fmt.Sprintf("n=%d median=%v p99=%v worst=%v over100ms=%d", len(s),
		s[len(s)/2].Round(time.Microsecond), s[len(s)*99/100].Round(time.Microsecond),
		s[len(s)-1].Round(time.Microsecond), over)
}

// chunks reads DEV in -chunk pieces with O_DIRECT and compares each with
// the same range of the reference file. It prints one line per chunk that
// failed to read or differed, and a summary; it exits non-zero only when a
// chunk READ SUCCESSFULLY but held other data, which is what must never
// happen (a window served with the wrong key).
func chunks(args []string) error {
	fs := flag.NewFlagSet("chunks", flag.ExitOnError)
	dev := fs.String("dev", "", "device to read")
	ref := fs.String("ref", "", "reference image of the device's content")
	chunk := fs.Int64("chunk", 1<<20, "chunk size")
	fs.Parse(args)
	want, err := os.ReadFile(*ref)
	if err != nil {
		return err
	}
	fd, err := unix.Open(*dev, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	size, err := devSize(fd)
	if err != nil {
		return err
	}
	if size != int64(len(want)) {
		return fmt.Errorf("%s has %d bytes, the reference %d", *dev, size, len(want))
	}
	buf := alignedBuf(int(*chunk))
	var failed, wrong []int64
	for off := int64(0); off < size; off += *chunk {
		n := min(*chunk, size-off)
		if _, err := unix.Pread(fd, buf[:n], off); err != nil {
			failed = append(failed, off / *chunk)
			fmt.Printf("CHUNK-FAILED %d %v\n", off / *chunk, err)
			continue
		}
		if !bytes.Equal(buf[:n], want[off:off+n]) {
			wrong = append(wrong, off / *chunk)
			fmt.Printf("CHUNK-WRONG %d\n", off / *chunk)
		}
	}
	fmt.Printf("CHUNKS total=%d failed=%v wrong=%v\n", (size+*chunk-1) / *chunk, failed, wrong)
	if len(wrong) > 0 {
		return fmt.Errorf("%d chunk(s) read back other data than the reference", len(wrong))
	}
	return nil
}
