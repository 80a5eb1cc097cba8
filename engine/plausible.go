package engine

import (
	"math/bits"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// The evidence that the data is under the mapping a run was given is
// judged per 512-byte sub-sector of 4 KiB sample blocks: 4 KiB covers
// every dm-crypt sector size, and 512 bytes is the unit a wrong sector size
// or IV offset gets right or wrong (in XTS the first 512 bytes of a 4096-byte
// sector decrypt right under 512-byte sectors, the other seven do not).
// docs/DESIGN.md, "What is checked before the first write", argues the
// rules.
const (
	sampleBlock = 4096
	subSectors  = sampleBlock / 512
	// plausibleSamples blocks are read before a first conversion: the
	// first 8 from the start, where filesystems keep their superblocks,
	// the rest spread over the data area.
	plausibleSamples = 256
	// windowSamples blocks are read from each window a resume checks.
	windowSamples = 16
	// minGain is how many sub-sectors another mapping must explain that the
	// given one does not before the run is refused. Decrypting with a wrong
	// mapping yields random bytes, which looksRandom misjudges about once
	// in a million sub-sectors, so two are never chance.
	minGain = 2
)

// looksRandom reports whether b is statistically indistinguishable from
// uniform random bytes, which is what decrypting with a wrong key or
// cipher yields. It uses Pearson's chi-squared statistic over the byte
// histogram: for random data it has mean 255 and standard deviation about
// 22.6, also for 512 bytes (of 2 million random 512-byte buffers the
// largest scored 381), so 400 is more than six deviations out. Zeroed
// space, filesystem metadata and text score in the thousands.
func looksRandom(b []byte) bool {
	var hist [256]uint32
	for _, c := range b {
		hist[c]++
	}
	// chi = sum((n-e)^2/e) with e = len/256, which is 256*sum(n^2)/len - len:
	// integers only, as this runs for every sampled sub-sector.
	var sq uint64
	for _, n := range hist {
		sq += uint64(n) * uint64(n)
	}
	return 256*sq < uint64(400+len(b))*uint64(len(b))
}

// constant reports whether b is one byte value repeated: never-written
// space (zeros, or the 0xff of erased flash) that says nothing about any
// mapping, since it is not the output of one.
func constant(b []byte) bool {
	for _, c := range b[1:] {
		if c != b[0] {
			return false
		}
	}
	return true
}

// block is one 4 KiB sample: raw ciphertext at logical offset off of the
// data area, and which of its sub-sectors can serve as evidence.
type block struct {
	off      int64
	raw      []byte
	evidence uint8 // bit j: sub-sector j is not constant
}

func newBlock(off int64, raw []byte) block {
	b := block{off: off, raw: raw}
	for j := 0; j < subSectors; j++ {
		if !constant(raw[j*512 : (j+1)*512]) {
			b.evidence |= 1 << j
		}
	}
	return b
}

// plausible returns the evidence sub-sectors of b that decrypt to
// non-random bytes under c, and the decrypted block.
func (b block) plausible(c sectorcipher.Cipher) (uint8, []byte) {
	buf := append([]byte(nil), b.raw...)
	c.Decrypt(buf, uint64(b.off)/512)
	var m uint8
	for j := 0; j < subSectors; j++ {
		if b.evidence&(1<<j) != 0 && !looksRandom(buf[j*512:(j+1)*512]) {
			m |= 1 << j
		}
	}
	return m, buf
}

// score is how much of b a mapping explains: its plausible sub-sectors,
// plus those that decrypt to all zeros (a wrong mapping never yields
// those, so they count twice). The zeros matter for CBC, where a wrong
// sector size or IV offset corrupts only the first 16 bytes of a
// sub-sector: still plausible text, but a zeroed one is zero no longer.
// suspect: some sub-sector is zero but for its first 16 bytes.
func (b block) score(c sectorcipher.Cipher) (m uint8, score int, suspect bool, dec []byte) {
	m, dec = b.plausible(c)
	score = bits.OnesCount8(m)
	for j := 0; j < subSectors; j++ {
		s := dec[j*512 : (j+1)*512]
		// Zeros on disk decrypt to zeros under no encryption: no evidence.
		if b.evidence&(1<<j) == 0 || s[16] != 0 || !constant(s[16:]) {
			continue
		}
		if constant(s[:16]) && s[0] == 0 {
			score++
		} else {
			suspect = true
		}
	}
	return m, score, suspect, dec
}

// gain is how many more sub-sectors mask a explains than mask b.
func gain(a, b uint8) int {
	return max(0, bits.OnesCount8(a)-bits.OnesCount8(b))
}

// readBlocks reads 4 KiB blocks at the given logical offsets of the area
// starting at base.
func (c *conv) readBlocks(base int64, offs []int64) ([]block, error) {
	out := make([]block, 0, len(offs))
	for _, off := range offs {
		raw := make([]byte, sampleBlock)
		if _, err := c.t.Data.ReadAt(raw, base+off); err != nil {
			return nil, errclass.IOf("read sample for the key check", err)
		}
		out = append(out, newBlock(off, raw))
	}
	return out, nil
}

// spread returns n block offsets in [start, start+size): the first few at
// the start, the rest evenly over the range.
func spread(start, size int64, n, head int) []int64 {
	blocks := size / sampleBlock
	if blocks <= 0 {
		return nil
	}
	var out []int64
	seen := map[int64]bool{}
	add := func(i int64) {
		if i >= 0 && i < blocks && !seen[i] {
			seen[i] = true
			out = append(out, start+i*sampleBlock)
		}
	}
	for i := 0; i < head; i++ {
		add(int64(i))
	}
	for i := 0; i < n-head; i++ {
		add(int64(head) + int64(i)*(blocks-int64(head))/int64(max(1, n-head)))
	}
	return out
}

func popcount(m uint8) int { return bits.OnesCount8(m) }
