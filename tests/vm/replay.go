package vm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// The on-disk format of a dm-log-writes log (kernel
// drivers/md/dm-log-writes.c, Documentation/admin-guide/device-mapper/
// log-writes.rst): a super block at byte 0, then for each entry one sector
// holding the entry header (and, for a mark, its name), followed by the
// data written, nr_sectors sectors of it; discards carry no data. Every
// sector here is the logged device's logical sector size, from the super.
// Writes are logged once a flush covering them completed (FUA writes at
// once), so replaying a prefix of the log that ends at a flush gives the
// disk a power cut at that moment leaves when the disk's volatile cache is
// lost.
const (
	LogFlush    = 1 << 0 // the entry is a flush: every earlier entry is durable
	LogFUA      = 1 << 1
	LogDiscard  = 1 << 2
	LogMark     = 1 << 3 // a named mark from `dmsetup message DEV 0 mark NAME`
	LogMetadata = 1 << 4

	logWritesMagic   = 0x6a736677736872
	logWritesVersion = 1
	logSuperLen      = 28 // magic, version, nr_entries (le64 each), sectorsize (le32)
	logEntryLen      = 32 // sector, nr_sectors, flags, data_len (le64 each)
)

// LogEntry is one entry of a dm-log-writes log.
type LogEntry struct {
	Sector    uint64 // first sector written, in the log's sector size
	NrSectors uint64
	Flags     uint64
	Mark      string // for LogMark entries
	dataOff   int64  // where the data sits in the log
}

// WriteLog is a parsed dm-log-writes log; the data stays in the log and is
// read as entries are replayed.
type WriteLog struct {
	SectorSize int
	Entries    []LogEntry
	r          io.ReaderAt
}

// ParseWriteLog reads the entries of the log in r. It trusts the super's
// entry count, which the kernel updates at every FUA write and mark, and
// when the target is removed: remove the log-writes device before reading
// its log.
func ParseWriteLog(r io.ReaderAt) (*WriteLog, error) {
	sup := make([]byte, logSuperLen)
	if _, err := r.ReadAt(sup, 0); err != nil {
		return nil, fmt.Errorf("log-writes super: %w", err)
	}
	if m := binary.LittleEndian.Uint64(sup); m != logWritesMagic {
		return nil, fmt.Errorf("log-writes super: magic %#x, want %#x", m, logWritesMagic)
	}
	if v := binary.LittleEndian.Uint64(sup[8:]); v != logWritesVersion {
		return nil, fmt.Errorf("log-writes super: version %d, want %d", v, logWritesVersion)
	}
	n := binary.LittleEndian.Uint64(sup[16:])
	ss := int64(binary.LittleEndian.Uint32(sup[24:]))
	if ss < 512 || ss&(ss-1) != 0 || ss > 1<<16 {
		return nil, fmt.Errorf("log-writes super: sector size %d", ss)
	}
	l := &WriteLog{SectorSize: int(ss), r: r}
	hdr := make([]byte, ss)
	pos := ss
	for i := uint64(0); i < n; i++ {
		if _, err := r.ReadAt(hdr, pos); err != nil {
			return nil, fmt.Errorf("log-writes entry %d at byte %d: %w", i, pos, err)
		}
		e := LogEntry{
			Sector:    binary.LittleEndian.Uint64(hdr),
			NrSectors: binary.LittleEndian.Uint64(hdr[8:]),
			Flags:     binary.LittleEndian.Uint64(hdr[16:]),
		}
		dataLen := binary.LittleEndian.Uint64(hdr[24:])
		pos += ss
		switch {
		case e.Flags&LogMark != 0:
			if dataLen > uint64(ss-logEntryLen) {
				return nil, fmt.Errorf("log-writes entry %d: mark of %d bytes", i, dataLen)
			}
			e.Mark = string(hdr[logEntryLen : logEntryLen+dataLen])
		case dataLen != 0:
			// The kernel logs private data only for marks.
			return nil, fmt.Errorf("log-writes entry %d: %d bytes of inline data, not a mark", i, dataLen)
		}
		if e.Flags&LogDiscard == 0 {
			e.dataOff = pos
			pos += int64(e.NrSectors) * ss
		}
		l.Entries = append(l.Entries, e)
	}
	return l, nil
}

