package engine

import (
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// minHeads is how many sub-sectors must be pooled at one position before
// their first 16 bytes are judged: 32 heads are 512 bytes, the length
// looksRandom's threshold is argued for.
const minHeads = 32

// cbcHeads pools, per sub-sector position j of the sample blocks, the
// first 16 bytes ("heads") and the next 16 ("seconds") of the evidence
// sub-sectors that decrypt under c to plausible bytes after their head.
// In CBC a wrong IV (a wrong IV offset, sector size or IV generator)
// corrupts only the first block of a sector, which one sub-sector's
// chi-squared test barely notices; pooled over many sectors, heads that
// are noise while the rest is plausible are plain to see.
func cbcHeads(c sectorcipher.Cipher, blocks []block) (heads, seconds [subSectors][]byte) {
	for _, b := range blocks {
		if b.evidence == 0 {
			continue
		}
		buf := append([]byte(nil), b.raw...)
		c.Decrypt(buf, uint64(b.off)/512)
		for j := 0; j < subSectors; j++ {
			s := buf[j*512 : (j+1)*512]
			if b.evidence&(1<<j) == 0 || looksRandom(s[16:]) {
				continue
			}
			heads[j] = append(heads[j], s[:16]...)
			seconds[j] = append(seconds[j], s[16:32]...)
		}
	}
	return heads, seconds
}

// headMask is the positions whose pooled heads are plausible, and bad
// those whose heads are noise while the block after them is not: the
// pattern a wrong CBC IV leaves.
func headMask(c sectorcipher.Cipher, blocks []block) (plausible, bad uint8) {
	heads, seconds := cbcHeads(c, blocks)
	for j := 0; j < subSectors; j++ {
		if len(heads[j]) < minHeads*16 {
			continue
		}
		switch {
		case !looksRandom(heads[j]):
			plausible |= 1 << j
		case !looksRandom(seconds[j]):
			bad |= 1 << j
		}
	}
	return plausible, bad
}

// cbcHeadVerdict judges the heads under the given CBC mapping: bad is the
// positions whose heads are noise; best, if any, the alternative (of the
// CBC family, the only ones that share the rest of each sector) that
// makes the most of them plausible.
func cbcHeadVerdict(given sectorcipher.Mapping, oldC sectorcipher.Cipher, blocks []block, dataOff int64) (bad uint8, best *hypothesis, bestGain int) {
	plaus, bad := headMask(oldC, blocks)
	if bad == 0 {
		return 0, nil, 0
	}
	for _, h := range alternatives(given, dataOff) {
		if !h.cbc {
			continue
		}
		p, _ := headMask(h.c, blocks)
		if g := popcount(p &^ plaus); g > bestGain {
			hh := h
			best, bestGain = &hh, g
		}
	}
	return bad, best, bestGain
}
