package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// verify of a conversion to a spec without a userspace cipher: the header,
// log and layout audit needs no cipher and passes; --data needs the
// kernel's dm-crypt, and where it cannot run (no device-mapper here) it
// fails with one line naming the spec, exit code NoCrypto, device
// untouched. tests/vm TestKernelSpecs runs verify --data with the kernel.
func TestVerifyKernelOnlySpec(t *testing.T) {
	if _, err := os.Stat("/sys/module/dm_crypt"); err == nil {
		t.Skip("dm-crypt is loaded here: the kernel would run the spec (tests/vm covers that)")
	}
	c := &runner{t: t, dir: t.TempDir()}
	img, _ := c.makeImage("disk.img", 4<<20, 4<<20, testKey(1))
	meta := filepath.Join(c.dir, "m.meta")
	oldKey, newKey := c.file("old.key", testKey(1)), c.file("new.key", testKey(2))
	tg, cleanup, err := openTarget(img, meta, 4<<20, blockdev.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's serpent is not here; aes-xts-plain64 stands in for it
	// to write a conversion that records serpent-xts-plain64.
	standIn := func(m sectorcipher.Mapping, _ uint64) (sectorcipher.Cipher, error) {
		if m.Spec.KernelOnly() {
			m.Spec, _ = sectorcipher.ParseSpec("aes-xts-plain64")
		}
		return sectorcipher.New(m)
	}
	cfg := engine.Config{
		Old:  engine.Side{Cipher: "aes-xts-plain64", Key: testKey(1)},
		New:  engine.Side{Cipher: "serpent-xts-plain64", Key: testKey(2)},
		Mode: "journal", Window: 256 << 10,
	}
	_, err = engine.Convert(context.Background(), tg, cfg, engine.Options{Ciphers: standIn})
	cleanup(false)
	if err != nil {
		t.Fatal(err)
	}
	before := hashFile(t, img)

	var out, errb bytes.Buffer
	if code := run([]string{"cryptshift", "verify", "--metadata", meta, "--old-key-file", oldKey, "--new-key-file", newKey, img}, &out, &errb); code != 0 {
		t.Fatalf("verify without --data: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "serpent-xts-plain64") || !strings.Contains(out.String(), ": clean") {
		t.Errorf("verify without --data:\n%s", out.String())
	}
	out.Reset()
	errb.Reset()
	code := run([]string{"cryptshift", "verify", "--data", "--metadata", meta, "--old-key-file", oldKey, "--new-key-file", newKey, img}, &out, &errb)
	if code != exitNoCrypto {
		t.Fatalf("verify --data: exit %d, want %d\n%s%s", code, exitNoCrypto, out.String(), errb.String())
	}
	msg := strings.TrimRight(errb.String(), "\n")
	if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "cryptshift: ") || !strings.Contains(msg, "serpent-xts-plain64 has no userspace cipher") {
		t.Errorf("verify --data: want one line naming the spec, got:\n%s", errb.String())
	}
	t.Logf("verify --data says: %s", msg)
	if hashFile(t, img) != before {
		t.Error("verify --data changed the device")
	}
}
