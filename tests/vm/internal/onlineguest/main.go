// Command onlineguest runs inside test guests for the online conversion
// scenarios (tests/vm/online_*_test.go):
//
//	onlineguest writer -dir D -log DEV -seed S   keep rewriting files, log each fsync
//	onlineguest check  -dir D -log DEV -seed S   every logged file has its logged content
//	onlineguest convert -name NAME -dev DEV ...  online.Convert, measuring what I/O waits
//	onlineguest activate -name NAME -dev DEV ... online.Activate (recover, then set NAME up)
//
// convert and activate run package online, the code `cryptshift convert
// --online` and `recover --activate` run, so these scenarios test what
// ships; the guest adds only measurements and checks of the outcome.
//
// The writer logs an fsync only after it returned, to a raw device with
// O_DIRECT|O_DSYNC, so the log is a lower bound of what must be on disk.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/online"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: onlineguest writer|check|convert|activate ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "writer":
		err = writer(os.Args[2:])
	case "check":
		err = check(os.Args[2:])
	case "convert":
		err = convert(os.Args[2:])
	case "activate":
		err = activate(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "onlineguest:", err)
		os.Exit(1)
	}
}

const (
	nFiles  = 24
	recSize = 512
)

var logMagic = [8]byte{'C', 'S', 'W', 'L', 'O', 'G', '0', '1'}

func content(seed uint64, file, ver uint32) []byte {
	n := 4096 + int(ver*7919+file*104729)%61440
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed^uint64(file)<<32, uint64(ver)))
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

func encodeRec(b []byte, seed, seq uint64, file, ver uint32) {
	clear(b)
	copy(b, logMagic[:])
	binary.LittleEndian.PutUint64(b[8:], seed)
	binary.LittleEndian.PutUint64(b[16:], seq)
	binary.LittleEndian.PutUint32(b[24:], file)
	binary.LittleEndian.PutUint32(b[28:], ver)
	s := sha256.Sum256(b[:32])
	copy(b[32:48], s[:16])
}

