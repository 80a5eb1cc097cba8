package engine

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/luks"
)

func luksImage(t *testing.T, kdfs ...[]string) *testkit.LUKSImage {
	t.Helper()
	im, err := testkit.MakeLUKS2(t.TempDir(), 4<<20, 1<<20, []string{"--key-size", "256", "--sector-size", "512"}, kdfs, 7)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func readPasses(t *testing.T, im *testkit.LUKSImage) [][]byte {
	t.Helper()
	var out [][]byte
	for _, p := range im.Passes {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func cs(t *testing.T, args ...string) string {
	t.Helper()
	out, err := testkit.Cryptsetup(args...)
	if err != nil {
		t.Fatalf("cryptsetup %v: %v\n%s", args, err, out)
	}
	return out
}

func openImage(t *testing.T, path string) *blockdev.File {
	t.Helper()
	f, err := blockdev.Open(path, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestLUKS2Convert converts a LUKS2 volume cryptsetup made (an argon2id and
// a pbkdf2 keyslot) to a new volume key and 4096-byte sectors, pausing
// half-way: mid-way stock cryptsetup refuses to change the header (the
// requirement), and the status says what is kept; at the end stock
// cryptsetup opens each passphrase to the new key (luksDump
// --dump-volume-key), the header keeps its UUID and KDFs and has no trace
// of the conversion, the data decrypt to what was written, and the old
// keyslots' material is overwritten.
func TestLUKS2Convert(t *testing.T) {
	im := luksImage(t, testkit.CheapArgon2id, testkit.CheapPBKDF2)
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
	req := LUKSRequest{Passphrases: passes, KeySlot: luks.AnySlot, NewSectorSize: 4096, Window: 64 << 10,
		Notify: func(s string) { notice = s }}
	_, err = ConvertLUKS2(ctx, dev, req, Options{Hooks: &Hooks{AfterWindow: func(done uint64) {
		if done == 5 {
			cancel()
		}
	}}})
	if !errors.Is(err, errclass.Paused) {
		t.Fatalf("want a pause, got %v", err)
	}
	if !strings.Contains(notice, "keyslot(s) 0, 1 get the new volume key, as keyslot(s) 2, 3") {
		t.Errorf("notice: %q", notice)
	}
	dump := cs(t, "luksDump", im.Path)
	if !strings.Contains(dump, "Requirements:\t"+LUKSRequirement) {
		t.Fatalf("mid-way luksDump:\n%s", dump)
	}
	out, err := testkit.Cryptsetup("luksAddKey", "--batch-mode", "--key-file", im.Passes[0], im.Path, im.Passes[1])
	if err == nil || !strings.Contains(out, "Unmet LUKS2 requirements detected") {
		t.Fatalf("stock cryptsetup changed the header mid-way: %v\n%s", err, out)
	}
	st, err := ReadLUKS2Status(dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "converting" || intList(st.Keyslots) != "2, 3" || intList(st.Erased) != "0, 1" || st.Engine == nil || st.Engine.Done != 5 {
		t.Fatalf("status mid-way: %+v", st)
	}
	// A passphrase alone resumes (both keys come from the keyslots).
	res, err := ConvertLUKS2(context.Background(), dev, LUKSRequest{Passphrases: passes[1:], KeySlot: luks.AnySlot}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Finished || res.UUID != v0.UUID {
		t.Fatalf("result %+v", res)
	}
	dump = cs(t, "luksDump", im.Path)
	if strings.Contains(dump, "cryptshift") || strings.Contains(dump, "Requirements") || !strings.Contains(dump, "UUID:          \t"+v0.UUID) {
		t.Fatalf("final luksDump:\n%s", dump)
	}
	after, err := os.ReadFile(im.Path)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := luks.Open(blockdev.MemFrom(after), int64(len(after)))
	if err != nil {
		t.Fatal(err)
	}
	if g := v1.V2.Meta.Segments[0]; g.SectorSize != 4096 || g.Encryption != "aes-xts-plain64" || g.Offset != uint64(im.DataOffset) {
		t.Fatalf("segment %+v", g)
	}
	for i, p := range passes {
		plain, vk, err := testkit.LUKSData(after, p)
		if err != nil {
			t.Fatalf("passphrase %d: %v", i, err)
		}
		if bytes.Equal(vk, im.VK) || !bytes.Equal(plain, im.Plain) {
			t.Fatalf("passphrase %d: new key %v, data intact %v", i, !bytes.Equal(vk, im.VK), bytes.Equal(plain, im.Plain))
		}
		out := cs(t, "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", im.Passes[i], im.Path)
		if strings.Contains(strings.ReplaceAll(out, " ", ""), hexString(im.VK)[:32]) {
			t.Fatalf("stock cryptsetup still dumps the old volume key")
		}
		u, err := v1.Unlock(p, luks.AnySlot)
		if err != nil {
			t.Fatal(err)
		}
		k := v1.V2.Meta.Keyslots[u.Slot]
		old := v0.V2.Meta.Keyslots[i]
		if k.KDF.Type != old.KDF.Type || k.KDF.Iterations != old.KDF.Iterations || k.KDF.Memory != old.KDF.Memory || k.KDF.Time != old.KDF.Time {
			t.Fatalf("keyslot %d has KDF %+v, was %+v", u.Slot, k.KDF, old.KDF)
		}
		u.Wipe()
		a := old.Area
		if bytes.Equal(after[a.Offset:a.Offset+a.Size], before[a.Offset:a.Offset+a.Size]) {
			t.Fatalf("keyslot %d's old material is still on disk", i)
		}
	}
	cs(t, "open", "--test-passphrase", "--key-file", im.Passes[0], im.Path)
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestLUKS2ConvertRefusals: each refusal leaves the image byte for byte as
// it was, with its own class.
func TestLUKS2ConvertRefusals(t *testing.T) {
	im := luksImage(t, testkit.CheapPBKDF2, testkit.CheapPBKDF2)
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
		{"wrong passphrase", LUKSRequest{Passphrases: [][]byte{passes[0], []byte("nope")}, KeySlot: luks.AnySlot}, errclass.ExitWrongKey, "opens no keyslot"},
		{"keyslot without passphrase", LUKSRequest{Passphrases: passes[:1], KeySlot: luks.AnySlot}, errclass.ExitUsage, "keyslot(s) 1 of the LUKS2 volume are active"},
		{"passphrase of another keyslot", LUKSRequest{Passphrases: passes[1:], KeySlot: 0}, errclass.ExitWrongKey, "does not open keyslot 0"},
		{"shift", LUKSRequest{Passphrases: passes, KeySlot: luks.AnySlot, Mode: "shift"}, errclass.ExitUsage, "shift"},
		{"bad key size", LUKSRequest{Passphrases: passes, KeySlot: luks.AnySlot, NewKeyBytes: 24}, errclass.ExitUsage, "key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := openImage(t, im.Path)
			_, err := ConvertLUKS2(context.Background(), dev, tc.req, Options{})
			if errclass.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v (exit %d), want exit %d with %q", err, errclass.Code(err), tc.code, tc.msg)
			}
			now, _ := os.ReadFile(im.Path)
			if !bytes.Equal(now, before) {
				t.Fatal("the refused request changed the image")
			}
		})
	}
	// cryptsetup's own reencryption in progress: refused, untouched.
	re := luksImage(t, testkit.CheapPBKDF2)
	cs(t, "reencrypt", "--init-only", "--batch-mode", "--key-file", re.Passes[0], "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", re.Path)
	rb, _ := os.ReadFile(re.Path)
	_, err = ConvertLUKS2(context.Background(), openImage(t, re.Path), LUKSRequest{Passphrases: readPasses(t, re), KeySlot: luks.AnySlot}, Options{})
	if errclass.Code(err) != errclass.ExitDevice || !strings.Contains(err.Error(), "cryptsetup reencryption") {
		t.Fatalf("cryptsetup reencryption in progress: %v", err)
	}
	if now, _ := os.ReadFile(re.Path); !bytes.Equal(now, rb) {
		t.Fatal("the refused request changed the image")
	}
}

// TestLUKS2ConvertKeySlot: --key-slot N keeps keyslot N only; the other is
// erased at the end, and a recovery of a finished conversion is refused.
func TestLUKS2ConvertKeySlot(t *testing.T) {
	im := luksImage(t, testkit.CheapPBKDF2, testkit.CheapPBKDF2)
	passes := readPasses(t, im)
	dev := openImage(t, im.Path)
	var notice string
	if _, err := ConvertLUKS2(context.Background(), dev, LUKSRequest{Passphrases: passes[1:], KeySlot: 1, NewCipher: "aes-cbc-essiv:sha256", NewKeyBytes: 16,
		Window: 256 << 10, Notify: func(s string) { notice = s }}, Options{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(notice, "keyslot(s) 0 are erased at the end") {
		t.Errorf("notice %q", notice)
	}
	b, _ := os.ReadFile(im.Path)
	plain, vk, err := testkit.LUKSData(b, passes[1])
	if err != nil || len(vk) != 16 || !bytes.Equal(plain, im.Plain) {
		t.Fatalf("after --key-slot 1 to essiv-128: %v, key %d bytes, data intact %v", err, len(vk), bytes.Equal(plain, im.Plain))
	}
	if _, _, err := testkit.LUKSData(b, passes[0]); err == nil {
		t.Fatal("keyslot 0's passphrase still opens the volume")
	}
	if _, err := RecoverLUKS2(context.Background(), dev, nil, passes, RecoverOptions{}, Options{}); errclass.Code(err) != errclass.ExitHeader {
		t.Fatalf("recover after the end: %v", err)
	}
}