// Mark returns the index of the first mark entry called name, or -1.
func (l *WriteLog) Mark(name string) int {
	for i, e := range l.Entries {
		if e.Flags&LogMark != 0 && e.Mark == name {
			return i
		}
	}
	return -1
}

// Flushes returns the indexes of the flush entries in [from, to).
func (l *WriteLog) Flushes(from, to int) []int {
	var out []int
	for i := max(from, 0); i < to && i < len(l.Entries); i++ {
		if l.Entries[i].Flags&LogFlush != 0 {
			out = append(out, i)
		}
	}
	return out
}

// Writes reports whether an entry in [0, upto] wrote or discarded any
// sector of the byte range [off, off+n) of the logged device.
func (l *WriteLog) Writes(upto int, off, n int64) bool {
	ss := int64(l.SectorSize)
	for i := 0; i <= upto && i < len(l.Entries); i++ {
		e := l.Entries[i]
		if e.Flags&LogMark != 0 || e.NrSectors == 0 {
			continue
		}
		s, end := int64(e.Sector)*ss, int64(e.Sector+e.NrSectors)*ss
		if s < off+n && off < end {
			return true
		}
	}
	return false
}

// Replayer applies a log to an image entry by entry.
type Replayer struct {
	log  *WriteLog
	img  io.WriterAt
	next int // first entry not applied yet
	buf  []byte
}

// NewReplayer replays l onto img, which must hold the logged device as it
// was when logging started.
func NewReplayer(l *WriteLog, img io.WriterAt) *Replayer {
	return &Replayer{log: l, img: img}
}

// To applies every entry up to and including index upto. Discarded ranges
// are zeroed: what a discarded sector reads back is up to the device, and
// zeros are one thing it may return.
func (p *Replayer) To(upto int) error {
	if upto >= len(p.log.Entries) {
		return fmt.Errorf("replay to entry %d: the log has %d", upto, len(p.log.Entries))
	}
	if upto < p.next-1 {
		return errors.New("replay cannot go backwards")
	}
	ss := int64(p.log.SectorSize)
	for ; p.next <= upto; p.next++ {
		e := p.log.Entries[p.next]
		if e.NrSectors == 0 || e.Flags&LogMark != 0 {
			continue
		}
		n := int64(e.NrSectors) * ss
		if int64(cap(p.buf)) < n {
			p.buf = make([]byte, n)
		}
		b := p.buf[:n]
		if e.Flags&LogDiscard != 0 {
			clear(b)
		} else if _, err := p.log.r.ReadAt(b, e.dataOff); err != nil {
			return fmt.Errorf("replay entry %d: read data at byte %d: %w", p.next, e.dataOff, err)
		}
		if _, err := p.img.WriteAt(b, int64(e.Sector)*ss); err != nil {
			return fmt.Errorf("replay entry %d: %w", p.next, err)
		}
	}
	return nil
}

// ReplayStates writes, for each index in points (ascending), a copy of
// base with the log replayed up to and including that entry, to the path
// out returns for it.
func ReplayStates(l *WriteLog, base string, points []int, out func(k int) string) error {
	work, err := os.CreateTemp("", "replay-")
	if err != nil {
		return err
	}
	defer os.Remove(work.Name())
	defer work.Close()
	src, err := os.Open(base)
	if err != nil {
		return err
	}
	_, err = io.Copy(work, src)
	src.Close()
	if err != nil {
		return err
	}
	p := NewReplayer(l, work)
	for k, pt := range points {
		if err := p.To(pt); err != nil {
			return err
		}
		if err := copyFile(work, out(k)); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src *os.File, dst string) error {
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
