package engine

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/luks"
)

// dumpedKey is the volume key `luksDump --dump-volume-key` prints.
func dumpedKey(t *testing.T, path, passFile string) []byte {
	t.Helper()
	out := cs(t, "luksDump", "--batch-mode", "--dump-volume-key", "--key-file", passFile, path)
	i := strings.Index(out, "MK dump:")
	if i < 0 {
		t.Fatalf("luksDump --dump-volume-key:\n%s", out)
	}
	var hexs strings.Builder
	for _, f := range strings.Fields(out[i+len("MK dump:"):]) {
		if len(f) != 2 {
			break
		}
		hexs.WriteString(f)
	}
	k, err := hex.DecodeString(hexs.String())
	if err != nil {
		t.Fatalf("luksDump key %q: %v", hexs.String(), err)
	}
	return k
}

// TestLUKS1Convert converts a LUKS1 aes-cbc-essiv:sha256 256-bit volume
// stock cryptsetup made (two keyslots) to aes-xts-plain64 with a 512-bit
// key, its metadata at the end of the device, pausing half-way: mid-way
// stock cryptsetup sees no LUKS volume (isLuks, open --test-passphrase
// refuse), status says what is kept; at the end stock cryptsetup opens
// each passphrase to the new key (luksDump --dump-volume-key), with the
// same UUID, hash and iterations, the data decrypt to what was written,
// and the old keyslots' material is overwritten.
func TestLUKS1Convert(t *testing.T) {
	const size, meta = 8 << 20, 1 << 20
	im, err := testkit.MakeLUKS1(t.TempDir(), size, []string{"--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--hash", "sha256"}, 2, size-2<<20-meta, 11)
	if err != nil {
		t.Fatal(err)
	}
	passes := readPasses(t, im)
	before, err := os.ReadFile(im.Path)
	if err != nil {
		t.Fatal(err)
	}
	v0, err := luks.Open(blockdev.MemFrom(before), int64(len(before)))
	if err != nil {
		t.Fatal(err)
	}
	dev := openImage(t, im.Path)
	ctx, cancel := context.WithCancel(context.Background())
	var notice string
	req := LUKS1Request{LUKSRequest: LUKSRequest{Passphrases: passes, KeySlot: luks.AnySlot, NewCipher: "aes-xts-plain64", NewKeyBytes: 64,
		Window: 256 << 10, Notify: func(s string) { notice = s }}, MetaSize: meta}
	_, err = ConvertLUKS1(ctx, dev, req, Options{Hooks: &Hooks{AfterWindow: func(done uint64) {
		if done == 5 {
			cancel()
		}
	}}})
	if !errors.Is(err, errclass.Paused) {
		t.Fatalf("want a pause, got %v", err)
	}
	for _, want := range []string{"keyslot(s) 0, 1 get the new volume key, as keyslot(s)", "last 1 MiB of DEVICE"} {
		if !strings.Contains(notice, want) {
			t.Errorf("notice lacks %q: %q", want, notice)
		}
	}
	if out, err := testkit.Cryptsetup("isLuks", im.Path); err == nil {
		t.Fatalf("mid-way, stock isLuks accepts the volume:\n%s", out)
	}
	out, err := testkit.Cryptsetup("open", "--test-passphrase", "--key-file", im.Passes[0], im.Path)
	if err == nil || !strings.Contains(out, "not a valid LUKS device") {
		t.Fatalf("mid-way, stock open --test-passphrase: %v\n%s", err, out)
	}
	st, err := ReadLUKS1Status(dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != luksConverting || len(st.Keyslots) != 2 || intList(st.Erased) != "0, 1" || st.Metadata != "end of device" || st.Engine == nil || st.Engine.Done != 5 {
		t.Fatalf("status mid-way: %+v", st)
	}
	// One passphrase alone resumes: it opens both keys.
	res, err := ConvertLUKS1(context.Background(), dev, LUKS1Request{LUKSRequest: LUKSRequest{Passphrases: passes[1:], KeySlot: luks.AnySlot}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Finished || res.UUID != v0.UUID {
		t.Fatalf("result %+v", res)
	}
	cs(t, "isLuks", im.Path)
	dump := cs(t, "luksDump", im.Path)
	for _, want := range []string{"Cipher mode:   \txts-plain64", "MK bits:       \t512", "UUID:          \t" + v0.UUID, "Hash spec:     \tsha256"} {
		if !strings.Contains(dump, want) {
			t.Fatalf("final luksDump lacks %q:\n%s", want, dump)
		}
	}
	after, err := os.ReadFile(im.Path)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := luks.Open(blockdev.MemFrom(after), int64(len(after)))
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range im.Passes {
		cs(t, "open", "--test-passphrase", "--key-file", p, im.Path)
		vk := dumpedKey(t, im.Path, p)
		if len(vk) != 64 || bytes.Equal(vk[:32], im.VK) {
			t.Fatalf("passphrase %d: stock luksDump shows a %d-byte key, the old one or not new", i, len(vk))
		}
		plain, _, err := testkit.LUKSData(after, passes[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(plain[:len(im.Plain)], im.Plain) {
			t.Fatalf("passphrase %d: the data do not decrypt to the original", i)
		}
		u, err := v1.Unlock(passes[i], luks.AnySlot)
		if err != nil {
			t.Fatal(err)
		}
		if k := v1.V1.Keyslots[u.Slot]; k.Iterations != v0.V1.Keyslots[i].Iterations {
			t.Errorf("passphrase %d: %d iterations, was %d", i, k.Iterations, v0.V1.Keyslots[i].Iterations)
		}
		u.Wipe()
	}
	for i := 0; i < 2; i++ {
		off := int64(v0.V1.Keyslots[i].KeyMaterialOffset) * 512
		if bytes.Equal(after[off:off+32*4000], before[off:off+32*4000]) {
			t.Errorf("old keyslot %d's material is still on disk", i)
		}
	}
	if bytes.Contains(after[:4096], []byte("cryptshift")) {
		t.Error("the header padding still holds cryptshift's tag or record")
	}
	// Nothing left to recover.
	if _, err := RecoverLUKS1(context.Background(), dev, nil, passes, RecoverOptions{}, Options{}); errclass.Code(err) != errclass.ExitHeader {
		t.Fatalf("recover after the end: %v", err)
	}
	// Rotating again finds the finished conversion's header at the end of
	// the device and starts the next one from it.
	if _, err := ConvertLUKS1(context.Background(), dev, LUKS1Request{LUKSRequest: LUKSRequest{Passphrases: passes, KeySlot: luks.AnySlot, Window: 256 << 10}, MetaSize: meta}, Options{}); err != nil {
		t.Fatalf("second rotation: %v", err)
	}
	again, err := os.ReadFile(im.Path)
	if err != nil {
		t.Fatal(err)
	}
	plain, vk2, err := testkit.LUKSData(again, passes[0])
	if err != nil || !bytes.Equal(plain[:len(im.Plain)], im.Plain) || len(vk2) != 64 {
		t.Fatalf("after the second rotation: %v", err)
	}
	if _, vk1, _ := testkit.LUKSData(after, passes[0]); bytes.Equal(vk1, vk2) {
		t.Fatal("the second rotation kept the key")
	}
}

// TestLUKS1Refusals: a wrong passphrase (3), a keyslot left without its
// passphrase and no --key-slot (2), a header without room for the larger
// keyslots (4), each before any write.
func TestLUKS1Refusals(t *testing.T) {
	// 128-bit keys: cryptsetup puts the payload at 1 MiB, below what
	// 512-bit keyslots need.
	im, err := testkit.MakeLUKS1(t.TempDir(), 8<<20, []string{"--cipher", "aes-cbc-essiv:sha256", "--key-size", "128"}, 2, 1<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	passes := readPasses(t, im)
	before, err := os.ReadFile(im.Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		req  LUKSRequest
		code int
		msg  string
	}{
		{"wrong passphrase", LUKSRequest{Passphrases: [][]byte{[]byte("nope")}, KeySlot: luks.AnySlot}, errclass.ExitWrongKey, "opens no keyslot"},
		{"keyslot left", LUKSRequest{Passphrases: passes[:1], KeySlot: luks.AnySlot}, errclass.ExitUsage, "keyslot(s) 1 of the LUKS1 volume are active"},
		{"no room", LUKSRequest{Passphrases: passes, KeySlot: luks.AnySlot, NewCipher: "aes-xts-plain64", NewKeyBytes: 64}, errclass.ExitDevice, "no room for 512-bit keyslots"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := blockdev.MemFrom(bytes.Clone(before))
			_, err := ConvertLUKS1(context.Background(), dev, LUKS1Request{LUKSRequest: tc.req}, Options{})
			if errclass.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v (exit %d), want exit %d with %q", err, errclass.Code(err), tc.code, tc.msg)
			}
			if !bytes.Equal(contentsOf(t, dev), before) {
				t.Fatal("the device was written")
			}
		})
	}
}

func contentsOf(t *testing.T, d blockdev.Device) []byte {
	t.Helper()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLUKS1TagOnly: the tag under the normal magic is what a crash leaves
// both before a start's magic and after the final wipe, before the tag is
// cleared. convert tells them apart by the metadata: after a finished
// conversion it only clears the tag (the key stays the one it made), and
// otherwise it clears the tag and converts.
func TestLUKS1TagOnly(t *testing.T) {
	const size, meta = 6 << 20, 1 << 20
	im, err := testkit.MakeLUKS1(t.TempDir(), size, []string{"--cipher", "aes-xts-plain64", "--key-size", "256"}, 1, size-2<<20-meta, 4)
	if err != nil {
		t.Fatal(err)
	}
	passes := readPasses(t, im)
	tag := func(dev blockdev.Device) {
		t.Helper()
		b := contentsOf(t, dev)
		rec := append([]byte("cryptshift:luks1"), b[168:208]...)
		if _, err := dev.WriteAt(rec, 592); err != nil {
			t.Fatal(err)
		}
	}
	key := func(dev blockdev.Device) []byte {
		t.Helper()
		_, vk, err := testkit.LUKSData(contentsOf(t, dev), passes[0])
		if err != nil {
			t.Fatal(err)
		}
		return vk
	}
	req := LUKS1Request{LUKSRequest: LUKSRequest{Passphrases: passes, KeySlot: luks.AnySlot, Window: 256 << 10}, MetaSize: meta}
	dev := openImage(t, im.Path)
	tag(dev)
	if res, err := ConvertLUKS1(context.Background(), dev, req, Options{}); err != nil || !res.Finished {
		t.Fatalf("convert over a start's tag: %v", err)
	}
	k1 := key(dev)
	if bytes.Equal(k1, im.VK) {
		t.Fatal("a tag before the magic: convert did not convert")
	}
	tag(dev)
	if st, err := ReadLUKS1Status(dev, nil); err != nil || st.State != luksWiping {
		t.Fatalf("status with the tag left: %+v %v", st, err)
	}
	if res, err := ConvertLUKS1(context.Background(), dev, req, Options{}); err != nil || !res.Finished {
		t.Fatalf("convert over the tag a finished conversion left: %v", err)
	}
	if !bytes.Equal(key(dev), k1) {
		t.Fatal("the tag a finished conversion left: convert rotated the key again")
	}
	if st, err := ReadLUKS1Status(dev, nil); err != nil || st.State != "none" {
		t.Fatalf("final status: %+v %v", st, err)
	}
}
