package luks

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// roundTripImage is the head of a device (both 16 KiB copies, the same
// seqid, so the primary is used) holding the JSON area js and the given
// label and subsystem, with correct checksums.
func roundTripImage(js []byte, seq uint16, label, subsys string) []byte {
	const hdr = minHdrSize
	img := make([]byte, 2*hdr)
	for i, off := range []int{0, hdr} {
		b := img[off : off+hdr]
		if i == 0 {
			copy(b, magic1st)
		} else {
			copy(b, magic2nd)
		}
		binary.BigEndian.PutUint16(b[6:], 2)
		binary.BigEndian.PutUint64(b[8:], hdr)
		binary.BigEndian.PutUint64(b[16:], uint64(seq))
		copy(b[24:71], label)
		copy(b[72:], "sha256")
		copy(b[104:168], strings.Repeat("salt", 16))
		copy(b[168:207], "fuzz-uuid")
		copy(b[208:255], subsys)
		binary.BigEndian.PutUint64(b[256:], uint64(off))
		copy(b[binHeaderSize:], js)
		sum := sha256.Sum256(b)
		copy(b[448:], sum[:])
	}
	return img
}

// stripRaw clears the raw JSON kept beside the decoded fields, which a
// round trip compacts.
func stripRaw(m *Metadata) Metadata {
	c := *m
	c.Raw, c.Config.Raw = nil, nil
	c.Keyslots, c.Tokens, c.Segments, c.Digests = map[int]*Keyslot2{}, map[int]*Token{}, map[int]*Segment{}, map[int]*Digest{}
	for id, k := range m.Keyslots {
		x := *k
		x.Raw = nil
		c.Keyslots[id] = &x
	}
	for id, k := range m.Tokens {
		x := *k
		x.Raw = nil
		c.Tokens[id] = &x
	}
	for id, k := range m.Segments {
		x := *k
		x.Raw = nil
		c.Segments[id] = &x
	}
	for id, k := range m.Digests {
		x := *k
		x.Raw = nil
		c.Digests[id] = &x
	}
	return c
}

// FuzzLUKS2RoundTrip: every header the reader accepts encodes (seqid + 1)
// into a pair the reader accepts again, both copies valid, with the same
// decoded content, the same JSON, the same binary fields; and encoding is
// a fixpoint: the second encoding is byte for byte the first.
func FuzzLUKS2RoundTrip(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/fuzz/FuzzLUKS2/*")
	for _, p := range seeds {
		// Reuse the reader's corpus of cryptsetup-made JSON areas.
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		if len(lines) > 1 {
			var js []byte
			if s, ok := strings.CutPrefix(lines[1], "[]byte("); ok {
				var str string
				if json.Unmarshal([]byte(strings.TrimSuffix(s, ")")), &str) == nil {
					js = []byte(str)
				}
			}
			if js != nil {
				f.Add(js, uint16(3), "label", "subsystem")
			}
		}
	}
	f.Add([]byte(`{"keyslots":{},"tokens":{"1":{"type":"x","keyslots":[],"z":[1, 2.50, -0e1, "\u00e9<&>"]}},"segments":{"0":{"type":"crypt","offset":"65536","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":512}},"digests":{"0":{"type":"pbkdf2","keyslots":[],"segments":["0"],"hash":"sha256","iterations":1000,"salt":"AAAA","digest":"AAAA"}},"config":{"json_size":"12288","keyslots_size":"16384"}, "extra" : {"k":null}}`), uint16(1), "", "")
	f.Fuzz(func(t *testing.T, js []byte, seq uint16, label, subsys string) {
		if len(js) >= minHdrSize-binHeaderSize || seq == 0xffff {
			return
		}
		const size = 1 << 30
		v1, err := Open(sparseDev{head: roundTripImage(js, seq, label, subsys), size: size}, size)
		if err != nil {
			return
		}
		h1 := v1.V2
		d1, err := h1.Draft()
		if err != nil {
			t.Fatalf("Draft of an accepted header: %v", err)
		}
		e1, err := EncodeLUKS2(d1, h1.SeqID+1)
		if err != nil {
			t.Fatalf("EncodeLUKS2 of an accepted header: %v", err)
		}
		v2, err := Open(sparseDev{head: append(bytes.Clone(e1[0]), e1[1]...), size: size}, size)
		if err != nil {
			t.Fatalf("re-reading the encoded header: %v", err)
		}
		h2 := v2.V2
		if h2.Primary != nil || h2.Secondary != nil || h2.SeqID != h1.SeqID+1 {
			t.Fatalf("encoded copies: primary %v, secondary %v, seqid %d (from %d)", h2.Primary, h2.Secondary, h2.SeqID, h1.SeqID)
		}
		if h2.Label != h1.Label || h2.Subsystem != h1.Subsystem || h2.UUID != h1.UUID || h2.ChecksumAlg != h1.ChecksumAlg || h2.HdrSize != h1.HdrSize {
			t.Fatalf("binary fields changed: %+v -> %+v", h1, h2)
		}
		if a, b := stripRaw(h1.Meta), stripRaw(h2.Meta); !reflect.DeepEqual(a, b) {
			t.Fatalf("decoded metadata changed:\n%+v\n%+v", a, b)
		}
		var c bytes.Buffer
		if err := json.Compact(&c, h1.Meta.Raw); err != nil || !bytes.Equal(c.Bytes(), h2.Meta.Raw) {
			t.Fatalf("JSON text is not the compacted original: %v", err)
		}
		d2, err := h2.Draft()
		if err != nil {
			t.Fatal(err)
		}
		d2.salts = d1.salts
		e2, err := EncodeLUKS2(d2, h1.SeqID+1)
		if err != nil || !bytes.Equal(e1[0], e2[0]) || !bytes.Equal(e1[1], e2[1]) {
			t.Fatalf("encoding is not a fixpoint: %v", err)
		}
		// The ordered editor keeps every member: setting the config to
		// itself changes nothing.
		same, err := editJSON(d2.JSON, []string{"config"}, h2.Meta.Config.Raw)
		if err != nil || !bytes.Equal(same, d2.JSON) {
			t.Fatalf("editJSON with the same config changed the text: %v\n%s\n%s", err, d2.JSON, same)
		}
	})
}
