package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
)

// dataKinds are plaintexts a device holds, each 1 MiB.
func dataKinds() map[string][]byte {
	const n = 1 << 20
	zeros := make([]byte, n)
	// ext4-like metadata: tables of little-endian counters and flags,
	// mostly zero bytes, with the odd free block.
	meta := make([]byte, n)
	for off := 0; off < n; off += 32 {
		binary.LittleEndian.PutUint32(meta[off:], uint32(off/32))
		binary.LittleEndian.PutUint16(meta[off+8:], 0x81a4)
		meta[off+12] = byte(off / 4096)
	}
	r := rand.New(rand.NewPCG(3, 4))
	// Random file contents (a compressed file) with filesystem blocks
	// between them: the right mapping must still be accepted.
	random := fsLike(n, 11)
	for off := 0; off < n; off += 16 << 10 {
		for i := off + 4096; i < min(off+12<<10, n); i++ {
			random[i] = byte(r.Uint32())
		}
	}
	return map[string][]byte{"zeros": zeros, "ext4 metadata": meta, "text": plaintext(n, 6), "random files": random, "fs": fsLike(n, 12)}
}

// TestCBCHeads: CBC-ESSIV data (where a wrong IV corrupts only the first
// 16 bytes of each sector) converts under the right mapping, whatever it
// holds, and is refused, the device untouched, under a wrong IV offset or
// sector size.
func TestCBCHeads(t *testing.T) {
	const data = 1 << 20
	target := side{cipher: "aes-xts-plain64", key: key(64, 70), ss: 512}
	var reals []side
	for _, ss := range []int{512, 4096} {
		for _, iv := range []uint64{0, 2048} {
			reals = append(reals, side{cipher: "aes-cbc-essiv:sha256", key: key(32, 71), ss: ss, ivoff: iv})
		}
	}
	run := func(plain []byte, real, given side) (error, bool) {
		dev := blockdev.NewMem(data + testMeta)
		ct := bytes.Clone(plain)
		crypt(t, real, ct, true)
		copy(dev.Bytes(), ct)
		before := devHash(dev)
		cfg := Config{Old: given.cfg(), New: target.cfg(), Window: testWindow, MetaSize: testMeta}
		_, err := Convert(context.Background(), Target{Data: dev, Meta: dev, MetaOnData: true}, cfg, Options{})
		return err, devHash(dev) == before
	}
	for kind, plain := range dataKinds() {
		for _, real := range reals {
			t.Run(fmt.Sprintf("%s/%d/iv%d", kind, real.ss, real.ivoff), func(t *testing.T) {
				if err, _ := run(plain, real, real); err != nil {
					t.Fatalf("given right: %v", err)
				}
				if kind == "random files" {
					return // the right mapping accepted is what this kind is for
				}
				wrongIV, wrongSS := real, real
				wrongIV.ivoff ^= 2048
				wrongSS.ss = 4608 - real.ss
				for _, given := range []side{wrongIV, wrongSS} {
					err, same := run(plain, real, given)
					if !errors.Is(err, errclass.WrongKey) || !same {
						t.Errorf("given %d/iv%d: want a refusal (WrongKey) with the device untouched, got %v (untouched: %v)", given.ss, given.ivoff, err, same)
					}
				}
			})
		}
	}
	t.Run("blank", func(t *testing.T) {
		dev := blockdev.NewMem(data + testMeta)
		cfg := Config{Old: reals[0].cfg(), New: target.cfg(), Window: testWindow, MetaSize: testMeta}
		if _, err := Convert(context.Background(), Target{Data: dev, Meta: dev, MetaOnData: true}, cfg, Options{}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestHalfConvertedLead: a device whose first windows were converted by a
// run whose header is gone is refused by a new conversion with any new
// mapping, and left as it was.
func TestHalfConvertedLead(t *testing.T) {
	const data = 1 << 20
	old := sides[1]
	first := side{cipher: "aes-xts-plain64", key: key(64, 81), ss: 512}
	for _, next := range []side{first, {cipher: "aes-xts-plain64", key: key(64, 82), ss: 512}, {cipher: "aes-cbc-essiv:sha256", key: key(32, 83), ss: 4096}} {
		for _, converted := range []int{testWindow, 3 * testWindow} {
			plain := fsLike(data, 21)
			ct := bytes.Clone(plain)
			crypt(t, old, ct, true)
			head := bytes.Clone(plain[:converted])
			crypt(t, first, head, true)
			copy(ct, head)
			dev := blockdev.NewMem(data + testMeta)
			copy(dev.Bytes(), ct)
			before := devHash(dev)
			cfg := Config{Old: old.cfg(), New: next.cfg(), Window: testWindow, MetaSize: testMeta}
			_, err := Convert(context.Background(), Target{Data: dev, Meta: dev, MetaOnData: true}, cfg, Options{})
			if !errors.Is(err, errclass.WrongKey) || devHash(dev) != before {
				t.Fatalf("new %s, %d bytes converted before: want WrongKey and the device untouched, got %v", next.cipher, converted, err)
			}
			if next.key[0] != first.key[0] && !strings.Contains(err.Error(), "half converted") {
				t.Errorf("message does not say half converted: %v", err)
			}
		}
	}
}
