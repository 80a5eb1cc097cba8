package vm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// applyPlan does on the host what the guest's lwapply does with a plan.
func applyPlan(t *testing.T, img, logRaw []byte, p *CopyPlan) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(string(p.Bytes())), "\n") {
		if line == "" {
			continue
		}
		var src, dst, n int64
		if _, err := fmt.Sscan(line, &src, &dst, &n); err != nil {
			t.Fatalf("plan line %q: %v", line, err)
		}
		if src < 0 {
			clear(img[dst : dst+n])
		} else {
			copy(img[dst:dst+n], logRaw[src:src+n])
		}
	}
}

// crashLog is a log as the kernel writes one (writes before the flush
// that covers them, FUA writes on their own), with a value per entry so
// that each sector of the replayed image names the entry that wrote it.
func crashLog(ss int) (*logBuilder, [][2]uint64) {
	b := &logBuilder{ss: ss}
	var where [][2]uint64 // entry -> first sector, sectors (0,0 if none)
	add := func(sector, nr, flags uint64) {
		var data []byte
		if flags&(LogDiscard|LogMark|LogFlush) == 0 {
			data = fill(int(nr)*ss, byte('A'+len(b.entries)))
		}
		b.add(sector, nr, flags, "", data)
		where = append(where, [2]uint64{sector, nr})
	}
	add(0, 4, 0)          // 0
	add(0, 0, LogFlush)   // 1: barrier
	add(8, 1, LogFUA)     // 2: barrier
	add(4, 3, 0)          // 3
	add(0, 2, 0)          // 4: overwrites part of 0
	add(9, 2, LogDiscard) // 5
	add(0, 0, LogFlush)   // 6: barrier
	add(0, 0, LogFlush)   // 7: barrier, nothing after it
	add(12, 4, 0)         // 8
	add(2, 1, 0)          // 9
	add(0, 0, LogFlush)   // 10: barrier
	add(16, 2, 0)         // 11: never flushed
	return b, where
}

func TestCrashStatesFollowTheLog(t *testing.T) {
	const ss = 512
	b, _ := crashLog(ss)
	raw := b.bytes(len(b.entries))
	l, err := ParseWriteLog(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	eps, err := l.Epochs(0, len(l.Entries))
	if err != nil {
		t.Fatal(err)
	}
	want := []Epoch{{1, nil}, {2, []int{3, 4, 5}}, {6, nil}, {7, []int{8, 9}}, {10, []int{11}}}
	if fmt.Sprint(eps) != fmt.Sprint(want) {
		t.Fatalf("epochs %v, want %v", eps, want)
	}

	const n = 40
	states := l.ChooseCrashStates(rand.New(rand.NewPCG(7, 8)), eps, n)
	again := l.ChooseCrashStates(rand.New(rand.NewPCG(7, 8)), eps, n)
	if fmt.Sprint(states) != fmt.Sprint(again) || len(states) == 0 {
		t.Fatalf("the same seed chose different states (or none): %v / %v", states, again)
	}
	seen := map[string]bool{}
	var torn, gaps int
	size := int64(32 * ss)
	for _, st := range states {
		if seen[st.key()] {
			t.Errorf("state %v drawn twice", st)
		}
		seen[st.key()] = true
		var ep *Epoch
		for i := range eps {
			if eps[i].Barrier == st.Prefix {
				ep = &eps[i]
			}
		}
		if ep == nil || len(ep.Writes) == 0 {
			t.Fatalf("state %v does not start at a barrier with writes after it", st)
		}
		// The image the state describes, built independently of the
		// plans: the prefix replayed, then each kept sector from the
		// entry's own bytes.
		wantImg := make([]byte, size)
		rp := NewReplayer(l, writerAt(wantImg))
		if err := rp.To(st.Prefix); err != nil {
			t.Fatal(err)
		}
		last := -1
		for _, w := range st.Writes {
			if !containsInt(ep.Writes, w.Entry) || w.Entry <= last {
				t.Fatalf("state %v keeps entry %d, not a later write of its epoch %v", st, w.Entry, ep.Writes)
			}
			if w.Entry > ep.Writes[0] && !st.keeps(ep.Writes[0]) {
				gaps++ // a later write kept, an earlier one lost: not a prefix
			}
			last = w.Entry
			e := l.Entries[w.Entry]
			if w.Sectors != nil {
				torn++
				k := 0
				for _, s := range w.Sectors {
					if s {
						k++
					}
				}
				if len(w.Sectors) != int(e.NrSectors) || k == 0 || k == len(w.Sectors) {
					t.Fatalf("state %v tears entry %d into %v: not some but not all of its %d sectors", st, w.Entry, w.Sectors, e.NrSectors)
				}
			}
			for s := uint64(0); s < e.NrSectors; s++ {
				if w.Sectors != nil && !w.Sectors[s] {
					continue
				}
				v := byte('A' + w.Entry)
				if e.Flags&LogDiscard != 0 {
					v = 0
				}
				copy(wantImg[(e.Sector+s)*ss:], fill(ss, v))
			}
		}
		got := make([]byte, size)
		applyPlan(t, got, raw, l.PrefixPlan(-1, st.Prefix))
		applyPlan(t, got, raw, l.StatePlan(st))
		if !bytes.Equal(got, wantImg) {
			t.Fatalf("state %v: the plans build a different image than the state describes", st)
		}
		// Entry 11 (sectors 16, 17) comes after barrier 10: only a state
		// starting there may hold it.
		if l.StateWrites(st, 16*ss, 2*ss) != (st.Prefix == 10 && len(st.Writes) > 0) {
			t.Errorf("state %v: StateWrites says entry 11 is there %v", st, l.StateWrites(st, 16*ss, 2*ss))
		}
	}
	if torn == 0 || gaps == 0 {
		t.Errorf("%d states, %d torn writes, %d states keeping a write after a lost one: the choice is too narrow", len(states), torn, gaps)
	}
	t.Logf("%d distinct states of %d asked, %d torn writes, %d non-prefix subsets", len(states), n, torn, gaps)
}

// The model holds only for logs shaped as dm-log-writes writes them:
// anything else must stop the test, not yield states a disk cannot have.
func TestCrashStatesRefuseOtherLogs(t *testing.T) {
	for name, build := range map[string]func(b *logBuilder){
		"FUA before the flush of an earlier write": func(b *logBuilder) {
			b.add(0, 1, 0, "", fill(512, 'a'))
			b.add(1, 1, LogFUA, "", fill(512, 'b'))
			b.add(0, 0, LogFlush, "", nil)
		},
		"flush with data": func(b *logBuilder) {
			b.add(0, 1, LogFlush, "", fill(512, 'a'))
		},
	} {
		b := &logBuilder{ss: 512}
		build(b)
		l, err := ParseWriteLog(bytes.NewReader(b.bytes(len(b.entries))))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Epochs(0, len(l.Entries)); err == nil {
			t.Errorf("%s: Epochs accepted the log", name)
		}
	}
}

func (s CrashState) keeps(entry int) bool {
	for _, w := range s.Writes {
		if w.Entry == entry {
			return true
		}
	}
	return false
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

type writerAt []byte

func (w writerAt) WriteAt(p []byte, off int64) (int, error) { return copy(w[off:], p), nil }
