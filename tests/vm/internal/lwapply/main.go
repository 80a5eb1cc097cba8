// Command lwapply runs inside test guests (tests/vm/logwrites_test.go): it
// builds a crash state the host chose from a dm-log-writes log by copying
// byte ranges of the log device onto a device, as a plan lists them (lines
// "SRC DST LEN" in bytes; SRC -1 writes zeros, for a discard), then flushes
// the device. The host does all the choosing (vm.WriteLog.StatePlan), so
// this stays a dumb copier.
//
//	lwapply -src /dev/vdb -dst /dev/mapper/snap -plan FILE
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
)

func main() {
	src := flag.String("src", "/dev/vdb", "the log device")
	dst := flag.String("dst", "", "the device the state is built on")
	plan := flag.String("plan", "", "the plan file")
	flag.Parse()
	n, err := run(*src, *dst, *plan)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lwapply:", err)
		os.Exit(1)
	}
	fmt.Printf("lwapply: %d ranges\n", n)
}

func run(srcPath, dstPath, planPath string) (int, error) {
	pf, err := os.Open(planPath)
	if err != nil {
		return 0, err
	}
	defer pf.Close()
	src, err := os.Open(srcPath)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	dst, err := os.OpenFile(dstPath, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer dst.Close()
	var buf []byte
	sc := bufio.NewScanner(pf)
	n := 0
	for sc.Scan() {
		var from, to, size int64
		if _, err := fmt.Sscan(sc.Text(), &from, &to, &size); err != nil {
			return n, fmt.Errorf("plan line %d %q: %w", n+1, sc.Text(), err)
		}
		if int64(cap(buf)) < size {
			buf = make([]byte, size)
		}
		b := buf[:size]
		if from < 0 {
			clear(b)
		} else if _, err := src.ReadAt(b, from); err != nil {
			return n, fmt.Errorf("read %d bytes at %d of %s: %w", size, from, srcPath, err)
		}
		if _, err := dst.WriteAt(b, to); err != nil {
			return n, fmt.Errorf("write %d bytes at %d of %s: %w", size, to, dstPath, err)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return n, err
	}
	// The state must be on the device itself, not in this page cache:
	// a snapshot taken of it next reads the device.
	return n, dst.Sync()
}
