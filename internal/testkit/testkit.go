// Package testkit holds what the tests of several packages build their
// cases from: deterministic keys and plaintext, sector ciphers by name, a
// stand-in for the kernel's crypto devices, and the seed of the real-kernel
// suite's pseudo-random schedules. It is for tests only; no shipped package
// imports it.
package testkit

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

// Key is a deterministic n-byte key: distinct seeds give distinct keys, and
// no key is all one byte.
func Key(n int, seed byte) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = seed + byte(i)*7
	}
	return k
}

// Plaintext is n deterministic bytes that the engine's plausibility check
// takes for a filesystem: text-like, with every 512-byte sector naming
// itself, so a misplaced sector is also visible in a dump.
func Plaintext(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 11))
	b := make([]byte, n)
	for i := range b {
		b[i] = "abcdefghijklmnop \n"[r.IntN(18)]
	}
	for off := 0; off+16 <= n; off += 512 {
		copy(b[off:], fmt.Sprintf("sector %08d|", off/512))
	}
	return b
}

// Cipher is the sector cipher of m, failing the test when m is invalid.
func Cipher(t testing.TB, m sectorcipher.Mapping) sectorcipher.Cipher {
	t.Helper()
	c, err := sectorcipher.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Mapping is the mapping of a named cipher spec, failing the test when the
// spec is unknown.
func Mapping(t testing.TB, cipher string, key []byte, sectorSize int) sectorcipher.Mapping {
	t.Helper()
	spec, err := sectorcipher.ParseSpec(cipher)
	if err != nil {
		t.Fatal(err)
	}
	return sectorcipher.Mapping{Spec: spec, Key: key, SectorSize: sectorSize}
}

// SeedEnv names the variable that replays a real-kernel test's schedule.
const SeedEnv = "CRYPTSHIFT_VM_SEED"

// VMSeed is the seed of a real-kernel test's pseudo-random schedule: the
// value of CRYPTSHIFT_VM_SEED when it is set, so that a failing run can be
// replayed, else one from the clock.
func VMSeed(t testing.TB) uint64 {
	t.Helper()
	s := os.Getenv(SeedEnv)
	if s == "" {
		return uint64(time.Now().UnixNano())
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", SeedEnv, err)
	}
	return v
}

// Spec parses a cipher spec the test names, failing the test if it does
// not parse.
func Spec(t testing.TB, s string) sectorcipher.Spec {
	t.Helper()
	sp, err := sectorcipher.ParseSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}
