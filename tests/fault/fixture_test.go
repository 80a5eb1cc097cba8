package fault

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// metaSize is the engine's smallest metadata area; the data area is kept
// small next to it so that a crash state costs little more than one copy.
const metaSize = 1 << 20

// sideSpec is one mapping of a test conversion.
type sideSpec struct {
	cipher  string
	keyLen  int
	keySeed byte
	ss      int
}

var (
	plain512 = sideSpec{"none", 0, 0, 512}
	xts512   = sideSpec{"aes-xts-plain64", 64, 1, 512}
	xts512b  = sideSpec{"aes-xts-plain64", 64, 9, 512}
	xts4096  = sideSpec{"aes-xts-plain64", 32, 2, 4096}
	essiv512 = sideSpec{"aes-cbc-essiv:sha256", 32, 4, 512}
	cbc4096  = sideSpec{"aes-cbc-plain64", 16, 5, 4096}
)

func (s sideSpec) String() string {
	if s.cipher == "none" {
		return "none"
	}
	return fmt.Sprintf("%s/%d", s.cipher, s.ss)
}

func (s sideSpec) key() []byte {
	if s.keyLen == 0 {
		return nil
	}
	return testkit.Key(s.keyLen, s.keySeed)
}

func (s sideSpec) cipherFor(t testing.TB) sectorcipher.Cipher {
	t.Helper()
	return testkit.Cipher(t, testkit.Mapping(t, s.cipher, s.key(), s.ss))
}

func (s sideSpec) side() engine.Side {
	var iv uint64
	large := false
	return engine.Side{Cipher: s.cipher, Key: s.key(), SectorSize: s.ss, IVOffset: &iv, IVLargeSectors: &large}
}

// scenario is one conversion to crash.
type scenario struct {
	name    string
	mode    string // journal, checksum, shift, none
	old, nw sideSpec
	sepMeta bool  // metadata on a second disk of the same crash domain
	up      bool  // shift towards higher offsets (descending steps)
	window  int64 // bytes
	windows int   // full windows; a short one of tail bytes follows
	tail    int64
	online  bool // an application writes between windows (app_test.go)
	kernel  bool // the data goes through simulated dm-crypt mappings (engine.CryptoDevices)
}

func (sc scenario) String() string {
	s := fmt.Sprintf("%s/%s->%s", sc.mode, sc.old, sc.nw)
	if sc.mode == "shift" {
		if sc.up {
			s += "/up"
		} else {
			s += "/down"
		}
	}
	if sc.sepMeta {
		s += "/sepmeta"
	}
	if sc.online {
		s += "/online"
	}
	if sc.kernel {
		s += "/kernelcrypto"
	}
	if sc.name != "" {
		s += "/" + sc.name
	}
	return s
}

// fixture is the starting disks of a scenario and what they mean.
type fixture struct {
	sc         scenario
	plain      []byte // logical plaintext of the data area
	dataSize   int64
	oldOff     int64
	newOff     int64
	unit       int64
	windows    int
	dataImg    []byte
	metaImg    []byte // nil: metadata at the end of the data disk
	oldC, newC sectorcipher.Cipher
	cfg        engine.Config
}

var (
	testUUID = [16]byte{0xc5, 1, 2, 3, 4, 5, 0x46, 7, 0x88, 9, 10, 11, 12, 13, 14, 15}
	testNow  = func() time.Time { return time.Unix(1_700_000_000, 0) }
)

func newFixture(t testing.TB, sc scenario) *fixture {
	t.Helper()
	f := &fixture{sc: sc, dataSize: int64(sc.windows)*sc.window + sc.tail}
	f.windows = int(f.geometry().Windows())
	f.unit = int64(max(sc.old.ss, sc.nw.ss))
	f.plain = testkit.Plaintext(int(f.dataSize), uint64(f.dataSize)^uint64(len(sc.String())))
	region := f.dataSize
	if sc.mode == "shift" {
		region += sc.window
		if sc.up {
			f.newOff = sc.window
		} else {
			f.oldOff = sc.window
		}
	}
	if sc.sepMeta {
		f.dataImg = make([]byte, region)
		f.metaImg = make([]byte, metaSize)
	} else {
		f.dataImg = make([]byte, region+metaSize)
	}
	f.oldC, f.newC = sc.old.cipherFor(t), sc.nw.cipherFor(t)
	ct := bytes.Clone(f.plain)
	f.oldC.Encrypt(ct, 0)
	copy(f.dataImg[f.oldOff:], ct)

	off := f.oldOff
	f.cfg = engine.Config{Old: sc.old.side(), New: sc.nw.side(), DataOffset: &off, DataSize: f.dataSize,
		Mode: sc.mode, Window: sc.window, Force: sc.mode == "none"}
	if !sc.sepMeta {
		f.cfg.MetaSize = metaSize
	}
	return f
}

// images returns fresh copies of the starting disks, indexed like a
// Domain's disks.
func (f *fixture) images() [][]byte {
	if f.metaImg == nil {
		return [][]byte{bytes.Clone(f.dataImg)}
	}
	return [][]byte{bytes.Clone(f.dataImg), bytes.Clone(f.metaImg)}
}

// memTarget serves images (used in place) as non-recording disks.
func (f *fixture) memTarget(imgs [][]byte) engine.Target {
	d := blockdev.MemFrom(imgs[0])
	if len(imgs) == 1 {
		return engine.Target{Data: d, Meta: d, MetaOnData: true}
	}
	return engine.Target{Data: d, Meta: blockdev.MemFrom(imgs[1])}
}

// domainTarget puts images on recording disks of a new crash domain.
func (f *fixture) domainTarget(imgs [][]byte) (*Domain, engine.Target) {
	dom := NewDomain()
	d := dom.NewDisk(imgs[0])
	if len(imgs) == 1 {
		return dom, engine.Target{Data: d, Meta: d, MetaOnData: true}
	}
	return dom, engine.Target{Data: d, Meta: dom.NewDisk(imgs[1])}
}

func (f *fixture) options(h engine.Holder, hooks *engine.Hooks) engine.Options {
	return engine.Options{UUID: testUUID, Now: testNow, Holder: h, Hooks: hooks}
}

// convertOptions are options for engine.Convert on tgt: with the scenario's
// simulated kernel crypto devices over tgt's data disk when it has them.
func (f *fixture) convertOptions(tgt engine.Target, h engine.Holder, hooks *engine.Hooks) engine.Options {
	o := f.options(h, hooks)
	if f.sc.kernel {
		o.Crypto = &testkit.CryptoDevices{Data: tgt.Data}
	}
	return o
}

// geometry is the scenario's conversion as the header records it, for its
// window arithmetic (header.(*Header).WindowAt and WindowRange).
func (f *fixture) geometry() *header.Header {
	return &header.Header{DataSize: uint64(f.dataSize), Window: uint64(f.sc.window),
		Descending: f.sc.mode == "shift" && f.sc.up}
}

// stepOf is the processing step that converts window w (WindowAt is its own
// inverse).
func (f *fixture) stepOf(w int) int { return int(f.geometry().WindowAt(uint64(w))) }

func (f *fixture) windowAt(step int) int { return int(f.geometry().WindowAt(uint64(step))) }

func (f *fixture) windowRange(w int) (start, n int64) { return f.geometry().WindowRange(uint64(w)) }
