package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// ext4Image makes an ext4 filesystem of n bytes holding a few files (mke2fs
// -d), as plaintext.
func ext4Image(t *testing.T, dir string, n int64) []byte {
	t.Helper()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o700); err != nil {
		t.Fatal(err)
	}
	for i, body := range []string{"hello\n", strings.Repeat("cryptshift decrypts in place. ", 20000)} {
		if err := os.WriteFile(filepath.Join(src, "f"+string(rune('0'+i))), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, n); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, img).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4 -d: %v %s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecryptCLI decrypts a LUKS2 volume made by stock cryptsetup whose
// data area holds an ext4 filesystem: the refusals leave the image as it
// was, each with its exit code; an interrupted run is paused and status
// and recover work mid-way; a KILL is recovered; the rerun leaves the
// filesystem at byte 0, byte for byte, with no LUKS header for cryptsetup
// or blkid, and e2fsck finds it clean.
func TestDecryptCLI(t *testing.T) {
	c := buildCLI(t)
	dir := t.TempDir()
	im, err := testkit.MakeLUKS2(dir, 1<<20, 8<<20, []string{"--key-size", "256", "--sector-size", "4096"}, [][]string{testkit.CheapArgon2id}, 3)
	if err != nil {
		t.Fatal(err)
	}
	plain := ext4Image(t, dir, int64(len(im.Plain)))
	encryptInto(t, im.Path, im.Passes[0], plain)
	meta := filepath.Join(dir, "meta")
	wrong := c.file("wrong.pass", []byte("not a passphrase"))
	plainDev := filepath.Join(dir, "plain.img")
	if err := os.WriteFile(plainDev, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	before, beforePlain := hashFile(t, im.Path), hashFile(t, plainDev)
	for _, tc := range []struct {
		code int
		dev  string
		args []string
		want string
	}{
		{4, plainDev, []string{"--key-file", im.Passes[0], "--metadata", meta}, "no LUKS header"},
		{3, im.Path, []string{"--key-file", wrong, "--metadata", meta}, ""},
		{2, im.Path, []string{"--key-file", im.Passes[0], "--metadata", meta, "--new-cipher", "aes-xts-plain64"}, "--new-cipher does not apply"},
		{2, im.Path, []string{"--key-file", im.Passes[0]}, "--metadata"},
		{2, im.Path, []string{"--metadata", meta}, "--key-file"},
	} {
		r := c.must(tc.code, nil, append(append([]string{"convert", "--decrypt"}, tc.args...), tc.dev)...)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("convert --decrypt %v: stderr %q lacks %q", tc.args, r.stderr, tc.want)
		}
		if hashFile(t, im.Path) != before || hashFile(t, plainDev) != beforePlain {
			t.Fatalf("convert --decrypt %v changed a device", tc.args)
		}
		os.Remove(meta)
	}
	conv := []string{"convert", "--decrypt", "--window", "1M", "--progress", "plain", "--key-file", im.Passes[0], "--metadata", meta, im.Path}
	c.must(8, []string{hookInterruptAfter + "=2"}, conv...)
	if out, err := testkit.Cryptsetup("open", "--test-passphrase", "--key-file", im.Passes[0], im.Path); err != nil {
		t.Errorf("mid-way, the LUKS2 header's keyslot must still open (for recovery and luksDump): %v %s", err, out)
	}
	if out, _ := testkit.Cryptsetup("luksDump", im.Path); !strings.Contains(out, "cryptshift-reencrypt") {
		t.Errorf("mid-way, luksDump shows no requirement:\n%s", out)
	}
	r := c.must(0, nil, "status", "--metadata", meta, im.Path)
	if !strings.Contains(r.stdout, "moving the data") || !strings.Contains(r.stdout, "2 of 7 moved") {
		t.Errorf("status mid-way:\n%s", r.stdout)
	}
	c.must(0, nil, "verify", "--data", "--metadata", meta, "--key-file", im.Passes[0], im.Path)
	c.must(3, nil, "verify", "--data", "--metadata", meta, "--key-file", wrong, im.Path)
	r = c.must(0, nil, "recover", "--metadata", meta, "--key-file", im.Passes[0], im.Path)
	if !strings.Contains(r.stdout, "paused") {
		t.Errorf("recover: %s", r.stdout)
	}
	c.must(-1, []string{hookKillAfter + "=4"}, conv...)
	c.must(0, nil, "recover", "--metadata", meta, "--key-file", im.Passes[0], im.Path)
	r = c.must(0, nil, conv...)
	if !strings.Contains(r.stdout, "Decryption complete") {
		t.Errorf("convert: %s", r.stdout)
	}
	got, err := os.ReadFile(im.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(plain)], plain) {
		t.Fatalf("the decrypted device differs from the filesystem at byte %d", firstDiffBytes(got, plain))
	}
	if out, err := testkit.Cryptsetup("isLuks", im.Path); err == nil {
		t.Errorf("cryptsetup isLuks still says LUKS: %s", out)
	}
	if out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "TYPE", im.Path).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ext4" {
		t.Errorf("blkid -p: %q %v, want ext4", out, err)
	}
	if out, err := exec.Command("e2fsck", "-fn", im.Path).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	meta2, _ := os.ReadFile(meta)
	if bytes.Contains(meta2, plain[1024:2048]) {
		t.Errorf("--metadata still holds the stashed head")
	}
	// Again: nothing left to do, and DEVICE is no LUKS volume now.
	r = c.must(4, nil, conv...)
	if !strings.Contains(r.stderr, "no LUKS header") {
		t.Errorf("rerun: %s", r.stderr)
	}
}

