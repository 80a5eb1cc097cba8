package engine

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
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
		if s[16] != 0 || !constant(s[16:]) {
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

// hypothesis is a mapping the data might really be under, and the flags
// that would say so.
type hypothesis struct {
	c     sectorcipher.Cipher
	what  string // "4096-byte sectors"
	flags string // "--old-sector-size 4096"
}

// alternatives lists the mappings a user plausibly meant instead of m: the
// same key with another cipher (of those taking its length), sector size,
// iv_large_sectors or IV offset (0, or the data offset in sectors, which
// cryptsetup's --skip usually equals), and no encryption at all.
func alternatives(m sectorcipher.Mapping, dataOff int64) []hypothesis {
	if m.Spec.IsNone() {
		return nil
	}
	var out []hypothesis
	none, _ := sectorcipher.ParseSpec("none")
	if c, err := sectorcipher.New(sectorcipher.Mapping{Spec: none, SectorSize: 512}); err == nil {
		out = append(out, hypothesis{c: c, what: "unencrypted data", flags: "--old-cipher none"})
	}
	specs := []sectorcipher.Spec{m.Spec}
	for _, name := range []string{"aes-xts-plain64", "aes-cbc-essiv:sha256", "aes-cbc-plain64"} {
		s, _ := sectorcipher.ParseSpec(name)
		if s != m.Spec && s.CheckKey(m.Key) == nil && !plainVariants(s, m.Spec) {
			specs = append(specs, s)
		}
	}
	ivs := []uint64{m.IVOffset}
	for _, o := range []uint64{0, uint64(dataOff) / 512} {
		if o != ivs[0] && (len(ivs) < 2 || o != ivs[1]) {
			ivs = append(ivs, o)
		}
	}
	for _, spec := range specs {
		for _, ss := range []int{512, 1024, 2048, 4096} {
			for _, large := range []bool{false, true} {
				if large && ss == 512 {
					continue
				}
				for _, iv := range ivs {
					a := sectorcipher.Mapping{Spec: spec, Key: m.Key, SectorSize: ss, IVOffset: iv, IVLargeSectors: large}
					if spec == m.Spec && ss == m.SectorSize && iv == m.IVOffset && (large == m.IVLargeSectors || ss == 512) {
						continue
					}
					c, err := sectorcipher.New(a)
					if err != nil {
						continue
					}
					what, flags := describe(a, m)
					out = append(out, hypothesis{c: c, what: what, flags: flags})
				}
			}
		}
	}
	return out
}

// plainVariants reports whether a and b differ only in plain against
// plain64 IVs.
func plainVariants(a, b sectorcipher.Spec) bool {
	essiv := func(s sectorcipher.Spec) bool { return s.String() == "aes-cbc-essiv:sha256" }
	return family(a) == family(b) && !essiv(a) && !essiv(b)
}

// family tells XTS from CBC: plain and plain64 IVs differ only beyond
// 2 TiB, so a variant of the same family with plain64 adds nothing.
func family(s sectorcipher.Spec) string {
	n := s.String()
	return n[:min(7, len(n))]
}

// describe says how a differs from m, for the message and as flags.
func describe(a, m sectorcipher.Mapping) (what, flags string) {
	var w, f []string
	if a.Spec != m.Spec {
		w = append(w, a.Spec.String())
		f = append(f, "--old-cipher "+a.Spec.String())
	}
	if a.SectorSize != m.SectorSize {
		w = append(w, fmt.Sprintf("%d-byte sectors", a.SectorSize))
		f = append(f, fmt.Sprintf("--old-sector-size %d", a.SectorSize))
	}
	if a.IVLargeSectors != m.IVLargeSectors && a.SectorSize > 512 {
		w = append(w, fmt.Sprintf("iv_large_sectors %v", a.IVLargeSectors))
		f = append(f, fmt.Sprintf("--old-iv-large-sectors=%v", a.IVLargeSectors))
	}
	if a.IVOffset != m.IVOffset {
		w = append(w, fmt.Sprintf("IV offset %d", a.IVOffset))
		f = append(f, fmt.Sprintf("--old-iv-offset %d", a.IVOffset))
	}
	return joinComma(w), joinSpace(f)
}

func joinSpace(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}

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
	pattern         int // k: only sub-sectors at multiples of k are plausible
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
	}
	return v
}

