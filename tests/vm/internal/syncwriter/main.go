// Command syncwriter runs inside test guests. It writes numbered records to a
// block device with O_DIRECT, makes each durable with fdatasync and then prints
// "SYNCED <i>", so a test that kills the guest knows which records the disk
// acknowledged. With -verify it prints "VERIFIED <n>", the count of intact
// records from the start of the device.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/tests/vm/internal/record"
)

func main() {
	dev := flag.String("dev", "/dev/vdb", "block device")
	seed := flag.Uint64("seed", 1, "record stream seed")
	count := flag.Uint64("count", 1<<20, "records to write (stops early at the end of the device)")
	verify := flag.Bool("verify", false, "count intact records instead of writing")
	hold := flag.Bool("hold", false, "after writing, wait forever instead of exiting")
	flag.Parse()
	if err := run(*dev, *seed, *count, *verify); err != nil {
		fmt.Fprintln(os.Stderr, "syncwriter:", err)
		os.Exit(1)
	}
	if *hold {
		// A test that kills the guest at a random moment must find it still
		// running however fast the writes went.
		fmt.Println("HOLDING")
		for {
			time.Sleep(time.Hour)
		}
	}
}

func run(dev string, seed, count uint64, verify bool) error {
	flags := unix.O_RDWR | unix.O_DIRECT
	if verify {
		flags = unix.O_RDONLY | unix.O_DIRECT
	}
	fd, err := unix.Open(dev, flags, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer unix.Close(fd)
	size, err := unix.IoctlGetInt(fd, unix.BLKGETSIZE64)
	if err != nil {
		return fmt.Errorf("size of %s: %w", dev, err)
	}
	// O_DIRECT needs a buffer aligned to the logical block size; an anonymous
	// mapping is page aligned.
	buf, err := unix.Mmap(-1, 0, record.Size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	max := uint64(size) / record.Size
	if verify {
		var n uint64
		for ; n < max; n++ {
			if _, err := unix.Pread(fd, buf, int64(n*record.Size)); err != nil {
				return fmt.Errorf("read record %d: %w", n, err)
			}
			if !record.Valid(buf, seed, n) {
				break
			}
		}
		fmt.Printf("VERIFIED %d\n", n)
		return nil
	}
	for i := uint64(0); i < count && i < max; i++ {
		record.Fill(buf, seed, i)
		if _, err := unix.Pwrite(fd, buf, int64(i*record.Size)); err != nil {
			return fmt.Errorf("write record %d: %w", i, err)
		}
		if err := unix.Fdatasync(fd); err != nil {
			return fmt.Errorf("fdatasync after record %d: %w", i, err)
		}
		fmt.Printf("SYNCED %d\n", i)
	}
	return nil
}
