package engine

import (
	"context"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
	"github.com/cryptshift/cryptshift/wal"
)

// chunk is the unit of parallel work inside a window, and the unit of the
// plaintext digest (docs/FORMAT.md, "Digest table" and "Keyed digests").
const chunk = 1 << 20

// hashEntry is the size of one unit's entry in a checksum record: the keyed
// digest of the old ciphertext (16 bytes), then of the new.
const hashEntry = 32

// buffers holds the window-sized buffers of two steps: the one being
// written and the one being read and transformed ahead of it, each with its
// old ciphertext and its result, so memory stays at four windows whatever
// the device size.
type buffers struct {
	old, cur [2][]byte
	next     int // which pair the next step uses
}

func (b *buffers) alloc(n int64) {
	if int64(cap(b.cur[0])) < n {
		for i := range b.old {
			b.old[i] = blockdev.AlignedBuffer(int(n))
			b.cur[i] = blockdev.AlignedBuffer(int(n))
		}
	}
}

// prepared is one step's window, read and transformed in the background
// while the previous step is written. Reading and transforming never change
// what is durable, and no step's writes overlap the next step's source (in
// place: another window; shift: the gap lies between them), so this is
// outside the crash argument. Only the writes, in protect, are ordered.
type prepared struct {
	step   uint64
	old    []byte // old ciphertext, as read (journal mode only)
	cur    []byte // new ciphertext
	digest [32]byte
	hashes []byte // checksum mode: the record payload
	err    error
	done   chan struct{}
}

// prepare reads step j's window and transforms it in a goroutine. It reads
// everything it needs of c.h now: checkpoints replace c.h meanwhile.
func (c *conv) prepare(j uint64) *prepared {
	w := c.h.WindowAt(j)
	start, n := c.h.WindowRange(w)
	c.buf.alloc(int64(c.h.Window))
	p := &prepared{step: j, old: c.buf.old[c.buf.next][:n], cur: c.buf.cur[c.buf.next][:n], done: make(chan struct{})}
	c.buf.next ^= 1
	var u int64
	if c.h.Mode == header.ModeChecksum {
		u = c.unit()
		p.hashes = make([]byte, n/u*hashEntry)
	}
	// Only journal mode needs the old ciphertext once transformed (it is
	// the record's payload); the others read straight into the buffer they
	// transform, saving a copy of every byte.
	keepOld := c.h.Mode == header.ModeJournal
	if !keepOld {
		p.old = nil
	}
	dev, off := c.t.Data, int64(c.h.OldOffset)+start
	if c.plainOld != nil {
		// The crypto device decrypts as it reads (kernelwindow.go).
		go c.prepareKernel(p, w, start, c.buf.old[c.buf.next^1][:n])
		return p
	}
	go func() {
		defer close(p.done)
		dst := p.cur
		if keepOld {
			dst = p.old
		}
		if _, err := dev.ReadAt(dst, off); err != nil {
			p.err = errclass.IOf(fmt.Sprintf("read window %d", w), err)
			return
		}
		if keepOld {
			copy(p.cur, p.old)
		}
		p.digest = c.transform(p.cur, w, start, j, p.hashes, u)
	}()
	return p
}

func (c *conv) unit() int64 {
	return int64(max(c.h.Old.SectorSize, c.h.New.SectorSize))
}

// parallel runs f over the window's chunks on all cores.
func parallel(n int64, f func(off, end int64)) {
	chunks := int((n + chunk - 1) / chunk)
	workers := min(runtime.GOMAXPROCS(0), chunks)
	if workers <= 1 {
		for off := int64(0); off < n; off += chunk {
			f(off, min(off+chunk, n))
		}
		return
	}
	var wg sync.WaitGroup
	next := make(chan int64, chunks)
	for off := int64(0); off < n; off += chunk {
		next <- off
	}
	close(next)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := range next {
				f(off, min(off+chunk, n))
			}
		}()
	}
	wg.Wait()
}

