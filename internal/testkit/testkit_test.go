package testkit

import (
	"bytes"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/header"
)

func TestPlaintextAndKey(t *testing.T) {
	a, b := Plaintext(4096, 1), Plaintext(4096, 2)
	if !bytes.Equal(a, Plaintext(4096, 1)) || bytes.Equal(a, b) {
		t.Fatal("Plaintext is not a function of its seed")
	}
	if !bytes.HasPrefix(a[512:], []byte("sector 00000001|")) {
		t.Fatalf("sector 1 does not name itself: %q", a[512:528])
	}
	if bytes.Equal(Key(32, 1), Key(32, 2)) || !bytes.Equal(Key(32, 1), Key(32, 1)) {
		t.Fatal("Key is not a function of its seed")
	}
}

// TestCryptoDevices writes plaintext through the new mapping and reads it
// back through it, and finds on the disk what the cipher makes of it at the
// recorded offset.
func TestCryptoDevices(t *testing.T) {
	const size, off = 16 << 10, 8 << 10
	disk := blockdev.NewMem(off + size)
	key := Key(64, 3)
	h := &header.Header{DataSize: size, OldOffset: 0, NewOffset: off,
		Old: header.Mapping{Cipher: "none", SectorSize: 512},
		New: header.Mapping{Cipher: "aes-xts-plain64", KeyBytes: 64, SectorSize: 4096}}
	cd := &CryptoDevices{Data: disk}
	_, nw, err := cd.Open(h, nil, key)
	if err != nil {
		t.Fatal(err)
	}
	plain := Plaintext(size, 5)
	if _, err := nw.WriteAt(plain, 0); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(plain)
	Cipher(t, Mapping(t, "aes-xts-plain64", key, 4096)).Encrypt(want, 0)
	if !bytes.Equal(disk.Bytes()[off:], want) {
		t.Fatal("the disk does not hold the new mapping's ciphertext at the new offset")
	}
	back := make([]byte, size)
	if _, err := nw.ReadAt(back, 0); err != nil || !bytes.Equal(back, plain) {
		t.Fatalf("read back through the mapping: %v", err)
	}
	if _, err := nw.WriteAt(make([]byte, 100), 512); err == nil {
		t.Fatal("a write of part of a sector was accepted")
	}
	if cd.Opened.Load() != 1 || cd.Writes.Load() != size || cd.Reads.Load() != size {
		t.Fatalf("counted %d opens, %d bytes written, %d read", cd.Opened.Load(), cd.Writes.Load(), cd.Reads.Load())
	}
}

func TestVMSeed(t *testing.T) {
	t.Setenv(SeedEnv, "12345")
	if s := VMSeed(t); s != 12345 {
		t.Fatalf("VMSeed = %d with %s=12345", s, SeedEnv)
	}
}
