package fault

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
)

// Persist says how one pending write reached the medium before the crash.
type Persist struct {
	Op int // trace index of a write pending at the crash point
	// Torn: only some sectors made it. Sectors are counted from 0 over the
	// 512-byte disk sectors the write touches (the first may be partial).
	Torn bool
	// New lists the sectors holding the write's data when Torn; the others
	// hold what they held before the write.
	New []int
	// Garbage lists sectors (disjoint from New) left holding neither old
	// nor new data when Torn: a "shorn" write. The whole 512-byte disk
	// sector is garbage, derived deterministically from Choice.Seed.
	Garbage []int
}

// Choice is one outcome of a power cut: the pending writes that reached the
// medium, in the order they did (it matters where they overlap). Pending
// writes not listed were lost.
type Choice struct {
	Writes []Persist
	Seed   uint64
}

// cursor caches the durable images at one crash point, so building states
// for increasing crash points costs each write once overall.
type cursor struct {
	pos     int
	durable [][]byte
	pending [][]int // per disk: trace indices of writes since its last flush
}

// seek moves the cursor to crash point k (the first k ops done). Caller
// holds d.mu.
func (d *Domain) seek(k int) {
	c := &d.cur
	if k < c.pos || c.durable == nil {
		c.pos = 0
		c.durable = c.durable[:0]
		c.pending = c.pending[:0]
	}
	for len(c.durable) < len(d.disks) {
		c.durable = append(c.durable, bytes.Clone(d.disks[len(c.durable)].initial))
		c.pending = append(c.pending, nil)
	}
	for ; c.pos < k; c.pos++ {
		op := d.ops[c.pos]
		switch op.Kind {
		case OpWrite:
			c.pending[op.Disk] = append(c.pending[op.Disk], c.pos)
		case OpFlush:
			for _, w := range c.pending[op.Disk] {
				wop := d.ops[w]
				copy(c.durable[op.Disk][wop.Off:], wop.Data)
			}
			c.pending[op.Disk] = c.pending[op.Disk][:0:0]
		}
	}
}

func (d *Domain) checkPoint(k int) error {
	if k < 0 || k > len(d.ops) {
		return fmt.Errorf("fault: crash point %d outside [0, %d]", k, len(d.ops))
	}
	return nil
}

// Pending returns the trace indices, in trace order, of the writes (on any
// disk) not yet durable at crash point k.
func (d *Domain) Pending(k int) ([]int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkPoint(k); err != nil {
		return nil, err
	}
	d.seek(k)
	return d.pendingLocked(), nil
}

func (d *Domain) pendingLocked() []int {
	var all []int
	for _, p := range d.cur.pending {
		all = append(all, p...)
	}
	slices.Sort(all)
	return all
}

// sectors returns how many 512-byte disk sectors a write touches.
func sectors(op Op) int {
	if len(op.Data) == 0 {
		return 0
	}
	first := op.Off / SectorSize
	last := (op.Off + int64(len(op.Data)) - 1) / SectorSize
	return int(last - first + 1)
}

// sectorSpan returns, for sector j of a write, the byte range of the disk
// sector and the part of it the write covers.
func sectorSpan(op Op, size int64, j int) (secLo, secHi, lo, hi int64) {
	secLo = (op.Off/SectorSize + int64(j)) * SectorSize
	secHi = min(secLo+SectorSize, size)
	lo = max(secLo, op.Off)
	hi = min(secLo+SectorSize, op.Off+int64(len(op.Data)))
	return
}

// Image builds the image of every disk (indexed by disk number) as a crash
// at point k under c would leave them. Visiting crash points in increasing
// order keeps the cost per state at one copy of each image plus the chosen
// writes.
func (d *Domain) Image(k int, c Choice) ([][]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkPoint(k); err != nil {
		return nil, err
	}
	d.seek(k)
	if err := d.validate(c); err != nil {
		return nil, fmt.Errorf("fault: choice at crash point %d: %w", k, err)
	}
	imgs := make([][]byte, len(d.disks))
	for i, b := range d.cur.durable {
		imgs[i] = bytes.Clone(b)
	}
	for _, p := range c.Writes {
		op := d.ops[p.Op]
		img := imgs[op.Disk]
		if !p.Torn {
			copy(img[op.Off:], op.Data)
			continue
		}
		for _, j := range p.New {
			_, _, lo, hi := sectorSpan(op, int64(len(img)), j)
			copy(img[lo:hi], op.Data[lo-op.Off:hi-op.Off])
		}
		for _, j := range p.Garbage {
			secLo, secHi, lo, hi := sectorSpan(op, int64(len(img)), j)
			old := bytes.Clone(img[secLo:secHi])
			nw := bytes.Clone(old)
			copy(nw[lo-secLo:hi-secLo], op.Data[lo-op.Off:hi-op.Off])
			fillGarbage(img[secLo:secHi], c.Seed, p.Op, j, old, nw)
		}
	}
	return imgs, nil
}

