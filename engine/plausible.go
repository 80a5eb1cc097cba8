package engine

import (
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
)

// plausibleSamples is how many old-mapping sectors are decrypted before a
// first conversion; a few are taken from the start, where filesystems keep
// their superblocks, the rest spread over the data area.
const plausibleSamples = 64

// looksRandom reports whether b is statistically indistinguishable from
// uniform random bytes, which is what decrypting with a wrong key or
// cipher yields. It uses Pearson's chi-squared statistic over the byte
// histogram: for random data it has mean 255 and standard deviation about
// 22.6, so 400 is more than six deviations out. Zeroed space, filesystem
// metadata and text score in the thousands.
func looksRandom(b []byte) bool {
	var hist [256]int
	for _, c := range b {
		hist[c]++
	}
	exp := float64(len(b)) / 256
	var chi float64
	for _, n := range hist {
		d := float64(n) - exp
		chi += d * d / exp
	}
	return chi < 400
}

// checkPlausible decrypts a sample of the data area with the old mapping
// and refuses when every sampled sector looks random: no key check value
// exists yet for the old key, and converting with a wrong one would encrypt
// garbage under the new key, destroying the data.
func (c *conv) checkPlausible() error {
	ss := int64(c.h.Old.SectorSize)
	if ss < 4096 {
		ss = 4096 // enough bytes for the statistic to be sharp
	}
	sectors := int64(c.h.DataSize) / ss
	if sectors == 0 {
		return nil
	}
	buf := make([]byte, ss)
	seen := 0
	for i := int64(0); i < plausibleSamples && i < sectors; i++ {
		idx := i
		if i >= 8 {
			idx = 8 + (i-8)*(sectors-8)/(plausibleSamples-8)
		}
		if idx >= sectors {
			break
		}
		off := idx * ss
		if _, err := c.t.Data.ReadAt(buf, int64(c.h.OldOffset)+off); err != nil {
			return errclass.IOf("read sample for the key check", err)
		}
		c.oldC.Decrypt(buf, uint64(off)/512)
		if !looksRandom(buf) {
			return nil
		}
		seen++
	}
	what := "decrypts to random-looking bytes"
	if c.h.Old.Cipher == "none" {
		what = "looks like ciphertext, not plaintext"
	}
	return fmt.Errorf("%w: with the old mapping (%s), every one of %d sampled sectors %s: wrong --old-key-file or --old-cipher? (--force converts anyway)", errclass.WrongKey, c.h.Old.Cipher, seen, what)
}
