package vm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
)

// Crash states with a lost volatile cache, the way CrashMonkey (OSDI'18)
// builds them from a recorded block trace: the writes are cut into epochs
// at persistence points; a state keeps every write up to one of them and
// any subset of the writes of the epoch after it, some of them torn at
// sector granularity.
//
// What dm-log-writes records decides what the persistence points are
// (drivers/md/dm-log-writes.c): a write without FUA is logged when a
// later flush completes, spliced in just before that flush's entry, so
// the entries before a flush are exactly the writes it made durable; a
// FUA write is logged as soon as it completes, and is durable then. Both
// are barriers here: at a power cut just before barrier b+1 completes,
// everything up to barrier b is on the medium (the flushes up to b
// completed; so did the FUA writes), and each write logged between b and
// b+1 had completed but sat in the cache, so any subset of it, any
// sectors of each, may have reached the medium. A state never holds a
// write from after b+1, nor drops one before b. (It does not build every
// state: a FUA write lost together with writes completed before it is
// left out, because the log does not say which writes those were.)

// Epoch is a barrier entry of a log and the writes logged after it, up to
// the next barrier.
type Epoch struct {
	Barrier int   // a flush, or a write with FUA
	Writes  []int // entries that write or discard, none a barrier
}

// PartialWrite is one write of an epoch a crash state keeps: whole, or
// only the sectors (of the log's sector size) Sectors says.
type PartialWrite struct {
	Entry   int
	Sectors []bool // nil: every sector
}

// CrashState is one disk a power cut can leave: entries up to and
// including Prefix (a barrier) durable, and of the epoch after it the
// writes listed, as listed.
type CrashState struct {
	Prefix int
	Writes []PartialWrite
	Torn   int // how many of Writes lost some of their sectors
	Of     int // how many writes the epoch had
}

func (s CrashState) String() string {
	return fmt.Sprintf("prefix %d + %d of %d writes (%d torn)", s.Prefix, len(s.Writes), s.Of, s.Torn)
}

func (l *WriteLog) isWrite(i int) bool {
	e := l.Entries[i]
	return e.Flags&LogMark == 0 && e.NrSectors > 0
}

func (l *WriteLog) isBarrier(i int) bool {
	e := l.Entries[i]
	return e.Flags&LogFlush != 0 || (e.Flags&LogFUA != 0 && l.isWrite(i))
}

// Epochs returns the epochs of the barriers in [from, to). It checks the
// log has the shape the model above relies on and errors if not: a write
// without FUA is followed, before any FUA write, by a flush (or by the
// end of the log, where the target was removed), and no flush carries data
// (device-mapper splits a flush off the data it came with).
func (l *WriteLog) Epochs(from, to int) ([]Epoch, error) {
	pendingSince := -1 // a write without FUA not yet followed by a flush
	for i, e := range l.Entries {
		switch {
		case e.Flags&LogFlush != 0:
			if e.NrSectors != 0 {
				return nil, fmt.Errorf("entry %d: a flush carrying %d sectors of data", i, e.NrSectors)
			}
			pendingSince = -1
		case l.isBarrier(i):
			if pendingSince >= 0 {
				return nil, fmt.Errorf("entry %d: a FUA write logged after entry %d, a write no flush has covered yet", i, pendingSince)
			}
		case l.isWrite(i) && pendingSince < 0:
			pendingSince = i
		}
	}
	var out []Epoch
	for i := max(from, 0); i < to && i < len(l.Entries); i++ {
		if !l.isBarrier(i) {
			continue
		}
		ep := Epoch{Barrier: i}
		for j := i + 1; j < len(l.Entries) && !l.isBarrier(j); j++ {
			if l.isWrite(j) {
				ep.Writes = append(ep.Writes, j)
			}
		}
		out = append(out, ep)
	}
	return out, nil
}

// ChooseCrashStates picks n crash states from epochs, spread over them:
// epochs with writes after their barrier are cut into n runs of
// consecutive ones and one epoch is drawn from each run (with fewer such
// epochs than n, each is used more than once). Of the epoch's writes each
// is kept with probability one half; a kept write of several sectors
// loses a random part of them (never all) with probability one third.
// The same rng state gives the same states.
func (l *WriteLog) ChooseCrashStates(rng *rand.Rand, epochs []Epoch, n int) []CrashState {
	var busy []Epoch
	for _, ep := range epochs {
		if len(ep.Writes) > 0 {
			busy = append(busy, ep)
		}
	}
	if len(busy) == 0 || n <= 0 {
		return nil
	}
	out := make([]CrashState, 0, n)
	seen := map[string]bool{}
	for k := range n {
		lo, hi := k*len(busy)/n, (k+1)*len(busy)/n
		if hi <= lo {
			hi = lo + 1
		}
		// A state drawn before is drawn again (from this run of epochs,
		// then from any): n counts distinct states. Small epochs have
		// few subsets, so give up after a while rather than loop.
		for try := 0; try < 64; try++ {
			ep := busy[lo+rng.IntN(hi-lo)]
			if try >= 32 {
				ep = busy[rng.IntN(len(busy))]
			}
			st := l.drawState(rng, ep)
			if key := st.key(); !seen[key] {
				seen[key] = true
				out = append(out, st)
				break
			}
		}
	}
	slices.SortStableFunc(out, func(a, b CrashState) int { return a.Prefix - b.Prefix })
	return out
}

