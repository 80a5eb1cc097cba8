package vm

import (
	"bytes"
	"crypto/aes"
	"math/rand/v2"
	"testing"

	"golang.org/x/crypto/xts"
)

// TestSmokePlainDmCrypt opens a plain dm-crypt mapping with cryptsetup in a real
// kernel, writes known data through it, and checks from the host that the disk
// holds AES-XTS ciphertext of that data (sector number as tweak) while the
// guest, after closing and reopening the mapping, reads the plaintext back.
func TestSmokePlainDmCrypt(t *testing.T) {
	const size = 1 << 20
	rng := rand.New(rand.NewPCG(1, 2))
	key := make([]byte, 64)
	plain := make([]byte, size)
	for i := range key {
		key[i] = byte(rng.Uint32())
	}
	for i := range plain {
		plain[i] = byte(rng.Uint32())
	}
	data := newDisk(t, "data.img", 4<<20, nil)
	out := newDisk(t, "out.img", size, nil)

	res := Run(t, Config{
		Image: testImage,
		Disks: []string{data, out},
		Files: map[string][]byte{"/etc/vm/key": key, "/etc/vm/plain": plain},
		Script: `set -e
open() { cryptsetup open --type plain --cipher aes-xts-plain64 --key-file /etc/vm/key --key-size 512 /dev/vda x; }
open
dd if=/etc/vm/plain of=/dev/mapper/x bs=64k conv=fsync 2>/dev/null
cryptsetup close x
# Reopening drops the mapping's page cache, so the read below goes through the cipher.
open
dd if=/dev/mapper/x of=/dev/vdb bs=64k count=16 conv=fsync 2>/dev/null
cmp /etc/vm/plain /dev/vdb && echo GUEST-READBACK-OK
dmsetup table x
cryptsetup close x
`,
	})
	if !bytes.Contains([]byte(res.Console), []byte("GUEST-READBACK-OK")) {
		t.Errorf("guest did not confirm the read-back\n%s", res.Tail(consoleTail))
	}
	if got := readDisk(t, out); !bytes.Equal(got, plain) {
		t.Errorf("plaintext read back through the guest mapping differs from what was written")
	}
	raw := readDisk(t, data)[:size]
	if bytes.Equal(raw, plain) {
		t.Fatal("the disk holds the plaintext: nothing was encrypted")
	}
	c, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	for s := 0; s < size/512; s++ {
		c.Encrypt(want[s*512:(s+1)*512], plain[s*512:(s+1)*512], uint64(s))
	}
	if !bytes.Equal(raw, want) {
		t.Errorf("the disk does not hold AES-256-XTS (plain64 tweak) ciphertext of the written data")
	}
}