func decodeRec(b []byte, seed, seq uint64) (file, ver uint32, ok bool) {
	if string(b[:8]) != string(logMagic[:]) || binary.LittleEndian.Uint64(b[8:]) != seed || binary.LittleEndian.Uint64(b[16:]) != seq {
		return 0, 0, false
	}
	s := sha256.Sum256(b[:32])
	if string(s[:16]) != string(b[32:48]) {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint32(b[24:]), binary.LittleEndian.Uint32(b[28:]), true
}

func alignedBuf(n int) []byte {
	b, err := unix.Mmap(-1, 0, (n+4095)&^4095, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		panic(err)
	}
	return b[:n]
}

func summary(name string, ds []time.Duration) string {
	if len(ds) == 0 {
		return name + " n=0"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("%s n=%d median=%v worst=%v", name, len(s), s[len(s)/2].Round(time.Microsecond), s[len(s)-1].Round(time.Microsecond))
}

func writer(args []string) error {
	fs := flag.NewFlagSet("writer", flag.ExitOnError)
	dir := fs.String("dir", "/mnt/w", "directory to write in")
	logDev := fs.String("log", "/dev/vdc", "raw device for the fsync log")
	seed := fs.Uint64("seed", 1, "content seed")
	fs.Parse(args)
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	lfd, err := unix.Open(*logDev, unix.O_WRONLY|unix.O_DIRECT|unix.O_DSYNC, 0)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	var stop atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; stop.Store(true) }()

	rec := alignedBuf(recSize)
	vers := make([]uint32, nFiles)
	r := rand.New(rand.NewPCG(*seed, 99))
	var lat []time.Duration
	var seq uint64
	for !stop.Load() {
		i := uint32(r.IntN(nFiles))
		vers[i]++
		p := filepath.Join(*dir, fmt.Sprintf("f%03d", i))
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		if _, err := f.Write(content(*seed, i, vers[i])); err != nil {
			return err
		}
		t0 := time.Now()
		if err := f.Sync(); err != nil {
			return err
		}
		lat = append(lat, time.Since(t0))
		if err := f.Close(); err != nil {
			return err
		}
		if vers[i] == 1 {
			// A new name is durable only once its directory is.
			d, err := os.Open(*dir)
			if err != nil {
				return err
			}
			if err := d.Sync(); err != nil {
				return err
			}
			d.Close()
		}
		encodeRec(rec, *seed, seq, i, vers[i])
		if _, err := unix.Pwrite(lfd, rec, int64(seq*recSize)); err != nil {
			return fmt.Errorf("log: %w", err)
		}
		seq++
		// A pause keeps the writer from starving the conversion of the
		// emulated CPU while still writing every few milliseconds.
		time.Sleep(3 * time.Millisecond)
	}
	fmt.Println("WRITER-STAT", summary("fsync", lat))
	fmt.Printf("WRITER-DONE %d\n", seq)
	return nil
}

func check(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	dir := fs.String("dir", "/mnt/w", "directory written")
	logDev := fs.String("log", "/dev/vdc", "raw device with the fsync log")
	seed := fs.Uint64("seed", 1, "content seed")
	crashed := fs.Bool("crashed", false, "the writer was killed: the file it was rewriting may hold anything")
	fs.Parse(args)
	log, err := os.ReadFile(*logDev)
	if err != nil {
		return err
	}
	last := map[uint32]uint32{}
	var n uint64
	for ; (n+1)*recSize <= uint64(len(log)); n++ {
		f, v, ok := decodeRec(log[n*recSize:(n+1)*recSize], *seed, n)
		if !ok {
			break
		}
		last[f] = v
	}
	if n == 0 {
		return errors.New("the log holds no record: the writer wrote nothing")
	}
	// The writer picks files from a seeded stream: replaying it names the
	// file it was rewriting, unlogged, when it was killed.
	inFlight := int64(-1)
	if *crashed {
		r := rand.New(rand.NewPCG(*seed, 99))
		for i := uint64(0); i <= n; i++ {
			inFlight = int64(r.IntN(nFiles))
		}
	}
	for f, v := range last {
		if int64(f) == inFlight {
			continue
		}
		got, err := os.ReadFile(filepath.Join(*dir, fmt.Sprintf("f%03d", f)))
		if err != nil {
			return fmt.Errorf("file %d (version %d logged): %w", f, v, err)
		}
		if want := content(*seed, f, v); string(got) != string(want) {
			return fmt.Errorf("file %d does not hold version %d, which the writer logged as synced (%d bytes, want %d)", f, v, len(got), len(want))
		}
	}
	fmt.Printf("CHECK-OK records=%d files=%d\n", n, len(last))
	if *crashed {
		fmt.Printf("CHECK-SKIPPED file %d (being rewritten at the crash)\n", inFlight)
	}
	return nil
}

// probe watches the holder (online.Hooks) and measures, per window, how
// long a read of the window issued right after it is held waits; and keeps
// a reader going elsewhere on the device, outside the window, to see what
// table swaps cost it.
type probe struct {
	fd   int
	buf  []byte
	done chan time.Duration

	mu       sync.Mutex
	windowed []time.Duration
	other    []time.Duration
	otherAt  atomic.Int64 // byte offset the other reader uses, -1 = none yet
	stop     atomic.Bool
	wg       sync.WaitGroup
}

func (p *probe) hooks() online.Hooks {
	return online.Hooks{Held: p.held, Released: p.released, Aborted: p.aborted}
}

func (p *probe) held(w uint64, start, n int64) {
	p.done = make(chan time.Duration, 1)
	go func(ch chan time.Duration) {
		t0 := time.Now()
		_, _ = unix.Pread(p.fd, p.buf, start)
		ch <- time.Since(t0)
	}(p.done)
}

func (p *probe) released(w uint64, start, n int64, err error) {
	if p.done == nil {
		return
	}
	d := <-p.done
	p.done = nil
	p.mu.Lock()
	p.windowed = append(p.windowed, d)
	p.mu.Unlock()
	// The first converted window is never held again: read there.
	p.otherAt.CompareAndSwap(-1, start)
}

func (p *probe) aborted(w uint64, start, n int64) {
	if p.done != nil {
		<-p.done // the window now fails I/O, so the read returns
		p.done = nil
	}
}

func (p *probe) readOther() {
	defer p.wg.Done()
	buf := alignedBuf(4096)
	for !p.stop.Load() {
		at := p.otherAt.Load()
		if at >= 0 {
			t0 := time.Now()
			if _, err := unix.Pread(p.fd, buf, at); err == nil {
				d := time.Since(t0)
				p.mu.Lock()
				p.other = append(p.other, d)
				p.mu.Unlock()
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func readKey(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	return os.ReadFile(path)
}

func convert(args []string) error {
	fs := flag.NewFlagSet("convert", flag.ExitOnError)
	name := fs.String("name", "data", "device-mapper device serving the data")
	dev := fs.String("dev", "/dev/vda", "backing device NAME serves")
	oldCipher := fs.String("old-cipher", "aes-xts-plain64", "old cipher (none = plaintext)")
	newCipher := fs.String("new-cipher", "aes-xts-plain64", "new cipher")
	oldKeyFile := fs.String("old-key", "", "old key file (empty for none)")
	newKeyFile := fs.String("new-key", "", "new key file")
	meta := fs.String("meta", "/dev/vdd", "metadata device")
	window := fs.Int64("window", 1<<20, "window bytes")
	mode := fs.String("mode", "journal", "resilience mode")
	resume := fs.Bool("resume", false, "a recorded conversion must be resumed; the live table is then a composite")
	fs.Parse(args)

	oldKey, err := readKey(*oldKeyFile)
	if err != nil {
		return err
	}
	newKey, err := readKey(*newKeyFile)
	if err != nil {
		return err
	}
	if *resume {
		live, err := dm.Table(*name)
		if err != nil {
			return err
		}
		fmt.Printf("RESUMING over %d targets\n", len(live))
	}
	node, err := dm.DevicePath(*name)
	if err != nil {
		return err
	}
	fd, err := unix.Open(node, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	p := &probe{fd: fd, buf: alignedBuf(4096)}
	p.otherAt.Store(-1)
	p.wg.Add(1)
	go p.readOther()

	req := online.Request{Name: *name, Device: *dev, Metadata: *meta, Hooks: p.hooks(),
		Logf: func(f string, a ...any) { fmt.Printf(f+"\n", a...) }}
	// The old mapping, data offset and size come from NAME's live table,
	// as with `convert --online`; a given key or cipher must agree with it.
	cfg := engine.Config{
		Old:  engine.Side{Cipher: *oldCipher, Key: oldKey},
		New:  engine.Side{Cipher: *newCipher, Key: newKey, SectorSize: 512},
		Mode: *mode, Window: *window,
	}
	t0 := time.Now()
	res, err := online.Convert(context.Background(), req, cfg,
		// Every window: the kill tests kill a seeded delay after a
		// seeded window's line.
		engine.Options{Progress: func(pr engine.Progress) {
			fmt.Printf("PROGRESS %d/%d\n", pr.Done, pr.Total)
		}})
	p.stop.Store(true)
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	if res.Engine.Resumed != *resume {
		return fmt.Errorf("the engine resumed=%v, the test expected %v", res.Engine.Resumed, *resume)
	}
	fmt.Printf("CONVERTED in %v\n", time.Since(t0).Round(time.Millisecond))

	var swaps, held []time.Duration
	for _, s := range res.Stats {
		swaps = append(swaps, s.Swap)
		held = append(held, s.Held)
	}
	fmt.Println("ONLINE-STAT", summary("table-swap(device suspended)", swaps))
	fmt.Println("ONLINE-STAT", summary("window-held", held))
	fmt.Println("ONLINE-STAT", summary("read-in-window-waited", p.windowed))
	fmt.Println("ONLINE-STAT", summary("read-elsewhere-latency", p.other))

	final, err := dm.Table(*name)
	if err != nil {
		return err
	}
	fseg, err := dm.ParseSegment(final[0])
	if err != nil {
		return err
	}
	h := res.Engine.Header
	if len(final) != 1 || string(fseg.Mapping.Key) != string(newKey) || fseg.Mapping.Spec != mustSpec(*newCipher) || fseg.Offset*512 != h.NewOffset {
		return fmt.Errorf("final table is not one target with the new mapping: %d targets", len(final))
	}
	fmt.Printf("FINAL-TABLE-OK %s key=%s\n", final[0].Type, hex.EncodeToString(sha256sum(fseg.Mapping.Key))[:16])
	holds := 0
	names, err := dm.List()
	if err != nil {
		return err
	}
	for _, n := range names {
		if n != *name {
			holds++
			fmt.Println("LEFTOVER", n)
		}
	}
	if holds == 0 {
		fmt.Println("NO-LEFTOVER-DEVICES")
	}
	fmt.Println("ONLINE-OK")
	return nil
}

func sha256sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func mustSpec(s string) sectorcipher.Spec {
	sp, err := sectorcipher.ParseSpec(s)
	if err != nil {
		panic(err)
	}
	return sp
}

// activate recovers an interrupted conversion and creates NAME from the
// recovered header: online.Activate, which `recover --activate NAME` runs.
func activate(args []string) error {
	fs := flag.NewFlagSet("activate", flag.ExitOnError)
	name := fs.String("name", "data", "device to create")
	dev := fs.String("dev", "/dev/vdb", "backing device")
	oldKeyFile := fs.String("old-key", "", "old key file")
	newKeyFile := fs.String("new-key", "", "new key file")
	meta := fs.String("meta", "/dev/vdd", "metadata device")
	fs.Parse(args)
	oldKey, err := readKey(*oldKeyFile)
	if err != nil {
		return err
	}
	newKey, err := readKey(*newKeyFile)
	if err != nil {
		return err
	}
	req := online.Request{Name: *name, Device: *dev, Metadata: *meta}
	rec, err := online.Activate(context.Background(), req, oldKey, newKey, engine.RecoverOptions{})
	if rec != nil {
		h := rec.Recovered.Header
		fmt.Printf("RECOVERED %s; done %d of %d windows, state %s\n", rec.Recovered.Action, h.Done, h.Windows(), h.State)
	}
	if err != nil {
		return err
	}
	ts, err := dm.Table(*name)
	if err != nil {
		return err
	}
	fmt.Printf("ACTIVATED %s with %d targets\n", *name, len(ts))
	return nil
}
