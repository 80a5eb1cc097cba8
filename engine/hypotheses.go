package engine

import (
	"fmt"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

// hypothesis is a mapping the data might really be under, and the flags
// that would say so.
type hypothesis struct {
	c     sectorcipher.Cipher
	what  string // "4096-byte sectors"
	flags string // "--old-sector-size 4096"
	cbc   bool   // a CBC mapping with the given key
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
					out = append(out, hypothesis{c: c, what: what, flags: flags, cbc: family(spec) == "aes-cbc"})
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
