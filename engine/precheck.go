package engine

import (
	"errors"
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// checkBeforeCreate is everything a new conversion checks on the devices
// before its first write (docs/DESIGN.md, "What is checked before the
// first write"): that no conversion's header is elsewhere, that the
// metadata area holds nothing of the user's, and that the data is under
// the old mapping as given. fresh: the metadata holds no cryptshift header
// at all. force skips what the user may overrule; sized: --data-size was
// given.
func (c *conv) checkBeforeCreate(om sectorcipher.Mapping, fresh, force, sized bool) error {
	where := "at the end of the device"
	if !c.t.MetaOnData {
		where = "in the --metadata given"
	}
	if fresh && !force && !c.t.MetaOnData && c.t.Data.Size() >= 2*header.Size {
		s, err := header.ReadStore(c.t.Data)
		if err != nil {
			return errclass.IOf("look for a header at the end of the device", err)
		}
		if _, err := s.Current(nil); !errors.Is(err, header.ErrNoHeader) {
			return fmt.Errorf("%w: a cryptshift header is at the end of DEVICE, not in --metadata: leave out --metadata to resume that conversion (--force starts a new one)", errclass.Header)
		}
	}
	if force {
		return nil
	}
	// The data first: a half-converted device is the likelier story than
	// user data in the metadata area, and its message says where to look.
	if !c.keyVerified {
		if err := c.checkPlausible(om, where); err != nil {
			return err
		}
	}
	if !fresh {
		return nil // the metadata holds an earlier conversion of ours
	}
	if c.t.MetaOnData {
		if sized {
			// --data-size is the user's word that the data ends before
			// the area (what the refusal below asks for).
			return nil
		}
		return c.checkAreaFree()
	}
	return c.checkMetaEmpty()
}

// checkMetaEmpty refuses a separate metadata file or device that holds
// anything but zeros: it has no cryptshift header, so it is someone's data.
func (c *conv) checkMetaEmpty() error {
	m := c.t.Meta
	// The header slots are left out: a crash in the first commit can
	// leave part of a copy there that reads as no header at all.
	end := m.Size() - 2*header.Size
	buf := make([]byte, 1<<20)
	for off := int64(0); off < end; off += int64(len(buf)) {
		n := min(int64(len(buf)), end-off)
		if _, err := m.ReadAt(buf[:n], off); err != nil {
			return errclass.IOf("read metadata device", err)
		}
		for i, b := range buf[:n] {
			if b != 0 {
				return fmt.Errorf("%w: --metadata holds data (byte %d is not zero) but no cryptshift header: it would be overwritten; give a new or zeroed file (--force overwrites it)", errclass.Device, off+int64(i))
			}
		}
	}
	return nil
}

// checkAreaFree refuses to take the end of the data device for the
// metadata area when what is there decrypts plausibly under the old
// mapping: a filesystem that was not shrunk still has data there. Zeros,
// and bytes that decrypt to noise, are free.
func (c *conv) checkAreaFree() error {
	base := int64(c.h.OldOffset)
	first := alignUp(int64(c.h.MetaOffset)-base, sampleBlock)
	// Not the header slots (see checkMetaEmpty).
	end := c.t.Data.Size() - 2*header.Size - base
	found := 0
	var firstAt int64
	const chunkLen = 1 << 20
	buf := make([]byte, chunkLen)
	for off := first; off+sampleBlock <= end; off += chunkLen {
		n := min(chunkLen, (end-off)/sampleBlock*sampleBlock)
		if _, err := c.t.Data.ReadAt(buf[:n], base+off); err != nil {
			return errclass.IOf("read the metadata area", err)
		}
		for at := int64(0); at < n; at += sampleBlock {
			b := newBlock(off+at, buf[at:at+sampleBlock])
			if b.evidence == 0 {
				continue
			}
			m, _ := b.plausible(c.oldC)
			if k := popcount(m); k > 0 {
				if found == 0 {
					firstAt = base + off + at
				}
				found += k
			}
		}
	}
	if found < minGain {
		return nil
	}
	areaLen := c.t.Data.Size() - int64(c.h.MetaOffset)
	return fmt.Errorf("%w: the last %s of the device, where the metadata area goes, hold data (%d sectors from byte %d decrypt under the old mapping): shrink the filesystem to at most %d bytes and pass --data-size %d, or keep the metadata on another device with --metadata",
		errclass.Device, mib(areaLen), found, firstAt, c.h.DataSize, c.h.DataSize)
}

func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