// encryptInto writes plain as the LUKS2 volume's data, encrypted as
// cryptsetup maps it (no device-mapper on the host).
func encryptInto(t *testing.T, path, passFile string, plain []byte) {
	t.Helper()
	f, err := blockdev.Open(path, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := luks.Open(f, f.Size())
	if err != nil {
		t.Fatal(err)
	}
	pass, _ := os.ReadFile(passFile)
	u, err := v.Unlock(pass, luks.AnySlot)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Wipe()
	m, err := v.Mapping(u)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sectorcipher.New(m.Mapping)
	if err != nil {
		t.Fatal(err)
	}
	ct := bytes.Clone(plain)
	c.Encrypt(ct, 0)
	if _, err := f.WriteAt(ct, m.Offset); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
}

func firstDiffBytes(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestDecryptCLILUKS1 decrypts a LUKS1 volume made by stock cryptsetup
// holding an ext4: mid-way the LUKS1 mark hides it from cryptsetup and
// blkid; at the end the filesystem is at byte 0, blkid says ext4 and
// e2fsck finds it clean.
func TestDecryptCLILUKS1(t *testing.T) {
	c := buildCLI(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "luks1.img")
	const d = 4096 * 512
	if err := os.WriteFile(img, make([]byte, d+6<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	pass := c.file("pass", []byte("luks1 passphrase"))
	if out, err := testkit.Cryptsetup(append([]string{"luksFormat", "--batch-mode", "--type", "luks1", "--key-size", "512", img, pass}, testkit.CheapPBKDF2...)...); err != nil {
		t.Fatalf("luksFormat: %v %s", err, out)
	}
	plain := ext4Image(t, dir, 6<<20)
	encryptInto(t, img, pass, plain)
	meta := filepath.Join(dir, "meta")
	conv := []string{"convert", "--decrypt", "--window", "1M", "--progress", "none", "--key-file", pass, "--metadata", meta, img}
	c.must(8, []string{hookInterruptAfter + "=1"}, conv...)
	if out, err := testkit.Cryptsetup("isLuks", img); err == nil {
		t.Errorf("mid-way, cryptsetup isLuks says LUKS (the LUKS1 mark must hide it): %s", out)
	}
	r := c.must(0, nil, "status", "--metadata", meta, img)
	if !strings.Contains(r.stdout, "moving the data") {
		t.Errorf("status mid-way:\n%s", r.stdout)
	}
	c.must(0, nil, conv...)
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(plain)], plain) {
		t.Fatalf("the decrypted device differs from the filesystem at byte %d", firstDiffBytes(got, plain))
	}
	if out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "TYPE", img).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ext4" {
		t.Errorf("blkid -p: %q %v, want ext4", out, err)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
}
