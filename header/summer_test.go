package header

import (
	"bytes"
	"testing"
)

func TestSummerSeparatesNoncesKeysAndData(t *testing.T) {
	s1, err := NewSummer(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := NewSummer(bytes.Repeat([]byte{2}, 32))
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("a window's worth of plaintext")
	base := s1.Sum(SumWindowChunk, 5, 3, data)
	if s1.Sum(SumWindowChunk, 5, 3, data) != base {
		t.Fatal("not deterministic")
	}
	seen := map[[16]byte]string{base: "base"}
	for name, got := range map[string][16]byte{
		"other domain": s1.Sum(SumUnitOld, 5, 3, data),
		"other a":      s1.Sum(SumWindowChunk, 6, 3, data),
		"a above 2^56": s1.Sum(SumWindowChunk, 5|1<<56, 3, data), // truncated to 56 bits: same nonce
		"other b":      s1.Sum(SumWindowChunk, 5, 4, data),
		"other key":    s2.Sum(SumWindowChunk, 5, 3, data),
		"other data":   s1.Sum(SumWindowChunk, 5, 3, append(bytes.Clone(data), 0)),
	} {
		if name == "a above 2^56" {
			if got != base {
				t.Fatal("nonce does not keep the low 56 bits of a, as FORMAT.md says")
			}
			continue
		}
		if prev, dup := seen[got]; dup {
			t.Fatalf("%s gives the same digest as %s", name, prev)
		}
		seen[got] = name
	}
}