// fillGarbage writes pseudo-random bytes that differ from both the old and
// the new contents of the sector, so a test can rely on garbage being
// neither.
func fillGarbage(dst []byte, seed uint64, op, j int, old, nw []byte) {
	r := rand.New(rand.NewPCG(seed, uint64(op)<<32|uint64(uint32(j))))
	for i := range dst {
		dst[i] = byte(r.Uint32())
	}
	if len(dst) > 0 && (bytes.Equal(dst, old) || bytes.Equal(dst, nw)) {
		// Pick a first byte unlike both; it cannot equal either then.
		for v := 0; v < 256; v++ {
			if byte(v) != old[0] && byte(v) != nw[0] {
				dst[0] = byte(v)
				break
			}
		}
	}
}

// validate checks that c only names pending writes, each once, with
// sector lists inside the write. Caller holds d.mu with the cursor at the
// crash point.
func (d *Domain) validate(c Choice) error {
	pending := map[int]bool{}
	for _, p := range d.cur.pending {
		for _, w := range p {
			pending[w] = true
		}
	}
	seen := map[int]bool{}
	for _, p := range c.Writes {
		if !pending[p.Op] {
			return fmt.Errorf("op %d is not a pending write", p.Op)
		}
		if seen[p.Op] {
			return fmt.Errorf("op %d listed twice", p.Op)
		}
		seen[p.Op] = true
		if !p.Torn {
			if len(p.New) > 0 || len(p.Garbage) > 0 {
				return fmt.Errorf("op %d: sector lists on a write that is not torn", p.Op)
			}
			continue
		}
		n := sectors(d.ops[p.Op])
		used := map[int]bool{}
		for _, j := range append(slices.Clone(p.New), p.Garbage...) {
			if j < 0 || j >= n {
				return fmt.Errorf("op %d: sector %d outside [0, %d)", p.Op, j, n)
			}
			if used[j] {
				return fmt.Errorf("op %d: sector %d listed twice", p.Op, j)
			}
			used[j] = true
		}
	}
	return nil
}

// Describe renders a crash state for failure messages, e.g.
// "k=18 after op 17 (flush disk0): pending {w15 torn s0,s2; w16 dropped}".
func (d *Domain) Describe(k int, c Choice) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkPoint(k); err != nil {
		return err.Error()
	}
	d.seek(k)
	return d.describeLocked(k, d.pendingLocked(), c)
}

func (d *Domain) describeLocked(k int, pending []int, c Choice) string {
	var b strings.Builder
	if k == 0 {
		b.WriteString("k=0 before any op")
	} else {
		fmt.Fprintf(&b, "k=%d after op %d (%s)", k, k-1, d.ops[k-1])
	}
	if len(pending) == 0 {
		b.WriteString(": nothing pending")
		return b.String()
	}
	byOp := map[int]Persist{}
	order := make([]int, 0, len(c.Writes))
	for _, p := range c.Writes {
		byOp[p.Op] = p
		order = append(order, p.Op)
	}
	b.WriteString(": pending {")
	for i, w := range pending {
		if i > 0 {
			b.WriteString("; ")
		}
		p, ok := byOp[w]
		switch {
		case !ok:
			fmt.Fprintf(&b, "w%d dropped", w)
		case !p.Torn:
			fmt.Fprintf(&b, "w%d new", w)
		case len(p.Garbage) == 0:
			fmt.Fprintf(&b, "w%d torn %s", w, sectorList(p.New))
		default:
			fmt.Fprintf(&b, "w%d shorn new %s garbage %s", w, sectorList(p.New), sectorList(p.Garbage))
		}
	}
	b.WriteString("}")
	if !slices.IsSorted(order) {
		b.WriteString(" order ")
		for i, w := range order {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "w%d", w)
		}
	}
	return b.String()
}

// sectorList prints sectors compactly: "s0,s2,s5-9", or "none".
func sectorList(s []int) string {
	if len(s) == 0 {
		return "none"
	}
	s = slices.Clone(s)
	slices.Sort(s)
	var parts []string
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, fmt.Sprintf("s%d", s[i]))
		} else {
			parts = append(parts, fmt.Sprintf("s%d-%d", s[i], s[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
