package luks

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"reflect"
	"testing"
)

// FuzzLUKS1 feeds arbitrary phdr bytes and device sizes to the LUKS1
// reader: it must not panic, and what it accepts must satisfy the checks
// it claims (every keyslot inside the header area and disjoint).
func FuzzLUKS1(f *testing.F) {
	seed := make([]byte, phdrSize)
	copy(seed, magic1st)
	seed[7] = 1
	copy(seed[8:], "aes")
	copy(seed[40:], "xts-plain64")
	copy(seed[72:], "sha256")
	binary.BigEndian.PutUint32(seed[104:], 4096)
	binary.BigEndian.PutUint32(seed[108:], 64)
	for i := 0; i < numKeyslots1; i++ {
		o := keyslot1Offset + i*keyslot1Size
		binary.BigEndian.PutUint32(seed[o:], slotDisabled)
		binary.BigEndian.PutUint32(seed[o+40:], uint32(8+i*504))
		binary.BigEndian.PutUint32(seed[o+44:], stripes)
	}
	f.Add(seed, int64(4<<20))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		if len(b) > 4096 || size < 0 || size > 1<<40 {
			return
		}
		dev := make([]byte, 4096)
		copy(dev, b)
		v, err := Open(sparseDev{head: dev, size: size}, size)
		if _, derr := Detect(sparseDev{head: dev, size: size}, size); derr != nil {
			t.Fatalf("Detect: %v", derr)
		}
		if err != nil || v.V1 == nil {
			return
		}
		h := v.V1
		secs := afSectors(uint64(h.KeyBytes))
		for i, k := range h.Keyslots {
			if k.Stripes != stripes || uint64(k.KeyMaterialOffset)*sectorSize < phdrSize {
				t.Fatalf("accepted keyslot %d: %+v", i, k)
			}
			if h.PayloadOffset != 0 && uint64(k.KeyMaterialOffset)+secs > uint64(h.PayloadOffset) {
				t.Fatalf("accepted keyslot %d running into the payload", i)
			}
			if (uint64(k.KeyMaterialOffset)+secs)*sectorSize > uint64(size) {
				t.Fatalf("accepted keyslot %d beyond the device", i)
			}
		}
		again, err := parseLUKS1(h.Raw[:], size)
		if err != nil || !reflect.DeepEqual(again, h) {
			t.Fatalf("re-reading the raw phdr: %v", err)
		}
	})
}

// sparseDev is a device of size bytes holding head at offset 0 and zeros
// after it.
type sparseDev struct {
	head []byte
	size int64
}

func (s sparseDev) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	if off < int64(len(s.head)) {
		copy(p, s.head[off:])
	}
	return len(p), nil
}

// FuzzLUKS2 feeds arbitrary JSON areas to the LUKS2 reader inside a pair
// of binary headers with correct checksums, so that the fuzzer reaches
// the JSON validation instead of stopping at the checksum. What it accepts
// must keep its text, fit the device, and parse again to the same result.
func FuzzLUKS2(f *testing.F) {
	f.Add([]byte(`{"keyslots":{},"tokens":{},"segments":{"0":{"type":"crypt","offset":"65536","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":512}},"digests":{"0":{"type":"pbkdf2","keyslots":[],"segments":["0"],"hash":"sha256","iterations":1000,"salt":"AAAA","digest":"AAAA"}},"config":{"json_size":"12288","keyslots_size":"16384"}}`), uint16(1))
	f.Fuzz(func(t *testing.T, js []byte, seq uint16) {
		const hdr = minHdrSize
		if len(js) >= hdr-binHeaderSize {
			return
		}
		img := buildFuzzImage(js, seq)
		if _, err := Detect(byteDev(img), int64(len(img))); err != nil {
			t.Fatalf("Detect: %v", err)
		}
		v, err := Open(byteDev(img), int64(len(img)))
		if err != nil {
			return
		}
		m := v.V2.Meta
		if v.V2.Offset != hdr || !bytes.Equal(m.Raw, bytes.TrimRight(js, "\x00")) {
			t.Fatalf("used copy at %d (the secondary has the higher seqid), raw %q", v.V2.Offset, m.Raw)
		}
		if 2*hdr+m.Config.KeyslotsSize > uint64(len(img)) {
			t.Fatal("accepted keyslots area beyond the device")
		}
		for id, k := range m.Keyslots {
			if k.Area.Offset < 2*hdr || k.Area.Offset+k.Area.Size > 2*hdr+m.Config.KeyslotsSize {
				t.Fatalf("accepted keyslot %d area %+v", id, k.Area)
			}
		}
		area := make([]byte, hdr-binHeaderSize)
		copy(area, m.Raw)
		again, err := parseMetadata(area, hdr)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("re-parsing the kept text: %v", err)
		}
	})
}

// buildFuzzImage is a device holding two LUKS2 copies of 16 KiB with the
// JSON area js and correct checksums, the secondary one seqid newer.
func buildFuzzImage(js []byte, seq uint16) []byte {
	const hdr = minHdrSize
	img := make([]byte, 2*hdr+16<<10)
	for i, off := range []int{0, hdr} {
		b := img[off : off+hdr]
		if i == 0 {
			copy(b, magic1st)
		} else {
			copy(b, magic2nd)
		}
		binary.BigEndian.PutUint16(b[6:], 2)
		binary.BigEndian.PutUint64(b[8:], hdr)
		binary.BigEndian.PutUint64(b[16:], uint64(seq)+uint64(i))
		copy(b[72:], "sha256")
		binary.BigEndian.PutUint64(b[256:], uint64(off))
		copy(b[binHeaderSize:], js)
		sum := sha256.Sum256(b)
		copy(b[448:], sum[:])
	}
	return img
}
