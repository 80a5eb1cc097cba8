package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/testkit"
)

// TestLUKS1ConvertCLI drives the headline LUKS1 conversion through the
// binary: aes-cbc-essiv:sha256 256-bit to aes-xts-plain64 512-bit, the
// metadata at the end of DEVICE. The refusals leave the image as it was,
// each with its exit code; mid-way stock cryptsetup refuses the volume
// (isLuks, open --test-passphrase) and `status` shows the LUKS1 side;
// `verify --data` and `recover` work with a passphrase; a KILL mid-window
// is recovered; the rerun completes to a volume stock cryptsetup opens with
// every passphrase, same UUID, the new key in luksDump --dump-volume-key.
func TestLUKS1ConvertCLI(t *testing.T) {
	c := buildCLI(t)
	const size, meta = 8 << 20, 1 << 20
	im, err := testkit.MakeLUKS1(t.TempDir(), size, []string{"--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--hash", "sha256"}, 2, size-2<<20-meta, 5)
	if err != nil {
		t.Fatal(err)
	}
	wrong := c.file("wrong.pass", []byte("not a passphrase"))
	before := hashFile(t, im.Path)
	uuid := luksUUID(t, im.Path)
	both := []string{"--key-file", im.Passes[0], "--key-file", im.Passes[1]}
	for _, tc := range []struct {
		code int
		args []string
		want string
	}{
		{2, []string{"--key-file", im.Passes[0]}, "keyslot(s) 1 of the LUKS1 volume are active"},
		{3, []string{"--key-file", im.Passes[0], "--key-file", wrong}, "opens no keyslot"},
		{2, []string{"--key-file", im.Passes[0], "--old-cipher", "aes-xts-plain64"}, "--old-cipher does not apply to a LUKS1 volume"},
		{2, append([]string{"--new-sector-size", "4096"}, both...), "512-byte sectors only"},
		{2, append([]string{"--resilience", "shift"}, both...), "shift"},
		{2, []string{}, "--key-file PASSFILE"},
		{4, []string{"--key-file", im.Passes[0], "--online", "x"}, "offline only"},
		// The default 32 MiB metadata area does not fit an 8 MiB device.
		{4, both, "metadata"},
	} {
		r := c.must(tc.code, nil, append(append([]string{"convert"}, tc.args...), im.Path)...)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("convert %v: stderr %q lacks %q", tc.args, r.stderr, tc.want)
		}
		if hashFile(t, im.Path) != before {
			t.Fatalf("convert %v changed the image", tc.args)
		}
	}
	conv := append(append([]string{"convert", "--window", "256K", "--metadata-size", "1M", "--new-cipher", "aes-xts-plain64", "--new-key-size", "512", "--progress", "plain"}, both...), im.Path)
	r := c.must(8, []string{hookInterruptAfter + "=3"}, conv...)
	for _, want := range []string{"keyslot(s) 0, 1 get the new volume key", "last 1 MiB of DEVICE"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("convert did not say %q:\n%s", want, r.stdout)
		}
	}
	if out, err := testkit.Cryptsetup("isLuks", im.Path); err == nil {
		t.Fatalf("mid-way, stock isLuks accepts the volume: %s", out)
	}
	if out, err := testkit.Cryptsetup("open", "--test-passphrase", "--key-file", im.Passes[0], im.Path); err == nil || !strings.Contains(out, "not a valid LUKS device") {
		t.Fatalf("mid-way, stock open --test-passphrase: %v\n%s", err, out)
	}
	r = c.must(0, nil, "status", im.Path)
	for _, want := range []string{"LUKS1, UUID " + uuid, "erased at the end 0, 1", "in progress (magic", "paused: 3 of 20 windows", "Metadata:    end of device"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}
	c.must(0, nil, "verify", "--data", "--key-file", im.Passes[1], im.Path)
	r = c.must(0, nil, "recover", "--key-file", im.Passes[1], im.Path)
	if !strings.Contains(r.stdout, "paused") {
		t.Errorf("recover: %s", r.stdout)
	}
	// Recovery needs a passphrase of the conversion.
	c.must(3, nil, "recover", "--key-file", wrong, im.Path)
	// A KILL after window 6: recover needs only one passphrase.
	c.must(-1, []string{hookKillAfter + "=6"}, conv...)
	c.must(0, nil, "recover", "--key-file", im.Passes[0], im.Path)
	r = c.must(0, nil, conv...)
	if !strings.Contains(r.stdout, "Conversion complete") || !strings.Contains(r.stdout, uuid) {
		t.Errorf("convert: %s", r.stdout)
	}
	r = c.must(0, nil, "status", im.Path)
	if !strings.Contains(r.stdout, "none recorded") {
		t.Errorf("final status:\n%s", r.stdout)
	}
	if out, err := testkit.Cryptsetup("isLuks", im.Path); err != nil {
		t.Fatalf("stock isLuks after the conversion: %v %s", err, out)
	}
	dump, err := testkit.Cryptsetup("luksDump", im.Path)
	if err != nil || !strings.Contains(dump, "xts-plain64") || !strings.Contains(dump, "MK bits:       \t512") || !strings.Contains(dump, uuid) {
		t.Fatalf("luksDump: %v\n%s", err, dump)
	}
	b, err := os.ReadFile(im.Path)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range im.Passes {
		if out, err := testkit.Cryptsetup("open", "--test-passphrase", "--key-file", p, im.Path); err != nil {
			t.Fatalf("stock open --test-passphrase with passphrase %d: %v\n%s", i, err, out)
		}
		out, err := testkit.Cryptsetup("luksDump", "--batch-mode", "--dump-volume-key", "--key-file", p, im.Path)
		pass, _ := os.ReadFile(p)
		plain, vk, err2 := testkit.LUKSData(b, pass)
		if err != nil || err2 != nil || len(vk) != 64 || bytes.Equal(vk[:32], im.VK) || !bytes.Equal(plain[:len(im.Plain)], im.Plain) {
			t.Fatalf("passphrase %d after the conversion: %v %v\n%s", i, err, err2, out)
		}
		if !strings.Contains(strings.Join(strings.Fields(out), ""), hexKey(vk)) {
			t.Fatalf("passphrase %d: luksDump --dump-volume-key does not show the new key:\n%s", i, out)
		}
	}
}

// TestLUKS1ConvertCLINoRoom: a 128-bit LUKS1 volume (payload at 1 MiB)
// cannot take 512-bit keyslots: refused, exit 4, saying which payload
// offset it would need, the image untouched.
func TestLUKS1ConvertCLINoRoom(t *testing.T) {
	c := buildCLI(t)
	im, err := testkit.MakeLUKS1(t.TempDir(), 8<<20, []string{"--cipher", "aes-cbc-essiv:sha256", "--key-size", "128"}, 1, 1<<20, 5)
	if err != nil {
		t.Fatal(err)
	}
	before := hashFile(t, im.Path)
	r := c.must(4, nil, "convert", "--metadata-size", "1M", "--new-cipher", "aes-xts-plain64", "--new-key-size", "512", "--key-file", im.Passes[0], im.Path)
	if !strings.Contains(r.stderr, "no room for 512-bit keyslots") || !strings.Contains(r.stderr, "payload offset of at least") {
		t.Errorf("stderr: %s", r.stderr)
	}
	if hashFile(t, im.Path) != before {
		t.Fatal("the refused conversion changed the image")
	}
}

func hexKey(k []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(k))
	for _, b := range k {
		out = append(out, digits[b>>4], digits[b&15])
	}
	return string(out)
}