// cbcWrongIV looks, in the blocks as decrypted under given (a CBC
// mapping), for sectors that are zero but for their first 16 bytes. Under
// CBC a wrong IV corrupts only a sector's first block, and for a zeroed
// sector that block is then the XOR of the wrong IV and the right one, so
// the right IV, and from it the IV offset, can be computed. An offset found
// in at least minGain sectors is the answer; a bitmap or a short file that
// happens to look alike yields no valid IV (its upper 8 bytes are not zero).
func cbcWrongIV(given sectorcipher.Mapping, blocks []block, decs [][]byte) (votes int, offset uint64) {
	name := given.Spec.String()
	var salt cipher.Block
	if name == "aes-cbc-essiv:sha256" {
		k := sha256.Sum256(given.Key)
		salt, _ = aes.NewCipher(k[:])
	}
	shift := uint(bits.TrailingZeros(uint(given.SectorSize / 512)))
	ivOf := func(pos uint64) [16]byte {
		if given.IVLargeSectors {
			pos >>= shift
		}
		if name == "aes-cbc-plain" {
			pos &= 0xffffffff
		}
		var iv [16]byte
		binary.LittleEndian.PutUint64(iv[:8], pos)
		if salt != nil {
			salt.Encrypt(iv[:], iv[:])
		}
		return iv
	}
	count := map[uint64]int{}
	ss := given.SectorSize
	for i, b := range blocks {
		dec := decs[i]
		for off := 0; off+ss <= len(dec); off += ss {
			s := dec[off : off+ss]
			if s[16] != 0 || !constant(s[16:]) || constant(s[:16]) && s[0] == 0 {
				continue
			}
			n := uint64(b.off+int64(off)) / 512
			ivg := ivOf(n + given.IVOffset)
			var raw [16]byte
			for k := range raw {
				raw[k] = s[k] ^ ivg[k]
			}
			if salt != nil {
				salt.Decrypt(raw[:], raw[:])
			}
			if binary.LittleEndian.Uint64(raw[8:]) != 0 {
				continue
			}
			pos := binary.LittleEndian.Uint64(raw[:8])
			if given.IVLargeSectors {
				pos <<= shift
			}
			o := pos - n
			if name == "aes-cbc-plain" {
				o &= 0xffffffff
			}
			count[o]++
		}
	}
	for o, n := range count {
		if n > votes || n == votes && o < offset {
			votes, offset = n, o
		}
	}
	return votes, offset
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
	return v.refusal(c.h.Old.Cipher, headerWhere)
}

// refusal turns a verdict into the error that stops the run, or nil.
func (v verdict) refusal(oldCipher, headerWhere string) error {
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
	if oldCipher == "none" && 4*v.given < v.evidence {
		return fmt.Errorf("%w: with --old-cipher none, only %d of %d sampled sectors look like plaintext; the rest look like ciphertext%s", errclass.WrongKey, v.given, v.evidence, force)
	}
	if v.pattern != 0 {
		return fmt.Errorf("%w: under the old mapping only every %dth 512-byte sub-sector decrypts plausibly, as a wrong --old-sector-size or --old-iv-offset makes it%s", errclass.WrongKey, v.pattern, force)
	}
	if v.cbcHeads >= minGain {
		return fmt.Errorf("%w: %d sampled sectors decrypt to zeros but for their first 16 bytes, as a wrong CBC IV offset makes it: give --old-iv-offset %d%s", errclass.WrongKey, v.cbcHeads, v.ivOffset, force)
	}
	return nil
}

func popcount(m uint8) int { return bits.OnesCount8(m) }
