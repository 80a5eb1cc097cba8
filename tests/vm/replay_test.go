package vm

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// logBuilder writes a dm-log-writes log as the kernel lays it out, from
// the format in drivers/md/dm-log-writes.c, independently of the parser.
type logBuilder struct {
	ss      int
	entries [][]byte
}

func (b *logBuilder) add(sector, nr, flags uint64, mark string, data []byte) {
	e := make([]byte, b.ss)
	binary.LittleEndian.PutUint64(e, sector)
	binary.LittleEndian.PutUint64(e[8:], nr)
	binary.LittleEndian.PutUint64(e[16:], flags)
	binary.LittleEndian.PutUint64(e[24:], uint64(len(mark)))
	copy(e[32:], mark)
	b.entries = append(b.entries, append(e, data...))
}

func (b *logBuilder) bytes(nrEntries int) []byte {
	sup := make([]byte, b.ss)
	binary.LittleEndian.PutUint64(sup, logWritesMagic)
	binary.LittleEndian.PutUint64(sup[8:], logWritesVersion)
	binary.LittleEndian.PutUint64(sup[16:], uint64(nrEntries))
	binary.LittleEndian.PutUint32(sup[24:], uint32(b.ss))
	out := sup
	for _, e := range b.entries {
		out = append(out, e...)
	}
	return out
}

func fill(n int, v byte) []byte { return bytes.Repeat([]byte{v}, n) }

// TestReplayWriteLog builds a log of writes, a discard, marks, a FUA write
// and flushes (one carrying data), and checks that parsing finds each
// entry and that replaying to each flush gives exactly the image the
// entries before it make.
func TestReplayWriteLog(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		b := &logBuilder{ss: ss}
		b.add(0, 2, 0, "", fill(2*ss, 'a'))         // 0
		b.add(5, 1, LogMetadata, "", fill(ss, 'b')) // 1
		b.add(0, 0, LogFlush, "", nil)              // 2
		b.add(0, 0, LogMark, "start", nil)          // 3
		b.add(1, 1, LogDiscard, "", nil)            // 4: no data follows
		b.add(3, 1, LogFUA, "", fill(ss, 'c'))      // 5
		b.add(6, 2, LogFlush, "", fill(2*ss, 'd'))  // 6: a flush with data
		b.add(0, 1, 0, "", fill(ss, 'e'))           // 7: never flushed
		b.add(0, 0, LogMark, "end", nil)            // 8
		raw := b.bytes(len(b.entries))

		l, err := ParseWriteLog(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if l.SectorSize != ss || len(l.Entries) != 9 {
			t.Fatalf("sector size %d, %d entries; want %d, 9", l.SectorSize, len(l.Entries), ss)
		}
		if l.Mark("start") != 3 || l.Mark("end") != 8 || l.Mark("nope") != -1 {
			t.Errorf("marks at %d, %d, %d", l.Mark("start"), l.Mark("end"), l.Mark("nope"))
		}
		if got := l.Flushes(0, len(l.Entries)); len(got) != 2 || got[0] != 2 || got[1] != 6 {
			t.Errorf("flushes %v, want [2 6]", got)
		}
		if got := l.Flushes(3, 6); len(got) != 0 {
			t.Errorf("flushes in [3, 6) %v, want none", got)
		}
		if !l.Writes(6, int64(6*ss), 1) || l.Writes(5, int64(6*ss), int64(2*ss)) || !l.Writes(4, int64(ss), 1) {
			t.Errorf("Writes does not see which entries touched which range")
		}

		img := func(sectors map[int]byte) []byte {
			out := make([]byte, 10*ss)
			copy(out, fill(10*ss, 'z'))
			for s, v := range sectors {
				copy(out[s*ss:], fill(ss, v))
			}
			return out
		}
		base := filepath.Join(t.TempDir(), "base.img")
		if err := os.WriteFile(base, img(nil), 0o644); err != nil {
			t.Fatal(err)
		}
		want := []struct {
			upto  int
			image []byte
		}{
			{2, img(map[int]byte{0: 'a', 1: 'a', 5: 'b'})},
			{6, img(map[int]byte{0: 'a', 1: 0, 3: 'c', 5: 'b', 6: 'd', 7: 'd'})},
			{8, img(map[int]byte{0: 'e', 1: 0, 3: 'c', 5: 'b', 6: 'd', 7: 'd'})},
		}
		var points []int
		for _, w := range want {
			points = append(points, w.upto)
		}
		dir := t.TempDir()
		out := func(k int) string { return filepath.Join(dir, string(rune('0'+k))+".img") }
		if err := ReplayStates(l, base, points, out); err != nil {
			t.Fatal(err)
		}
		for k, w := range want {
			got, err := os.ReadFile(out(k))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, w.image) {
				t.Errorf("sector size %d: replay to entry %d gives the wrong image", ss, w.upto)
			}
		}

		// The super's count bounds the entries: a log whose super lags
		// (no FUA or mark since) shows only what it counts.
		short, err := ParseWriteLog(bytes.NewReader(b.bytes(3)))
		if err != nil || len(short.Entries) != 3 {
			t.Errorf("a super counting 3 entries gave %v entries, err %v", len(short.Entries), err)
		}
		// Going backwards is refused rather than silently producing a
		// later state.
		r := NewReplayer(l, &discardWriter{})
		if err := r.To(6); err != nil {
			t.Fatal(err)
		}
		if err := r.To(2); err == nil {
			t.Errorf("replaying backwards was not refused")
		}
		if err := r.To(9); err == nil {
			t.Errorf("replaying past the end was not refused")
		}
	}

	bad := (&logBuilder{ss: 512}).bytes(0)
	bad[0] ^= 1
	if _, err := ParseWriteLog(bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Errorf("a log with a bad magic parsed: %v", err)
	}
	trunc := &logBuilder{ss: 512}
	trunc.add(0, 4, 0, "", fill(512, 'x')) // says 4 sectors, carries 1
	trunc.add(0, 0, LogFlush, "", nil)
	if _, err := ParseWriteLog(bytes.NewReader(trunc.bytes(2))); err == nil {
		t.Errorf("a truncated log parsed")
	}
}

type discardWriter struct{}

func (discardWriter) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
