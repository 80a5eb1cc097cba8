package fault

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
)

func pattern(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func mustImage(t *testing.T, d *Domain, k int, c Choice) [][]byte {
	t.Helper()
	imgs, err := d.Image(k, c)
	if err != nil {
		t.Fatal(err)
	}
	return imgs
}

func TestReadsSeeLatestWrite(t *testing.T) {
	dom := NewDomain()
	disk := dom.NewDisk(pattern(2048, 1))
	if _, err := disk.WriteAt(pattern(10, 9), 100); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 20)
	if _, err := disk.ReadAt(buf, 95); err != nil {
		t.Fatal(err)
	}
	want := append(append(pattern(5, 1), pattern(10, 9)...), pattern(5, 1)...)
	if !bytes.Equal(buf, want) {
		t.Fatalf("read %v", buf)
	}
	if n, err := disk.ReadAt(buf, 2040); n != 8 || !errors.Is(err, io.EOF) {
		t.Fatalf("read across end: n=%d %v", n, err)
	}
	if n, err := disk.WriteAt(buf, 2040); n != 0 || !errors.Is(err, blockdev.ErrOutOfRange) {
		t.Fatalf("write across end: n=%d %v", n, err)
	}
	if dom.Ops() != 1 {
		t.Fatalf("refused write recorded: %d ops", dom.Ops())
	}
	disk.Close()
	if _, err := disk.ReadAt(buf, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
}

// A naive model of the durability rules, written independently of the
// cursor: replay each disk's writes up to its last flush before k.
func naiveDurable(dom *Domain, k int) [][]byte {
	disks := dom.Disks()
	imgs := make([][]byte, len(disks))
	lastFlush := make([]int, len(disks))
	for i := range disks {
		imgs[i] = bytes.Clone(disks[i].initial)
		lastFlush[i] = -1
	}
	for i := 0; i < k; i++ {
		if op := dom.Op(i); op.Kind == OpFlush {
			lastFlush[op.Disk] = i
		}
	}
	for i := 0; i < k; i++ {
		if op := dom.Op(i); op.Kind == OpWrite && i < lastFlush[op.Disk] {
			copy(imgs[op.Disk][op.Off:], op.Data)
		}
	}
	return imgs
}

// randomTrace drives two disks with random writes and flushes.
func randomTrace(t *testing.T, seed uint64, nops int) *Domain {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	dom := NewDomain()
	disks := []*Disk{dom.NewDisk(pattern(4096, 0xAA)), dom.NewDisk(pattern(2048, 0xBB))}
	for i := 0; i < nops; i++ {
		disk := disks[r.IntN(2)]
		if r.IntN(4) == 0 {
			if err := disk.Flush(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		off := r.IntN(int(disk.Size()))
		n := 1 + r.IntN(min(1500, int(disk.Size())-off))
		buf := make([]byte, n)
		for j := range buf {
			buf[j] = byte(r.Uint32())
		}
		if _, err := disk.WriteAt(buf, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	return dom
}

// Property test of the model's rules over random traces and every
// enumerated state: bytes no pending write covers equal the durable model
// (so a write before a completed flush always survives), and without shorn
// writes every byte holds either its durable value or the value of some
// pending write covering it.
func TestCrashStatesObeyModel(t *testing.T) {
	for seed := uint64(0); seed < 6; seed++ {
		dom := randomTrace(t, seed, 30)
		for k := 0; k <= dom.Ops(); k++ {
			pending, err := dom.Pending(k)
			if err != nil {
				t.Fatal(err)
			}
			allowed, garbled := byteModel(dom, naiveDurable(dom, k), pending)
			for _, shorn := range []bool{false, true} {
				states, err := dom.States(k, EnumOptions{Torn: true, Shorn: shorn, MaxStates: 40, Seed: seed})
				if err != nil {
					t.Fatal(err)
				}
				for _, st := range states {
					imgs := mustImage(t, dom, k, st.Choice)
					for d, img := range imgs {
						for i, v := range img {
							if bytes.IndexByte(allowed[d][i], v) >= 0 || (shorn && garbled[d][i]) {
								continue
							}
							t.Fatalf("%s: disk%d byte %d = %#x, allowed %v (durable first)", st.Desc, d, i, v, allowed[d][i])
						}
					}
				}
			}
		}
	}
}

// byteModel lists, per disk and byte, the values a crash may leave there:
// the durable one, then those of each pending write covering it; garbled
// marks bytes in a sector a pending write touches (a shorn write garbles
// the whole sector).
func byteModel(dom *Domain, durable [][]byte, pending []int) (allowed [][][]byte, garbled [][]bool) {
	for d, img := range durable {
		allowed = append(allowed, make([][]byte, len(img)))
		garbled = append(garbled, make([]bool, len(img)))
		for i, v := range img {
			allowed[d][i] = []byte{v}
		}
	}
	for _, w := range pending {
		op := dom.Op(w)
		for i, v := range op.Data {
			a := &allowed[op.Disk][op.Off+int64(i)]
			*a = append(*a, v)
		}
		lo := op.Off / SectorSize * SectorSize
		hi := min((op.Off+int64(len(op.Data))+SectorSize-1)/SectorSize*SectorSize, int64(len(durable[op.Disk])))
		for i := lo; i < hi; i++ {
			garbled[op.Disk][i] = true
		}
	}
	return allowed, garbled
}

func TestFlushIsPerDisk(t *testing.T) {
	dom := NewDomain()
	a, b := dom.NewDisk(pattern(512, 0)), dom.NewDisk(pattern(512, 0))
	a.WriteAt(pattern(512, 1), 0)
	b.WriteAt(pattern(512, 2), 0)
	a.Flush()
	pending, _ := dom.Pending(dom.Ops())
	if len(pending) != 1 || pending[0] != 1 {
		t.Fatalf("pending %v, want [1] (disk1's write)", pending)
	}
	imgs := mustImage(t, dom, 3, Choice{})
	if !bytes.Equal(imgs[0], pattern(512, 1)) || !bytes.Equal(imgs[1], pattern(512, 0)) {
		t.Fatal("flush of disk0 made disk1's write durable, or lost disk0's")
	}
	// Before the flush completed, disk0's write was still at risk.
	if imgs := mustImage(t, dom, 2, Choice{}); !bytes.Equal(imgs[0], pattern(512, 0)) {
		t.Fatal("write durable before its flush")
	}
}

func TestPendingWriteMayVanish(t *testing.T) {
	dom := NewDomain()
	disk := dom.NewDisk(pattern(1024, 0))
	disk.WriteAt(pattern(512, 5), 512)
	states, err := dom.States(1, EnumOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var lost, kept bool
	for _, st := range states {
		img := mustImage(t, dom, 1, st.Choice)[0]
		lost = lost || bytes.Equal(img, pattern(1024, 0))
		kept = kept || bytes.Equal(img[512:], pattern(512, 5))
	}
	if !lost || !kept {
		t.Fatalf("states must include the write lost (%v) and kept (%v)", lost, kept)
	}
}

func TestTornSectorsExactlyChosen(t *testing.T) {
	old := pattern(4096, 0x11)
	dom := NewDomain()
	disk := dom.NewDisk(old)
	// Covers the tail of sector 0 through the head of sector 4: 5 sectors,
	// the first and last partial.
	const off, n = 300, 1900
	disk.WriteAt(pattern(n, 0x22), off)
	if got := sectors(dom.Op(0)); got != 5 {
		t.Fatalf("sectors = %d", got)
	}
	for mask := 0; mask < 1<<5; mask++ {
		var nw []int
		for j := range 5 {
			if mask&(1<<j) != 0 {
				nw = append(nw, j)
			}
		}
		img := mustImage(t, dom, 1, Choice{Writes: []Persist{torn(0, nw, nil)}})[0]
		for i := range img {
			want := byte(0x11)
			if i >= off && i < off+n && mask&(1<<(i/SectorSize)) != 0 {
				want = 0x22
			}
			if img[i] != want {
				t.Fatalf("new sectors %v: byte %d = %#x, want %#x", nw, i, img[i], want)
			}
		}
	}
}

func TestShornGarbageDiffersFromOldAndNew(t *testing.T) {
	dom := NewDomain()
	init := make([]byte, 1024+1)
	for i := range init {
		init[i] = byte(i * 7)
	}
	disk := dom.NewDisk(init)
	disk.WriteAt(pattern(700, 0x33), 200) // sectors 0 and 1, both partial
	disk.WriteAt([]byte{0x44}, 1024)      // a 1-byte last sector
	oldImg := bytes.Clone(init)
	newImg := disk.Contents()
	for seed := uint64(0); seed < 300; seed++ {
		c := Choice{Seed: seed, Writes: []Persist{torn(0, []int{1}, []int{0}), torn(1, nil, []int{0})}}
		img := mustImage(t, dom, 2, c)[0]
		if bytes.Equal(img[:512], oldImg[:512]) || bytes.Equal(img[:512], newImg[:512]) {
			t.Fatalf("seed %d: garbage sector 0 equals old or new", seed)
		}
		if img[1024] == oldImg[1024] || img[1024] == newImg[1024] {
			t.Fatalf("seed %d: 1-byte garbage sector equals old or new", seed)
		}
		if !bytes.Equal(img[512:1024], newImg[512:1024]) {
			t.Fatalf("seed %d: new sector 1 wrong", seed)
		}
		if again := mustImage(t, dom, 2, c)[0]; !bytes.Equal(again, img) {
			t.Fatalf("seed %d: garbage not deterministic", seed)
		}
	}
	a := mustImage(t, dom, 2, Choice{Seed: 1, Writes: []Persist{torn(0, nil, []int{0})}})[0]
	b := mustImage(t, dom, 2, Choice{Seed: 2, Writes: []Persist{torn(0, nil, []int{0})}})[0]
	if bytes.Equal(a, b) {
		t.Fatal("garbage ignores the seed")
	}
}

func TestOrderMattersForOverlappingWrites(t *testing.T) {
	dom := NewDomain()
	disk := dom.NewDisk(pattern(1024, 0))
	disk.WriteAt(pattern(512, 1), 0)
	disk.WriteAt(pattern(512, 2), 256)
	inOrder := mustImage(t, dom, 2, Choice{Writes: []Persist{{Op: 0}, {Op: 1}}})[0]
	reversed := mustImage(t, dom, 2, Choice{Writes: []Persist{{Op: 1}, {Op: 0}}})[0]
	if inOrder[300] != 2 || reversed[300] != 1 {
		t.Fatalf("overlap byte: in order %d, reversed %d", inOrder[300], reversed[300])
	}
	states, _ := dom.States(2, EnumOptions{})
	var sawReverse bool
	for _, st := range states {
		img := mustImage(t, dom, 2, st.Choice)[0]
		sawReverse = sawReverse || bytes.Equal(img, reversed)
	}
	if !sawReverse {
		t.Fatal("enumeration misses the reversed order of overlapping writes")
	}
}

func TestEnumerationCountsSmallTrace(t *testing.T) {
	dom := NewDomain()
	disk := dom.NewDisk(pattern(4096, 0))
	disk.WriteAt(pattern(512, 1), 0)     // w0: 1 sector
	disk.WriteAt(pattern(1024, 2), 1024) // w1: 2 sectors, disjoint
	disk.Flush()                         // op 2
	disk.WriteAt(pattern(512, 3), 0)     // w3
	disk.WriteAt(pattern(512, 4), 256)   // w4 overlaps w3

	count := func(k int, o EnumOptions) []State {
		t.Helper()
		states, err := dom.States(k, o)
		if err != nil {
			t.Fatal(err)
		}
		return states
	}
	// {w0,w1}: none, all, {w1}, {w0}; reverse is skipped (no overlap).
	if got := count(2, EnumOptions{}); len(got) != 4 {
		t.Fatalf("k=2 plain: %d states: %v", len(got), descs(got))
	}
	// Torn adds w1 torn {s0} or {s1} (alternating and random repeat those),
	// with w0 kept; dropping w0 gives the same set again because w0 is
	// before w1. 4 + 2.
	if got := count(2, EnumOptions{Torn: true}); len(got) != 6 {
		t.Fatalf("k=2 torn: %d states: %v", len(got), descs(got))
	}
	// Right after the flush nothing is pending: exactly one state.
	if got := count(3, EnumOptions{Torn: true, Shorn: true}); len(got) != 1 || !strings.HasSuffix(got[0].Desc, "nothing pending") {
		t.Fatalf("k=3: %v", descs(got))
	}
	// {w3,w4} overlapping: none, all, reverse, {w4}, {w3}.
	got := count(5, EnumOptions{})
	if len(got) != 5 {
		t.Fatalf("k=5: %d states: %v", len(got), descs(got))
	}
	wantDesc := []string{
		"k=5 after op 4 (write disk0 [256,+512)): pending {w3 dropped; w4 dropped}",
		"k=5 after op 4 (write disk0 [256,+512)): pending {w3 new; w4 new}",
		"k=5 after op 4 (write disk0 [256,+512)): pending {w3 new; w4 new} order w4,w3",
		"k=5 after op 4 (write disk0 [256,+512)): pending {w3 dropped; w4 new}",
		"k=5 after op 4 (write disk0 [256,+512)): pending {w3 new; w4 dropped}",
	}
	for i, st := range got {
		if st.Desc != wantDesc[i] || st.K != 5 {
			t.Errorf("state %d: %q", i, st.Desc)
		}
	}
}

func descs(states []State) []string {
	var s []string
	for _, st := range states {
		s = append(s, st.Desc)
	}
	return s
}

func TestEnumerationCapAndSampling(t *testing.T) {
	dom := NewDomain()
	disk := dom.NewDisk(pattern(16384, 0))
	for i := range 12 {
		disk.WriteAt(pattern(1536, byte(i+1)), int64(i*1024)) // each overlaps the next
	}
	k := dom.Ops()
	o := EnumOptions{MaxStates: 30, Torn: true, Shorn: true, Seed: 42}
	a, err := dom.States(k, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 30 {
		t.Fatalf("%d states, want the cap 30", len(a))
	}
	for i, want := range []string{"w0 dropped", "w0 new", "order w11,"} {
		if !strings.Contains(a[i].Desc, want) {
			t.Fatalf("state %d %q: core state missing %q", i, a[i].Desc, want)
		}
	}
	seen := map[string]bool{}
	for _, st := range a {
		if seen[st.Desc] {
			t.Fatalf("duplicate state %q", st.Desc)
		}
		seen[st.Desc] = true
		if _, err := dom.Image(k, st.Choice); err != nil {
			t.Fatalf("%s: %v", st.Desc, err)
		}
	}
	b, _ := dom.States(k, o)
	if strings.Join(descs(a), "\n") != strings.Join(descs(b), "\n") {
		t.Fatal("sampling is not deterministic")
	}
	o.Seed = 43
	c, _ := dom.States(k, o)
	if strings.Join(descs(a), "\n") == strings.Join(descs(c), "\n") {
		t.Fatal("sampling ignores the seed")
	}
	// Without tears, 12 pending writes are beyond MaxSubset: the structured
	// states (none, all, reverse, 12 drops) are topped up by random ones.
	d, _ := dom.States(k, EnumOptions{MaxStates: 30})
	if len(d) != 30 {
		t.Fatalf("random fill: %d states", len(d))
	}
}

func TestImageRejectsBadChoices(t *testing.T) {
	dom := NewDomain()
	disk := dom.NewDisk(pattern(2048, 0))
	disk.WriteAt(pattern(512, 1), 0) // w0
	disk.Flush()                     // op 1
	disk.WriteAt(pattern(1024, 2), 0)
	for _, c := range []Choice{
		{Writes: []Persist{{Op: 0}}},                     // durable, not pending
		{Writes: []Persist{{Op: 1}}},                     // a flush
		{Writes: []Persist{{Op: 2}, {Op: 2}}},            // twice
		{Writes: []Persist{torn(2, []int{2}, nil)}},      // sector out of range
		{Writes: []Persist{torn(2, []int{0}, []int{0})}}, // new and garbage
		{Writes: []Persist{{Op: 2, New: []int{0}}}},      // sectors on a whole write
	} {
		if _, err := dom.Image(3, c); err == nil {
			t.Errorf("choice %+v accepted", c)
		}
	}
	if _, err := dom.Image(4, Choice{}); err == nil {
		t.Error("crash point past the end accepted")
	}
}

// The cursor caches one crash point; going backwards must rebuild, not
// reuse state from later ops.
func TestImageOrderIndependent(t *testing.T) {
	dom := randomTrace(t, 99, 60)
	var forward [][][]byte
	for k := 0; k <= dom.Ops(); k++ {
		forward = append(forward, mustImage(t, dom, k, Choice{}))
	}
	for k := dom.Ops(); k >= 0; k-- {
		back := mustImage(t, dom, k, Choice{})
		want := naiveDurable(dom, k)
		for d := range back {
			if !bytes.Equal(back[d], forward[k][d]) || !bytes.Equal(back[d], want[d]) {
				t.Fatalf("k=%d disk%d: image depends on visiting order", k, d)
			}
		}
	}
}

func TestCrashPoints(t *testing.T) {
	dom := NewDomain()
	disk := dom.NewDisk(pattern(1024, 0))
	disk.WriteAt([]byte{1}, 0)
	disk.WriteAt([]byte{2}, 1)
	disk.Flush()
	disk.Flush()
	disk.WriteAt([]byte{3}, 2)
	want := []PointKind{
		PointStart,
		PointBetweenWrites,
		PointBeforeFlush,
		PointAfterFlush | PointBeforeFlush,
		PointAfterFlush,
		PointEnd,
	}
	pts := dom.CrashPoints()
	if len(pts) != len(want) {
		t.Fatalf("%d points", len(pts))
	}
	for i, p := range pts {
		if p.K != i || p.Kind != want[i] {
			t.Errorf("point %d: %+v, want kind %b", i, p, want[i])
		}
	}
	if got := dom.FlushPoints(); len(got) != 5 || got[1] != 2 {
		t.Fatalf("flush points %v", got)
	}
}

func TestInjectedErrors(t *testing.T) {
	dom := NewDomain()
	disk := dom.NewDisk(pattern(1024, 0))
	buf := make([]byte, 8)
	isEIO := func(err error) bool { return errors.Is(err, syscall.EIO) && errors.Is(err, ErrInjected) }

	disk.FailRead(2, false)
	for i, wantFail := range []bool{false, true, false} {
		if _, err := disk.ReadAt(buf, 0); isEIO(err) != wantFail {
			t.Fatalf("one-shot read %d: %v", i, err)
		}
	}
	disk.FailRead(1, true)
	for i := range 3 {
		if _, err := disk.ReadAt(buf, 0); !isEIO(err) {
			t.Fatalf("persistent read %d: %v", i, err)
		}
	}
	disk.ClearFaults()
	if _, err := disk.ReadAt(buf, 0); err != nil {
		t.Fatalf("after ClearFaults: %v", err)
	}

	disk.FailWrite(1, false)
	if n, err := disk.WriteAt(pattern(8, 7), 0); n != 0 || !isEIO(err) {
		t.Fatalf("failed write: n=%d %v", n, err)
	}
	if dom.Ops() != 0 || disk.Contents()[0] != 0 {
		t.Fatal("failed write reached the cache or the trace")
	}

	disk.ShortWrite(2, 3)
	if _, err := disk.WriteAt(pattern(8, 5), 0); err != nil {
		t.Fatal(err)
	}
	n, err := disk.WriteAt(pattern(8, 6), 100)
	if n != 3 || !isEIO(err) || !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("short write: n=%d %v", n, err)
	}
	if got := disk.Contents()[100:108]; !bytes.Equal(got, []byte{6, 6, 6, 0, 0, 0, 0, 0}) {
		t.Fatalf("short write contents %v", got)
	}
	if op := dom.Op(1); len(op.Data) != 3 || op.Off != 100 {
		t.Fatalf("short write recorded as %v", op)
	}
	if _, err := disk.WriteAt(pattern(8, 6), 100); err != nil {
		t.Fatalf("short write is one-shot: %v", err)
	}

	disk.FailFlush(1, false)
	if err := disk.Flush(); !isEIO(err) {
		t.Fatalf("failed flush: %v", err)
	}
	if p, _ := dom.Pending(dom.Ops()); len(p) != 3 {
		t.Fatalf("failed flush made writes durable: pending %v", p)
	}
	if err := disk.Flush(); err != nil {
		t.Fatal(err)
	}
	if p, _ := dom.Pending(dom.Ops()); len(p) != 0 {
		t.Fatalf("pending after a good flush: %v", p)
	}
}

// BenchmarkCrashSweep builds one state per crash point of a 4 MiB disk
// with thousands of ops, the harness's typical pattern.
func BenchmarkCrashSweep(b *testing.B) {
	dom := NewDomain()
	disk := dom.NewDisk(make([]byte, 4<<20))
	buf := pattern(4096, 1)
	for i := range 2000 {
		disk.WriteAt(buf, int64(i*4096%(4<<20)))
		if i%8 == 7 {
			disk.Flush()
		}
	}
	pts := dom.FlushPoints()
	b.ResetTimer()
	for range b.N {
		for _, k := range pts {
			states, err := dom.States(k, EnumOptions{MaxStates: 1, Torn: true})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := dom.Image(k, states[0].Choice); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(pts)), "points/op")
}
