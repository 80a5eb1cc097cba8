package engine

import (
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
)

// windowEvidence samples window w at its old place under the old mapping
// and at its new place under the new one. oldGain counts the sub-sectors
// the old mapping explains and the new does not, newGain the reverse; a
// window that is what the header says has no gain on the wrong side,
// whatever its content (random-looking data has no gain on either).
func (c *conv) windowEvidence(w uint64) (oldGain, newGain, newPlausible int, err error) {
	start, n := c.windowRange(w)
	offs := spread(start, n, windowSamples, 1)
	olds, err := c.readBlocks(int64(c.h.OldOffset), offs)
	if err != nil {
		return 0, 0, 0, err
	}
	news := olds
	if c.h.NewOffset != c.h.OldOffset {
		if news, err = c.readBlocks(int64(c.h.NewOffset), offs); err != nil {
			return 0, 0, 0, err
		}
	}
	for i := range olds {
		om, _ := olds[i].plausible(c.oldC)
		nm, _ := news[i].plausible(c.newC)
		oldGain += gain(om, nm)
		newGain += gain(nm, om)
		newPlausible += popcount(nm)
	}
	return oldGain, newGain, newPlausible, nil
}

// checkProgress compares the recorded progress with the device before
// recovery or a resume writes anything: the last window the record calls
// converted must not still be under the old mapping (the metadata is of
// another device, or ahead of this one), and the first it calls
// unconverted must not be under the new one already (the metadata is an
// older copy, restored from a backup or snapshot, and resuming from it
// would convert windows a second time; the first check is in place only).
// done counts durable windows;
// inFlight says window done may be half written, so the next is checked.
func (c *conv) checkProgress(done uint64, inFlight bool) error {
	total := c.h.Windows()
	// With shift the source of a converted window stays intact until a
	// later window overwrites it, so the old mapping explains it as well
	// as ever, and a torn write into its new place would look like a
	// window never converted: there the identity check speaks for the
	// last converted window instead.
	if done > 0 && c.h.NewOffset == c.h.OldOffset {
		w := c.windowAt(done - 1)
		og, _, _, err := c.windowEvidence(w)
		if err != nil {
			return err
		}
		// A window accepted as damaged may be half old; its digest entry
		// then records it as it is.
		if og >= minGain && !c.matchesOrErr(w, &err) {
			if err != nil {
				return err
			}
			return fmt.Errorf("%w: window %d (%s) is recorded as converted but still decrypts under the old key: this metadata is not of this device", errclass.Device, w, c.windowBytes(w))
		}
	}
	next := done
	if inFlight {
		next++
	}
	if next < total {
		w := c.windowAt(next)
		_, ng, _, err := c.windowEvidence(w)
		if err != nil {
			return err
		}
		if ng >= minGain {
			return fmt.Errorf("%w: window %d (%s) already decrypts under the new key, but the header records only %d of %d windows converted: this header is older than the conversion (a restored copy of the metadata?); resuming from it would convert windows twice", errclass.Header, w, c.windowBytes(w), done, total)
		}
	}
	return nil
}

// windowBytes names a window's range for messages.
func (c *conv) windowBytes(w uint64) string {
	start, n := c.windowRange(w)
	return fmt.Sprintf("bytes [%d, %d) of the data, sectors %d-%d", start, start+n, start/512, (start+n)/512-1)
}

// recordAsIs writes window w's digest entry for what the window holds now,
// read under the new mapping, and flushes it: accepting a damaged window
// as it is. A crash before the flush leaves the old entry or this one,
// and the caller only advances the progress after it, so a rerun
// finds the window unaccepted and does this again.
func (c *conv) recordAsIs(w uint64, point string) error {
	start, n := c.windowRange(w)
	buf := make([]byte, n)
	if _, err := c.t.Data.ReadAt(buf, int64(c.h.NewOffset)+start); err != nil {
		return errclass.IOf(fmt.Sprintf("read window %d", w), err)
	}
	e := header.DigestEntry(c.macKey, w, c.plainDigest(buf, w, start, c.newC))
	if _, err := c.t.Meta.WriteAt(e[:], c.digestOffset(w)); err != nil {
		return errclass.IOf("write digest", err)
	}
	return c.flush(c.t.Meta, point)
}

// matchesOrErr is digestMatches for use in a condition; an error is
// stored in *err and counts as no match.
func (c *conv) matchesOrErr(w uint64, err *error) bool {
	ok, e := c.digestMatches(w)
	*err = e
	return ok
}