// drawState keeps each write of ep with probability one half, and tears
// a kept write of several sectors with probability one third.
func (l *WriteLog) drawState(rng *rand.Rand, ep Epoch) CrashState {
	st := CrashState{Prefix: ep.Barrier, Of: len(ep.Writes)}
	for _, w := range ep.Writes {
		if rng.IntN(2) == 0 {
			continue
		}
		pw := PartialWrite{Entry: w}
		if nr := int(l.Entries[w].NrSectors); nr > 1 && rng.IntN(3) == 0 {
			pw.Sectors = make([]bool, nr)
			kept := 0
			for s := range pw.Sectors {
				pw.Sectors[s] = rng.IntN(2) == 0
				if pw.Sectors[s] {
					kept++
				}
			}
			switch kept {
			case 0:
				pw.Sectors[rng.IntN(nr)] = true
			case nr:
				pw.Sectors[rng.IntN(nr)] = false
			}
			st.Torn++
		}
		st.Writes = append(st.Writes, pw)
	}
	return st
}

func (s CrashState) key() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", s.Prefix)
	for _, w := range s.Writes {
		fmt.Fprintf(&b, " %d:", w.Entry)
		for _, k := range w.Sectors {
			if k {
				b.WriteByte('1')
			} else {
				b.WriteByte('0')
			}
		}
	}
	return b.String()
}

// CopyPlan is what a guest copies to build a state: lines "SRC DST LEN" in
// bytes, SRC an offset in the log device (-1: write zeros, for a discard),
// DST one in the logged device. The guest program lwapply runs it.
type CopyPlan struct{ b strings.Builder }

func (p *CopyPlan) add(src, dst, n int64) { fmt.Fprintf(&p.b, "%d %d %d\n", src, dst, n) }

func (p *CopyPlan) Bytes() []byte { return []byte(p.b.String()) }

// addEntry adds entry i, or the sectors of it mask keeps (nil: all).
func (l *WriteLog) addEntry(p *CopyPlan, i int, mask []bool) {
	e := l.Entries[i]
	ss := int64(l.SectorSize)
	for s := int64(0); s < int64(e.NrSectors); {
		if mask != nil && !mask[s] {
			s++
			continue
		}
		run := int64(1)
		for s+run < int64(e.NrSectors) && (mask == nil || mask[s+run]) {
			run++
		}
		src := int64(-1)
		if e.Flags&LogDiscard == 0 {
			src = e.dataOff + s*ss
		}
		p.add(src, (int64(e.Sector)+s)*ss, run*ss)
		s += run
	}
}

// PrefixPlan copies every write of entries (from, to].
func (l *WriteLog) PrefixPlan(from, to int) *CopyPlan {
	p := &CopyPlan{}
	for i := from + 1; i <= to; i++ {
		if l.isWrite(i) {
			l.addEntry(p, i, nil)
		}
	}
	return p
}

// StatePlan copies what s keeps of the epoch after its prefix.
func (l *WriteLog) StatePlan(s CrashState) *CopyPlan {
	p := &CopyPlan{}
	for _, w := range s.Writes {
		l.addEntry(p, w.Entry, w.Sectors)
	}
	return p
}

// StateWrites reports whether s (its prefix or the writes it keeps)
// writes any byte of [off, off+n) of the logged device.
func (l *WriteLog) StateWrites(s CrashState, off, n int64) bool {
	if l.Writes(s.Prefix, off, n) {
		return true
	}
	ss := int64(l.SectorSize)
	for _, w := range s.Writes {
		e := l.Entries[w.Entry]
		for k := int64(0); k < int64(e.NrSectors); k++ {
			if w.Sectors != nil && !w.Sectors[k] {
				continue
			}
			at := (int64(e.Sector) + k) * ss
			if at < off+n && off < at+ss {
				return true
			}
		}
	}
	return false
}
