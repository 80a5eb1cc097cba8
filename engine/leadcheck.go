package engine

import (
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// leadBlocks is how many 4 KiB blocks at the edge where a conversion
// starts (the start of the data ascending, its end descending) are read
// to see whether that edge is still under the old mapping.
const leadBlocks = 8

// leadOffsets returns the offsets of the lead blocks of a data area of
// size bytes, in step order: the first written first.
func leadOffsets(size int64, descending bool) []int64 {
	n := min(int64(leadBlocks), size/sampleBlock)
	out := make([]int64, 0, n)
	for i := int64(0); i < n; i++ {
		if descending {
			out = append(out, size/sampleBlock*sampleBlock-(i+1)*sampleBlock)
		} else {
			out = append(out, i*sampleBlock)
		}
	}
	return out
}

// unexplainedLead counts the evidence sub-sectors of the lead blocks, in
// step order, up to the first block the old mapping explains any of:
// the converted prefix a conversion leaves behind. Blank blocks carry no
// evidence and are passed over. at is the first such block's offset.
func unexplainedLead(c sectorcipher.Cipher, lead []block) (evid int, at int64) {
	at = -1
	for _, b := range lead {
		if b.evidence == 0 {
			continue
		}
		sc := b.scoreOnly(c)
		if sc > 0 {
			break
		}
		if at < 0 {
			at = b.off
		}
		evid += popcount(b.evidence)
	}
	return evid, at
}

// scoreOnly is score's count alone.
func (b block) scoreOnly(c sectorcipher.Cipher) int {
	_, sc, _, _ := b.score(c)
	return sc
}
