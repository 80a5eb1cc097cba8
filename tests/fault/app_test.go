package fault

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"

	"github.com/cryptshift/cryptshift/engine"
)

// A block an application writes: it names its sector and generation and
// carries a checksum, so a misplaced or stale block is recognisable.
type appBlock struct {
	sector, gen uint64
}

var blockMagic = []byte("APPBLK01")

func makeBlock(sector, gen uint64) []byte {
	b := make([]byte, 512)
	copy(b, blockMagic)
	binary.LittleEndian.PutUint64(b[8:], sector)
	binary.LittleEndian.PutUint64(b[16:], gen)
	for i := 24; i < 508; i++ {
		b[i] = "application data "[(i+int(gen))%17]
	}
	binary.LittleEndian.PutUint32(b[508:], crc32.ChecksumIEEE(b[:508]))
	return b
}

func parseBlock(b []byte) (appBlock, bool) {
	if len(b) != 512 || !bytes.HasPrefix(b, blockMagic) ||
		binary.LittleEndian.Uint32(b[508:]) != crc32.ChecksumIEEE(b[:508]) {
		return appBlock{}, false
	}
	return appBlock{binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:])}, true
}

// appWrite is one block write and the flush that acknowledged it.
type appWrite struct {
	writeOp, flushOp int // trace indices
	sector           int64
	block            []byte
}

// appWriter is a simulated online conversion: as the engine's Holder it
// sees each window released, and then writes like an application through
// the mapping that serves each sector at that moment: a block into the
// window just released, one into an earlier converted window and one into
// a window not converted yet; then it flushes the data device, which
// acknowledges them.
type appWriter struct {
	f        *fixture
	dom      *Domain
	data     *Disk
	released int
	// releaseMarks[d]: crash point from which d windows are released,
	// hence durably committed (O1).
	releaseMarks []int
	cur          []byte // logical plaintext as the application sees it
	writes       []appWrite
	failed       error
}

func newAppWriter(f *fixture, dom *Domain, tgt engine.Target) *appWriter {
	return &appWriter{f: f, dom: dom, data: tgt.Data.(*Disk), cur: bytes.Clone(f.plain)}
}

func (a *appWriter) Hold(w uint64, start, n int64) error { return nil }

func (a *appWriter) Abort(w uint64, start, n int64, cause error) {}

func (a *appWriter) Release(w uint64, start, n int64) error {
	a.released++
	for len(a.releaseMarks) <= a.released {
		a.releaseMarks = append(a.releaseMarks, a.dom.Ops())
	}
	gen := uint64(a.released)
	f := a.f
	sectors := []int64{start/512 + int64(gen*7)%(n/512)}
	if a.released >= 2 {
		ws, wn := f.windowRange(f.windowAt(int(gen) % (a.released - 1)))
		sectors = append(sectors, ws/512+int64(gen*5)%(wn/512))
	}
	if a.released < f.windows {
		ws, wn := f.windowRange(f.windowAt(a.released + int(gen)%(f.windows-a.released)))
		sectors = append(sectors, ws/512+int64(gen*3)%(wn/512))
	}
	first := len(a.writes)
	for _, s := range sectors {
		blk := makeBlock(uint64(s), gen)
		copy(a.cur[s*512:], blk)
		// Read-modify-write of the crypto sector holding the block, as the
		// block layer does for a 512-byte write under 4096-byte sectors.
		lo := s * 512 / f.unit * f.unit
		buf := bytes.Clone(a.cur[lo : lo+f.unit])
		off, ci := f.oldOff, f.oldC
		if w := int(lo / f.sc.window); f.stepOf(w) < a.released {
			off, ci = f.newOff, f.newC
		}
		ci.Encrypt(buf, uint64(lo)/512)
		a.writes = append(a.writes, appWrite{writeOp: a.dom.Ops(), sector: s, block: blk})
		if _, err := a.data.WriteAt(buf, off+lo); err != nil {
			a.failed = err
			return err
		}
	}
	if err := a.data.Flush(); err != nil {
		a.failed = err
		return err
	}
	for i := first; i < len(a.writes); i++ {
		a.writes[i].flushOp = a.dom.Ops() - 1
	}
	return nil
}

// expectAt is the logical plaintext a crash at point k must preserve: the
// original with every acknowledged block; the crypto sectors of blocks
// written but not yet acknowledged carry no promise.
func (a *appWriter) expectAt(k int) (plain []byte, skip []bool) {
	plain = bytes.Clone(a.f.plain)
	skip = make([]bool, len(plain)/512)
	for _, w := range a.writes {
		switch {
		case w.flushOp < k:
			copy(plain[w.sector*512:], w.block)
		case w.writeOp < k:
			lo := w.sector * 512 / a.f.unit * a.f.unit
			for s := lo / 512; s < (lo+a.f.unit)/512; s++ {
				skip[s] = true
			}
		}
	}
	return plain, skip
}
