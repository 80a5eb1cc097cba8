package sectorcipher

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"

	"golang.org/x/crypto/twofish"
)

// Cipher transforms whole sectors in place. It is safe for concurrent use by
// several goroutines on disjoint buffers.
type Cipher interface {
	SectorSize() int
	// sector512 is the position of buf[0] in 512-byte units relative to the
	// start of the dm target (what dm-crypt calls the bio sector, without
	// iv_offset and without the backing device offset); it must be a multiple
	// of SectorSize()/512 and len(buf) a multiple of SectorSize(), otherwise
	// the call panics (a programming error, not input).
	Encrypt(buf []byte, sector512 uint64)
	Decrypt(buf []byte, sector512 uint64)
}

const maxSectorSize = 4096

// scratch is per-call working memory. It comes from a pool rather than the
// stack because slices of it are handed to cipher.Block through an interface,
// which makes the compiler move any stack buffer to the heap on every call.
type scratch struct {
	buf [maxSectorSize]byte // XTS tweaks, or the CBC ciphertext being decrypted
	iv  [16]byte            // the IV block of the current sector
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// sectorEngine runs one chaining mode over one sector, given the IV block
// that dm-crypt's IV generator produced for it in s.iv. It is the seam for a
// later assembly implementation: one call per sector, with the scratch
// memory supplied by the caller. len(sector) is a multiple of 16 and at most
// maxSectorSize.
type sectorEngine interface {
	encryptSector(sector []byte, s *scratch)
	decryptSector(sector []byte, s *scratch)
}

// forceGeneric makes New pick the pure-Go engines even where assembly ones
// could run, so that tests exercise both on one machine.
var forceGeneric bool

// xtsImpl and cbcImpl describe an accelerated engine. Each build lists its
// own in xtsImpls and cbcImpls, fastest first; New takes the first whose CPU
// features are present and falls back to the pure-Go engines, which every
// build has.
type xtsImpl struct {
	name      string
	available bool
	new       func(k1, k2 []byte) sectorEngine
}

type cbcImpl struct {
	name      string
	available bool
	new       func(key []byte) sectorEngine
}

func newXTSEngine(k1, k2 []byte) (sectorEngine, error) {
	if !forceGeneric {
		for _, im := range xtsImpls {
			if im.available {
				return im.new(k1, k2), nil
			}
		}
	}
	return newXTSGeneric(k1, k2)
}

func newCBCEngine(key []byte) (sectorEngine, error) {
	if !forceGeneric {
		for _, im := range cbcImpls {
			if im.available {
				return im.new(key), nil
			}
		}
	}
	return newCBCGeneric(key)
}

// newBlock is the block cipher b under key.
func newBlock(b blockCipher, key []byte) (cipher.Block, error) {
	if b == blockTwofish {
		return twofish.NewCipher(key)
	}
	return aes.NewCipher(key)
}

// New returns the Cipher for m after checking it with m.Validate. The key is
// expanded into cipher state at once; m.Key is not retained.
func New(m Mapping) (Cipher, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if m.Spec.IsNone() {
		return noneCipher{size: m.SectorSize}, nil
	}
	if m.Spec.KernelOnly() {
		return nil, fmt.Errorf("sectorcipher: %s: %w (only the kernel's dm-crypt can run it: --crypto kernel or auto)", m.Spec, ErrKernelOnly)
	}
	c := &sectorCipher{
		size:     m.SectorSize,
		step:     uint64(m.SectorSize / 512),
		shift:    uint(bits.TrailingZeros(uint(m.SectorSize / 512))),
		large:    m.IVLargeSectors,
		ivOffset: m.IVOffset,
		truncate: m.Spec.iv == ivPlain,
	}
	var err error
	switch {
	case m.Spec.block == blockTwofish:
		c.eng, err = newTwofishEngine(m.Spec.mode, m.Key)
	case m.Spec.mode == modeXTS:
		half := len(m.Key) / 2
		c.eng, err = newXTSEngine(m.Key[:half], m.Key[half:])
	case m.Spec.mode == modeCBC:
		c.eng, err = newCBCEngine(m.Key)
	default:
		return nil, fmt.Errorf("sectorcipher: unsupported spec %s", m.Spec)
	}
	if err != nil {
		return nil, err
	}
	if m.Spec.iv == ivEssivSHA256 {
		// The kernel's essiv template keys the IV cipher, the same block
		// cipher as the data's, with the whole digest (crypto/essiv.c).
		salt := sha256.Sum256(m.Key)
		e, err := newBlock(m.Spec.block, salt[:])
		if err != nil {
			return nil, fmt.Errorf("sectorcipher: ESSIV key: %w", err)
		}
		c.essiv = e
	}
	return c, nil
}

type sectorCipher struct {
	size     int
	step     uint64 // sector size in 512-byte units
	shift    uint   // log2(step), applied to IV sectors with iv_large_sectors
	large    bool
	ivOffset uint64
	truncate bool         // plain: IV sector cut to 32 bits
	essiv    cipher.Block // nil unless essiv:sha256
	eng      sectorEngine
}

func (c *sectorCipher) SectorSize() int { return c.size }

func (c *sectorCipher) Encrypt(buf []byte, sector512 uint64) { c.run(buf, sector512, false) }

func (c *sectorCipher) Decrypt(buf []byte, sector512 uint64) { c.run(buf, sector512, true) }

func (c *sectorCipher) run(buf []byte, sector512 uint64, decrypt bool) {
	checkAlign(buf, sector512, c.size)
	if len(buf) == 0 {
		return
	}
	s := scratchPool.Get().(*scratch)
	// Same arithmetic as crypt_convert_init/crypt_convert: the running sector
	// includes iv_offset and advances in 512-byte units per block; the shift
	// for iv_large_sectors is applied to each block's copy of it. u64
	// wrap-around matches the kernel's.
	pos := sector512 + c.ivOffset
	for off := 0; off < len(buf); off += c.size {
		c.setIV(pos, s)
		sector := buf[off : off+c.size : off+c.size]
		if decrypt {
			c.eng.decryptSector(sector, s)
		} else {
			c.eng.encryptSector(sector, s)
		}
		pos += c.step
	}
	// The scratch holds tweaks or ciphertext, never key material or
	// plaintext, so it goes back unwiped.
	scratchPool.Put(s)
}

// setIV writes the IV block dm-crypt's generator produces for the running
// sector pos into s.iv.
func (c *sectorCipher) setIV(pos uint64, s *scratch) {
	if c.large {
		pos >>= c.shift
	}
	if c.truncate {
		pos &= 0xffffffff
	}
	binary.LittleEndian.PutUint64(s.iv[:8], pos)
	binary.LittleEndian.PutUint64(s.iv[8:], 0)
	if c.essiv != nil {
		c.essiv.Encrypt(s.iv[:], s.iv[:])
	}
}

type noneCipher struct{ size int }

func (n noneCipher) SectorSize() int { return n.size }

func (n noneCipher) Encrypt(buf []byte, sector512 uint64) { checkAlign(buf, sector512, n.size) }

func (n noneCipher) Decrypt(buf []byte, sector512 uint64) { checkAlign(buf, sector512, n.size) }

func checkAlign(buf []byte, sector512 uint64, size int) {
	if len(buf)%size != 0 {
		panic(fmt.Sprintf("sectorcipher: buffer of %d bytes is not a multiple of the %d-byte sector size", len(buf), size))
	}
	if sector512%uint64(size/512) != 0 {
		panic(fmt.Sprintf("sectorcipher: sector %d (512-byte units) is not aligned to the %d-byte sector size", sector512, size))
	}
}