// combine folds the per-chunk digests into the window digest.
func combine(sums [][16]byte) [32]byte {
	h := sha256.New()
	for _, s := range sums {
		h.Write(s[:])
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

// plainDigest decrypts a copy of buf (window w's ciphertext at logical byte
// start) with ci and returns the window digest of the plaintext. buf is
// unchanged.
func (c *conv) plainDigest(buf []byte, w uint64, start int64, ci sectorcipher.Cipher) [32]byte {
	sums := make([][16]byte, (len(buf)+chunk-1)/chunk)
	parallel(int64(len(buf)), func(off, end int64) {
		tmp := make([]byte, end-off)
		copy(tmp, buf[off:end])
		ci.Decrypt(tmp, uint64(start+off)/512)
		sums[off/chunk] = c.sum.Sum(header.SumWindowChunk, w, uint32(off/chunk), tmp)
	})
	return combine(sums)
}

// digestPlain returns the window digest of window w's plaintext buf.
func (c *conv) digestPlain(buf []byte, w uint64) [32]byte {
	sums := make([][16]byte, (len(buf)+chunk-1)/chunk)
	parallel(int64(len(buf)), func(off, end int64) {
		sums[off/chunk] = c.sum.Sum(header.SumWindowChunk, w, uint32(off/chunk), buf[off:end])
	})
	return combine(sums)
}

// transform converts buf (window w at logical byte start, processing step
// j) in place from old to new ciphertext and returns the window digest of
// the plaintext. With hashes non-nil (checksum mode, units of u bytes) it
// also fills one hashEntry per unit: old ciphertext digest, new ciphertext
// digest. It reads nothing of c.h: journal mode runs it concurrently with
// appending its record.
func (c *conv) transform(buf []byte, w uint64, start int64, j uint64, hashes []byte, u int64) [32]byte {
	sums := make([][16]byte, (len(buf)+chunk-1)/chunk)
	parallel(int64(len(buf)), func(off, end int64) {
		p := buf[off:end]
		if hashes != nil {
			c.unitHashes(p, hashes, u, off/u, header.SumUnitOld, j)
		}
		c.oldC.Decrypt(p, uint64(start+off)/512)
		sums[off/chunk] = c.sum.Sum(header.SumWindowChunk, w, uint32(off/chunk), p)
		c.newC.Encrypt(p, uint64(start+off)/512)
		if hashes != nil {
			c.unitHashes(p, hashes, u, off/u, header.SumUnitNew, j)
		}
	})
	return combine(sums)
}

// unitHashes fills the old (domain SumUnitOld) or new half of the entries
// of units first, first+1, ... covered by p.
func (c *conv) unitHashes(p, hashes []byte, u, first int64, domain byte, j uint64) {
	at := int64(0)
	if domain == header.SumUnitNew {
		at = 16
	}
	for i := int64(0); i < int64(len(p))/u; i++ {
		s := c.sum.Sum(domain, j, uint32(first+i), p[i*u:(i+1)*u])
		copy(hashes[(first+i)*hashEntry+at:], s[:])
	}
}

func (c *conv) digestOffset(w uint64) int64 {
	return int64(c.h.DigestOff + w*header.DigestEntrySize)
}

func (c *conv) readDigest(w uint64) ([header.DigestEntrySize]byte, error) {
	var e [header.DigestEntrySize]byte
	if _, err := c.t.Meta.ReadAt(e[:], c.digestOffset(w)); err != nil {
		return e, errclass.IOf("read digest table", err)
	}
	return e, nil
}

// writeWindow writes a converted window and its digest entry; the caller
// flushes both together.
func (c *conv) writeWindow(w uint64, start int64, buf []byte, digest [32]byte) error {
	if err := c.cipherErr(); err != nil {
		return err
	}
	dev, off := c.t.Data, int64(c.h.NewOffset)+start
	if c.plainNew != nil {
		dev, off = c.plainNew, start // buf is plaintext; dev encrypts it
	}
	if _, err := dev.WriteAt(buf, off); err != nil {
		return errclass.IOf(fmt.Sprintf("write window %d", w), err)
	}
	e := header.DigestEntry(c.macKey, w, digest)
	if _, err := c.t.Meta.WriteAt(e[:], c.digestOffset(w)); err != nil {
		return errclass.IOf(fmt.Sprintf("write digest of window %d", w), err)
	}
	return nil
}

// flushData makes window data and digest entries durable: one flush when
// data and metadata share a device, both otherwise.
func (c *conv) flushData(point FlushPoint) error {
	if c.plainNew != nil {
		// The window went through the crypto device, the digest entry
		// straight to Meta: flush both, even when they share a disk, so
		// that neither flush's reach beyond its own device is assumed.
		if err := c.flush(c.plainNew, point); err != nil {
			return err
		}
		return c.flush(c.t.Meta, point.Meta())
	}
	if err := c.flush(c.t.Data, point); err != nil {
		return err
	}
	if !c.t.MetaOnData {
		return c.flush(c.t.Meta, point.Meta())
	}
	return nil
}

// appendRecord appends a log record, checkpointing first when the log is
// full. The checkpoint is only taken at done: every window before it is
// durable by then (the crash argument's invariant I1).
func (c *conv) appendRecord(t wal.Type, done uint64, payload []byte) error {
	if !c.log.Fits(len(payload)) {
		if err := c.checkpoint(done, header.StateInProgress); err != nil {
			return err
		}
	}
	if _, err := c.log.Append(t, done, payload); err != nil {
		return errclass.IOf("append log record", err)
	}
	return nil
}

// checkpoint commits the header with progress done and an empty log. The
// flush of its first copy is what makes the old records unnecessary.
func (c *conv) checkpoint(done uint64, state header.State) error {
	_, seq := c.log.Tail()
	h := *c.h
	if done != h.Done {
		// Windows were transformed since the last checkpoint, by this
		// run's engines.
		h.Engines |= c.engines()
	}
	h.Done = done
	h.State = state
	h.LogHeadOff = 0
	h.LogHeadSeq = seq
	h.Updated = c.now()
	// Both copies: a crash mid-commit leaves the previous state readable
	// from either, and once both are written, damage to one copy later
	// (not a crash: media decay) cannot fall back to a stale checkpoint
	// whose log has since been overwritten.
	if err := c.store.CommitBoth(&h, c.macKey); err != nil {
		return errclass.IOf("commit header", err)
	}
	c.h = &h
	c.log.Reset()
	return nil
}

// step converts the window at processing step j (windows before it are
// durable). The order of writes and flushes per mode is the crash argument
// of docs/DESIGN.md, "Per-window protocol".
func (c *conv) step(j uint64, p *prepared) error {
	hd := c.opts.Holder
	if hd == nil {
		return c.protect(j, p)
	}
	w := c.h.WindowAt(j)
	start, n := c.h.WindowRange(w)
	if err := hd.Hold(w, start, n); err != nil {
		hd.Abort(w, start, n, err)
		return fmt.Errorf("hold window %d: %w", w, err)
	}
	// Online, the window is read only once it is held (p is nil).
	err := c.protect(j, nil)
	if err == nil && (c.h.Mode == header.ModeJournal || c.h.Mode == header.ModeChecksum) {
		// O1 (docs/DESIGN.md, "Online: holding the window"): the window is
		// committed before the application can write into it, or recovery
		// would redo it over those writes.
		if err = c.appendRecord(wal.TypeProgress, j+1, nil); err == nil {
			err = c.flush(c.t.Meta, FlushOnlineCommit)
		}
	}
	if err != nil {
		hd.Abort(w, start, n, err)
		return err
	}
	if err := hd.Release(w, start, n); err != nil {
		return fmt.Errorf("release window %d: %w", w, err)
	}
	return nil
}

// protect runs the per-mode protocol for step j, on the old ciphertext
// prepared in p, or prepared now when p is nil.
func (c *conv) protect(j uint64, p *prepared) error {
	w := c.h.WindowAt(j)
	start, _ := c.h.WindowRange(w)
	if p == nil {
		p = c.prepare(j)
	}
	<-p.done
	if p.err != nil {
		return p.err
	}
	if p.step != j {
		panic(fmt.Sprintf("engine: window prepared for step %d used for step %d", p.step, j))
	}
	switch c.h.Mode {
	case header.ModeJournal:
		// J1 (docs/DESIGN.md, "journal"): the old ciphertext is durable in
		// the log before the window is touched.
		if err := c.appendRecord(wal.TypeJournal, j, p.old); err != nil {
			return err
		}
		if err := c.flush(c.t.Meta, FlushJournalRecord); err != nil {
			return err
		}
		if err := c.writeWindow(w, start, p.cur, p.digest); err != nil {
			return err
		}
		return c.flushData(FlushJournalData)
	case header.ModeChecksum:
		// C1 (docs/DESIGN.md, "checksum"): both hash sets are durable before
		// the window is touched.
		if err := c.appendRecord(wal.TypeChecksum, j, p.hashes); err != nil {
			return err
		}
		if err := c.flush(c.t.Meta, FlushChecksumRecord); err != nil {
			return err
		}
		if err := c.writeWindow(w, start, p.cur, p.digest); err != nil {
			return err
		}
		return c.flushData(FlushChecksumData)
	default: // shift, none
		if err := c.writeWindow(w, start, p.cur, p.digest); err != nil {
			return err
		}
		// S1 (docs/DESIGN.md, "shift"): the window is durable before its
		// progress record, and the record before the next step overwrites
		// this one's source.
		if err := c.flushData(FlushWindowData); err != nil {
			return err
		}
		if err := c.appendRecord(wal.TypeProgress, j+1, nil); err != nil {
			return err
		}
		return c.flush(c.t.Meta, FlushProgressRecord)
	}
}

// run converts every remaining window, then marks the conversion complete.
func (c *conv) run(ctx context.Context, resumed bool) error {
	total := c.h.Windows()
	done := c.h.Done
	if c.h.State != header.StateInProgress {
		// Before any window is written the header must say a conversion is
		// in flight, or a crash in resilience none would go unreported.
		if err := c.checkpoint(done, header.StateInProgress); err != nil {
			return err
		}
	}
	report := func() {
		if c.opts.Progress != nil {
			c.opts.Progress(Progress{Done: done, Total: total, Mode: c.h.Mode, Resumed: resumed,
				BytesDone: c.h.ConvertedBytes(done), BytesTotal: c.h.DataSize})
		}
	}
	report()
	var ahead *prepared
	// A read still in flight when run returns would race with the next use
	// of its buffer.
	defer func() {
		if ahead != nil {
			<-ahead.done
		}
	}()
	for done < total {
		if ctx.Err() != nil {
			if err := c.checkpoint(done, header.StatePaused); err != nil {
				return err
			}
			return fmt.Errorf("%w after %d of %d windows", errclass.Paused, done, total)
		}
		cur := ahead
		ahead = nil
		if c.opts.Holder == nil {
			if cur == nil {
				cur = c.prepare(done)
			}
			if done+1 < total {
				ahead = c.prepare(done + 1)
			}
		}
		if err := c.step(done, cur); err != nil {
			return err
		}
		done++
		if c.opts.Hooks != nil && c.opts.Hooks.AfterWindow != nil {
			c.opts.Hooks.AfterWindow(done)
		}
		report()
	}
	return c.checkpoint(done, header.StateComplete)
}
