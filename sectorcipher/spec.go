package sectorcipher

import (
	"fmt"
	"strings"
)

type chainMode uint8

const (
	// modeInvalid is the zero value so that an uninitialized Spec can never
	// silently mean "plaintext".
	modeInvalid chainMode = iota
	modeNone
	modeXTS
	modeCBC
)

// blockCipher is the 128-bit block cipher under the chain mode. AES is the
// zero value, so the specs written before there was a choice keep their
// meaning.
type blockCipher uint8

const (
	blockAES blockCipher = iota
	blockTwofish
)

func (b blockCipher) String() string {
	if b == blockTwofish {
		return "twofish"
	}
	return "aes"
}

type ivMode uint8

const (
	ivNone ivMode = iota
	ivPlain
	ivPlain64
	ivEssivSHA256
)

// Spec is a parsed dm-crypt cipher spec such as "aes-xts-plain64" or "none".
// The zero Spec is invalid; obtain one from ParseSpec. Specs are comparable
// with ==.
type Spec struct {
	mode  chainMode
	iv    ivMode
	block blockCipher
	// kernel is the verbatim spec of a kernel-only spec (kernelspec.go).
	kernel string
}

// canonical lists every supported spec in its canonical spelling, which is
// also the legacy-format cipher string dm-crypt tables use for it.
var canonical = []Spec{
	{mode: modeXTS, iv: ivPlain64},
	{mode: modeXTS, iv: ivPlain},
	{mode: modeCBC, iv: ivEssivSHA256},
	{mode: modeCBC, iv: ivPlain64},
	{mode: modeCBC, iv: ivPlain},
	{mode: modeXTS, iv: ivPlain64, block: blockTwofish},
	{mode: modeXTS, iv: ivPlain, block: blockTwofish},
	{mode: modeCBC, iv: ivEssivSHA256, block: blockTwofish},
	{mode: modeCBC, iv: ivPlain64, block: blockTwofish},
	{mode: modeCBC, iv: ivPlain, block: blockTwofish},
	{mode: modeNone, iv: ivNone},
}

// aliases maps other spellings dm-crypt accepts for the same transform. The
// kernel's own names are case-sensitive, so these are too.
var aliases = map[string]Spec{
	// Legacy format defaults: no chain mode, or chain mode "plain" without an
	// IV mode, mean cbc-plain (crypt_ctr_cipher_old).
	"aes":       {mode: modeCBC, iv: ivPlain},
	"aes-plain": {mode: modeCBC, iv: ivPlain},
	// Crypto-API format.
	"capi:xts(aes)-plain64":          {mode: modeXTS, iv: ivPlain64},
	"capi:xts(aes)-plain":            {mode: modeXTS, iv: ivPlain},
	"capi:cbc(aes)-essiv:sha256":     {mode: modeCBC, iv: ivEssivSHA256},
	"capi:cbc(aes)-plain64":          {mode: modeCBC, iv: ivPlain64},
	"capi:cbc(aes)-plain":            {mode: modeCBC, iv: ivPlain},
	"twofish":                        {mode: modeCBC, iv: ivPlain, block: blockTwofish},
	"twofish-plain":                  {mode: modeCBC, iv: ivPlain, block: blockTwofish},
	"capi:xts(twofish)-plain64":      {mode: modeXTS, iv: ivPlain64, block: blockTwofish},
	"capi:xts(twofish)-plain":        {mode: modeXTS, iv: ivPlain, block: blockTwofish},
	"capi:cbc(twofish)-essiv:sha256": {mode: modeCBC, iv: ivEssivSHA256, block: blockTwofish},
	"capi:cbc(twofish)-plain64":      {mode: modeCBC, iv: ivPlain64, block: blockTwofish},
	"capi:cbc(twofish)-plain":        {mode: modeCBC, iv: ivPlain, block: blockTwofish},
	// cryptsetup's name for an unencrypted dm-crypt segment.
	"cipher_null-ecb": {mode: modeNone, iv: ivNone},
	"cipher_null":     {mode: modeNone, iv: ivNone},
}

// SupportedSpecs returns the canonical spelling of every supported spec.
func SupportedSpecs() []string {
	out := make([]string, len(canonical))
	for i, s := range canonical {
		out[i] = s.String()
	}
	return out
}

// ParseSpec parses a dm-crypt cipher spec. It accepts the canonical names
// listed by SupportedSpecs and the equivalent spellings described in the
// package documentation.
func ParseSpec(s string) (Spec, error) {
	for _, c := range canonical {
		if c.String() == s {
			return c, nil
		}
	}
	if c, ok := aliases[s]; ok {
		return c, nil
	}
	return Spec{}, fmt.Errorf("sectorcipher: unsupported cipher spec %q; supported: %s",
		s, strings.Join(SupportedSpecs(), ", "))
}

// String returns the canonical form of s, which ParseSpec maps back to s.
func (s Spec) String() string {
	var mode string
	switch s.mode {
	case modeKernel:
		return s.kernel
	case modeNone:
		return "none"
	case modeXTS:
		mode = s.block.String() + "-xts-"
	case modeCBC:
		mode = s.block.String() + "-cbc-"
	default:
		return "invalid"
	}
	switch s.iv {
	case ivPlain:
		return mode + "plain"
	case ivPlain64:
		return mode + "plain64"
	case ivEssivSHA256:
		return mode + "essiv:sha256"
	}
	return "invalid"
}

// KernelCipher returns the cipher string to put in a dm-crypt table line for
// s. It equals String except for none, which dm-crypt spells cipher_null-ecb
// (and which then takes the key "-").
func (s Spec) KernelCipher() string {
	if s.mode == modeNone {
		return "cipher_null-ecb"
	}
	return s.String()
}

// IsNone reports whether s is the plaintext (identity) transform.
func (s Spec) IsNone() bool { return s.mode == modeNone }

func (s Spec) valid() bool {
	if s.mode == modeKernel {
		return s.kernel != ""
	}
	for _, c := range canonical {
		if c == s {
			return true
		}
	}
	return false
}

// KeySizes returns the key lengths s accepts, in bytes, ascending; nil for
// a kernel-only spec, whose key the kernel checks.
func (s Spec) KeySizes() []int {
	switch s.mode {
	case modeNone:
		return []int{0}
	case modeXTS:
		return []int{32, 48, 64}
	case modeCBC:
		return []int{16, 24, 32}
	}
	return nil
}

// CheckKey returns an error naming the allowed sizes, in bits, when key has
// a length s does not accept.
func (s Spec) CheckKey(key []byte) error {
	if !s.valid() {
		return fmt.Errorf("sectorcipher: invalid cipher spec (zero Spec; use ParseSpec)")
	}
	if s.mode == modeKernel {
		if len(s.kernel) > 0 && (len(key) == 0 || len(key) > maxKernelKey) {
			return fmt.Errorf("sectorcipher: %s: key of %d bytes; want 1 to %d (the kernel checks the exact size)", s, len(key), maxKernelKey)
		}
		return nil
	}
	sizes := s.KeySizes()
	for _, n := range sizes {
		if len(key) == n {
			return nil
		}
	}
	bits := make([]string, len(sizes))
	for i, n := range sizes {
		bits[i] = fmt.Sprint(n * 8)
	}
	return fmt.Errorf("sectorcipher: %s: key of %d bits (%d bytes) not allowed; allowed sizes in bits: %s",
		s, len(key)*8, len(key), strings.Join(bits, ", "))
}
