package header

import (
	"bytes"
	"testing"
)

// FuzzHeaderUnmarshal feeds arbitrary copies to Unmarshal. With reseal set,
// the crc and MAC are recomputed over the input first, so that the fuzzer
// reaches the field checks instead of stopping at the crc every time.
func FuzzHeaderUnmarshal(f *testing.F) {
	valid := mustMarshal(f, validHeader(), testKey)
	f.Add(valid, false)
	f.Add(valid[:400], true)
	f.Fuzz(func(t *testing.T, in []byte, reseal bool) {
		if len(in) != Size {
			if _, err := Unmarshal(in); err == nil {
				t.Fatalf("accepted a %d-byte copy", len(in))
			}
		}
		b := make([]byte, Size)
		copy(b, in)
		if reseal {
			sealMAC(b, testKey)
			sealCRC(b)
		}
		h, err := Unmarshal(b)
		if err != nil {
			return
		}
		if err := h.Check(); err != nil {
			t.Fatalf("Unmarshal accepted a header that fails Check: %v", err)
		}
		again, err := h.Marshal(testKey)
		if err != nil {
			t.Fatalf("an accepted header does not marshal: %v", err)
		}
		// Every byte outside the MAC and crc is determined by the fields.
		if !bytes.Equal(again[:offMAC], b[:offMAC]) || !bytes.Equal(again[offMAC+32:offCRC], b[offMAC+32:offCRC]) {
			t.Fatal("re-marshalled body differs from the accepted input")
		}
		if VerifyMAC(b, testKey) == nil && !bytes.Equal(again, b) {
			t.Fatal("re-marshalled copy differs from an authentic input")
		}
	})
}
