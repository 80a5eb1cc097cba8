package engine

import (
	"fmt"
	"math/bits"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// verdict is what the samples of a first conversion say.
type verdict struct {
	evidence, given int // evidence sub-sectors, and those the given mapping explains
	newGain         int // sub-sectors the new mapping explains better
	firstNew        int64
	window0New      bool // window 0 is among them
	best            *hypothesis
	bestGain        int
	cbcHeads        int // zeroed CBC sectors whose first block says the IV offset is ivOffset
	ivOffset        uint64
	pattern         int   // k: only sub-sectors at multiples of k are plausible
	headBad         uint8 // CBC: positions whose first 16 bytes decrypt to noise, the rest not
	headBest        *hypothesis
	headGain        int
	leadEvid        int   // evidence sub-sectors at the edge where a conversion starts that the old mapping does not explain
	leadAt          int64 // the first of them
}

// judge decides over blocks (raw at the old offset) and, for shift,
// newBlocks (the same logical blocks at the new offset).
func judge(given sectorcipher.Mapping, oldC, newC sectorcipher.Cipher, blocks, newBlocks []block, window, dataOff int64) verdict {
	var v verdict
	var unexplained []int
	var masks []uint8
	var decs [][]byte
	var posPlaus, posEvid [subSectors]int
	var scores []int
	for i, b := range blocks {
		m, sc, suspect, dec := b.score(oldC)
		masks = append(masks, m)
		scores = append(scores, sc)
		v.evidence += bits.OnesCount8(b.evidence)
		v.given += bits.OnesCount8(m)
		for j := 0; j < subSectors; j++ {
			if b.evidence&(1<<j) != 0 {
				posEvid[j]++
			}
			if m&(1<<j) != 0 {
				posPlaus[j]++
			}
		}
		if m != b.evidence || suspect {
			unexplained = append(unexplained, i)
		}
		decs = append(decs, dec)
	}
	newGain := func(i int) int {
		nb := blocks[i]
		if newBlocks != nil {
			nb = newBlocks[i]
		}
		_, sc, _, _ := nb.score(newC)
		return max(0, sc-scores[i])
	}
	idx := unexplained
	if newBlocks != nil {
		idx = make([]int, len(blocks))
		for i := range idx {
			idx[i] = i
		}
	}
	for _, i := range idx {
		if g := newGain(i); g > 0 {
			if v.newGain == 0 {
				v.firstNew = blocks[i].off
			}
			v.newGain += g
			if blocks[i].off < window {
				v.window0New = true
			}
		}
	}
	if len(unexplained) > 0 {
		for _, h := range alternatives(given, dataOff) {
			g := 0
			for _, i := range unexplained {
				_, sc, _, _ := blocks[i].score(h.c)
				g += max(0, sc-scores[i])
			}
			if g > v.bestGain {
				hh := h
				v.best, v.bestGain = &hh, g
			}
		}
	}
	// A wrong sector size leaves plausible only the sub-sectors at
	// multiples of the true one; alternatives name it, but such a pattern
	// is refused even when none does.
	for _, k := range []int{8, 4, 2} {
		if given.Spec.IsNone() {
			break
		}
		on, off, offEvid := 0, 0, 0
		for j := 0; j < subSectors; j++ {
			if j%k == 0 {
				on += posPlaus[j]
			} else {
				off += posPlaus[j]
				offEvid += posEvid[j]
			}
		}
		if on >= 4 && off == 0 && offEvid >= 4 {
			v.pattern = k
			break
		}
	}
	if !given.Spec.IsNone() && family(given.Spec) == "aes-cbc" {
		v.cbcHeads, v.ivOffset = cbcWrongIV(given, blocks, decs)
		v.headBad, v.headBest, v.headGain = cbcHeadVerdict(given, oldC, blocks, dataOff)
	}
	return v
}

// checkPlausible samples the data area before a first conversion and
// refuses unless the evidence says the data is under the old mapping as
// given (see docs/DESIGN.md, "What is checked before the first write").
// No key check value exists yet for the old key, and converting data that
// is not under the old mapping encrypts garbage under the new key.
func (c *conv) checkPlausible(given sectorcipher.Mapping, headerWhere string) error {
	size := int64(c.h.DataSize)
	offs := spread(0, size, plausibleSamples, 8)
	if len(offs) == 0 {
		return nil
	}
	blocks, err := c.readBlocks(int64(c.h.OldOffset), offs)
	if err != nil {
		return err
	}
	var newBlocks []block
	if c.h.NewOffset != c.h.OldOffset {
		if newBlocks, err = c.readBlocks(int64(c.h.NewOffset), offs); err != nil {
			return err
		}
	}
	v := judge(given, c.oldC, c.newC, blocks, newBlocks, int64(c.h.Window), int64(c.h.OldOffset))
	lead, err := c.readBlocks(int64(c.h.OldOffset), leadOffsets(size, c.h.Descending))
	if err != nil {
		return err
	}
	v.leadEvid, v.leadAt = unexplainedLead(c.oldC, lead)
	return v.refusal(c.h.Old.Cipher, headerWhere, c.h.Descending)
}

// refusal turns a verdict into the error that stops the run, or nil.
func (v verdict) refusal(oldCipher, headerWhere string, descending bool) error {
	if v.evidence == 0 {
		return nil // blank: nothing under any mapping yet
	}
	force := " (--force converts anyway)"
	if v.newGain >= minGain {
		if v.window0New {
			return fmt.Errorf("%w: window 0 already decrypts under the new key: this device is half converted; its header is not %s (was the conversion started with other --metadata?)", errclass.WrongKey, headerWhere)
		}
		return fmt.Errorf("%w: %d sampled sectors (the first at byte %d of the data) already decrypt under the new mapping: this device is already (partly) converted; its header is not %s", errclass.WrongKey, v.newGain, v.firstNew, headerWhere)
	}
	// A conversion starts at one edge of the data; an edge that the old
	// mapping does not explain while the rest is explained is what a
	// conversion whose header was lost leaves, whatever its new mapping
	// was (the one given may differ from it). A whole 4 KiB block of
	// evidence is required, so one odd sector does not refuse a device.
	if v.leadEvid >= subSectors && v.given >= minGain {
		edge := "start"
		if descending {
			edge = "end"
		}
		return fmt.Errorf("%w: the %s of the data (from byte %d) does not decrypt under the old mapping, though the rest does: this device looks half converted and its header is missing (not %s; was the conversion started with other --metadata, or its metadata removed?)%s", errclass.WrongKey, edge, v.leadAt, headerWhere, force)
	}
	if v.best != nil && v.bestGain >= minGain {
		return fmt.Errorf("%w: the data looks like %s (%d sampled sectors decrypt under that and not under the old mapping as given): give %s%s", errclass.WrongKey, v.best.what, v.bestGain, v.best.flags, force)
	}
	if v.given == 0 {
		what := "decrypts to random-looking bytes: wrong --old-key-file, --old-cipher or --old-iv-offset?"
		if oldCipher == "none" {
			what = "looks like ciphertext, not plaintext: wrong --old-cipher?"
		}
		return fmt.Errorf("%w: with the old mapping (%s), every one of %d sampled sectors %s%s", errclass.WrongKey, oldCipher, v.evidence, what, force)
	}
	if v.pattern != 0 {
		return fmt.Errorf("%w: under the old mapping only every %dth 512-byte sub-sector decrypts plausibly, as a wrong --old-sector-size or --old-iv-offset makes it%s", errclass.WrongKey, v.pattern, force)
	}
	if v.cbcHeads >= minGain {
		return fmt.Errorf("%w: %d sampled sectors decrypt to zeros but for their first 16 bytes, as a wrong CBC IV offset makes it: give --old-iv-offset %d%s", errclass.WrongKey, v.cbcHeads, v.ivOffset, force)
	}
	if v.headBad != 0 {
		if v.headBest != nil && v.headGain > 0 {
			return fmt.Errorf("%w: under the old mapping the first 16 bytes of the sampled sectors decrypt to noise and the rest does not, as a wrong CBC IV offset or sector size makes it; the data looks like %s: give %s%s", errclass.WrongKey, v.headBest.what, v.headBest.flags, force)
		}
		return fmt.Errorf("%w: under the old mapping the first 16 bytes of the sampled sectors (at %d of 8 positions in 4 KiB) decrypt to noise and the rest does not, as a wrong CBC --old-iv-offset, --old-sector-size or --old-cipher makes it%s", errclass.WrongKey, popcount(v.headBad), force)
	}
	return nil
}
