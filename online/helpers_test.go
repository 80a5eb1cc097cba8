package online

import (
	"testing"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

func mustSpec(t testing.TB, s string) sectorcipher.Spec {
	t.Helper()
	sp, err := sectorcipher.ParseSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func key(n int, seed byte) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}
