package fault

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// decryptFixture is a LUKS2 volume to decrypt: one pbkdf2 keyslot, a data
// offset of 288 KiB and 352 KiB of data, so the head (288 KiB) is stashed
// and 64 KiB move in 16 KiB windows; --metadata on its own disk.
type decryptFixture struct {
	im      *testkit.LUKSImage
	initial []byte
	pass    []byte
	metaLen int
}

func newDecryptFixture(t testing.TB, version int) *decryptFixture {
	t.Helper()
	var im *testkit.LUKSImage
	var err error
	if version == 1 {
		im, err = makeLUKS1(t.TempDir())
	} else {
		im, err = testkit.MakeLUKS2(t.TempDir(), 256<<10, 352<<10, []string{"--key-size", "256", "--sector-size", "512"},
			[][]string{testkit.CheapPBKDF2}, 11)
	}
	if err != nil {
		t.Fatal(err)
	}
	f := &decryptFixture{im: im, metaLen: 1<<20 + int(im.DataOffset) + 4096}
	if f.initial, err = os.ReadFile(im.Path); err != nil {
		t.Fatal(err)
	}
	if f.pass, err = os.ReadFile(im.Passes[0]); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *decryptFixture) request(meta blockdev.Device) engine.DecryptRequest {
	return engine.DecryptRequest{Passphrases: [][]byte{f.pass}, Meta: meta, Window: 16 << 10}
}

func recordDecrypt(t testing.TB, f *decryptFixture, hooks *engine.Hooks) *Domain {
	t.Helper()
	dom := NewDomain()
	disk := dom.NewDisk(bytes.Clone(f.initial))
	meta := dom.NewDisk(make([]byte, f.metaLen))
	res, err := engine.ConvertDecryptLUKS2(context.Background(), disk, f.request(meta), engine.Options{Hooks: hooks})
	if err != nil || !res.Finished {
		t.Fatalf("recorded decryption: %v", err)
	}
	return dom
}

// checkDecrypt checks one crash state; it returns a violation, or "".
//
//	D1 while DEVICE's LUKS2 header reads without the requirement, the
//	   passphrase opens it and its key decrypts the whole data area to
//	   the original plaintext;
//	D2 the plaintext's first sector is at byte 0 only when all of the
//	   plaintext is at its place (no filesystem half decrypted at byte 0);
//	D3 recovery succeeds (or finds no decryption, DEVICE then as it was),
//	   and convert --decrypt then completes: the plaintext at byte 0, no
//	   LUKS header, nothing left on --metadata.
func (f *decryptFixture) checkDecrypt(imgs [][]byte) string {
	b := imgs[0]
	plain := f.im.Plain
	untouched := false
	// luks.Open refuses a LUKS1 volume carrying cryptshift's mark, as
	// stock cryptsetup does (the magic is changed).
	if v, err := luks.Open(blockdev.MemFrom(bytes.Clone(b)), int64(len(b))); err == nil && len(v.Requirements()) == 0 {
		untouched = true
		got, _, err := testkit.LUKSData(bytes.Clone(b), f.pass)
		if err != nil || !bytes.Equal(got, plain) {
			return fmt.Sprintf("D1: the LUKS2 header has no requirement, and its key does not map the original data (%v)", err)
		}
	}
	if bytes.Equal(b[:512], plain[:512]) && !bytes.Equal(b[:len(plain)], plain) {
		return fmt.Sprintf("D2: the first sector is plaintext while byte %d is not", firstDiff(b, plain))
	}
	dev, meta := blockdev.MemFrom(bytes.Clone(imgs[0])), blockdev.MemFrom(bytes.Clone(imgs[1]))
	_, err := engine.RecoverDecryptLUKS2(context.Background(), dev, meta, [][]byte{f.pass}, engine.Options{})
	if err != nil && !strings.Contains(err.Error(), "records no cryptshift decryption") {
		return fmt.Sprintf("D3: recovery failed: %v", err)
	}
	res, err := engine.ConvertDecryptLUKS2(context.Background(), dev, f.request(meta), engine.Options{})
	if untouched && errclass.Code(err) == errclass.ExitDevice && strings.Contains(err.Error(), "--metadata holds data") {
		// A crash while the stash was written, before the engine's first flush,
		// left garbage on --metadata: refused (a file that is neither
		// empty nor this decryption's is not zeroed behind the user's
		// back), with the volume as it was (D1 held above).
		return ""
	}
	after := contents(dev, meta)
	if err != nil || !res.Finished {
		// A finished decryption leaves no record and no LUKS header:
		// convert then refuses a device that is no LUKS volume.
		if !(bytes.Equal(after[0][:len(plain)], plain) && !engine.IsDecryptMeta(meta)) {
			return fmt.Sprintf("D3: the decryption did not complete after recovery: %v", err)
		}
	}
	if !bytes.Equal(after[0][:len(plain)], plain) {
		return fmt.Sprintf("D3: the finished device differs from the plaintext at byte %d", firstDiff(after[0], plain))
	}
	if _, err := luks.Open(blockdev.MemFrom(after[0]), int64(len(after[0]))); err == nil {
		return "D3: a LUKS header still reads on the finished device"
	}
	if engine.IsDecryptMeta(meta) || bytes.Contains(after[1], plain[:4096]) {
		return "D3: --metadata still holds the decryption record or the stashed head"
	}
	return ""
}

func sweepDecrypt(t testing.TB, f *decryptFixture, dom *Domain, eo EnumOptions, stride int, stop bool) (string, int) {
	t.Helper()
	n, first := 0, ""
	for _, k := range flushPointsPlus(dom, stride) {
		states, err := dom.States(k, eo)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range states {
			imgs, err := dom.Image(k, st.Choice)
			if err != nil {
				t.Fatal(err)
			}
			n++
			if v := f.checkDecrypt(imgs); v != "" && first == "" {
				first = fmt.Sprintf("k=%d %s: %s", k, dom.Describe(k, st.Choice), v)
				if stop {
					return first, n
				}
			}
		}
	}
	return first, n
}

// TestCrashDecryptLUKS2 crashes a LUKS2 decryption at every point next to
// a flush (and a sample between writes): the stash, the engine's first
// header, the mark, every window of the shift, the last checkpoint, the
// three writes of the head and the removal of the stash; with subsets of
// the pending writes, torn and shorn sectors. Every state must satisfy
// D1-D3.
func TestCrashDecryptLUKS2(t *testing.T) {
	testCrashDecrypt(t, 2)
}

// TestCrashDecryptLUKS1 does the same for LUKS1 (a 1028 KiB head, 64 KiB
// moved), whose mark is cryptshift's LUKS1 mark.
func TestCrashDecryptLUKS1(t *testing.T) {
	testCrashDecrypt(t, 1)
}

func testCrashDecrypt(t *testing.T, version int) {
	f := newDecryptFixture(t, version)
	dom := recordDecrypt(t, f, nil)
	// The LUKS1 mark rewrites the phdr's first two sectors one sector at
	// a time and relies on a sector write being atomic (DESIGN, "LUKS1
	// in-conversion mark"): torn but not shorn states for LUKS1.
	eo := EnumOptions{MaxStates: 10, Torn: true, Shorn: version == 2, Seed: 7}
	stride := 8
	if testing.Short() {
		eo.MaxStates, stride = 2, 1000
	}
	v, n := sweepDecrypt(t, f, dom, eo, stride, false)
	if v != "" {
		t.Fatal(v)
	}
	t.Logf("%d crash states", n)
}

// decryptMutants are the decryption's flush points; dropped, each lets a
// crash state violate D1-D3.
func decryptMutants() []engine.FlushPoint {
	return []engine.FlushPoint{engine.FlushDecryptStartCommit, engine.FlushDecryptHead, engine.FlushDecryptStashWipe}
}

func TestDecryptMutationDroppedFlushIsCaught(t *testing.T) {
	for _, p := range decryptMutants() {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			f := newDecryptFixture(t, 2)
			dom := recordDecrypt(t, f, &engine.Hooks{DropFlush: map[engine.FlushPoint]bool{p: true}})
			v, n := sweepDecrypt(t, f, dom, EnumOptions{MaxStates: 24, Torn: true, Seed: 1}, 1, true)
			if v == "" {
				t.Fatalf("dropping %s: no violation in %d crash states", p, n)
			}
			t.Logf("caught: %s", v)
		})
	}
}

// makeLUKS1 formats a LUKS1 image with stock cryptsetup (256-bit
// aes-xts-plain64, payload at sector 2056 right after the keyslots, one
// pbkdf2 keyslot) and fills its data area with 64 KiB past the payload
// offset's size of seeded plaintext, encrypted as cryptsetup maps it.
func makeLUKS1(dir string) (*testkit.LUKSImage, error) {
	const d = 2056 * 512
	im := &testkit.LUKSImage{Path: dir + "/luks1.img", DataOffset: d, Passes: []string{dir + "/pass0"}}
	if err := os.WriteFile(im.Passes[0], []byte("pass 0"), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(im.Path, make([]byte, 2*d+64<<10), 0o600); err != nil {
		return nil, err
	}
	if out, err := testkit.Cryptsetup(append([]string{"luksFormat", "--batch-mode", "--type", "luks1", "--cipher", "aes-xts-plain64", "--key-size", "256",
		"--offset", "2056", im.Path, im.Passes[0]}, testkit.CheapPBKDF2...)...); err != nil {
		return nil, fmt.Errorf("luksFormat --type luks1: %v\n%s", err, out)
	}
	b, err := os.ReadFile(im.Path)
	if err != nil {
		return nil, err
	}
	dev := blockdev.MemFrom(b)
	v, err := luks.Open(dev, dev.Size())
	if err != nil {
		return nil, err
	}
	u, err := v.Unlock([]byte("pass 0"), luks.AnySlot)
	if err != nil {
		return nil, err
	}
	defer u.Wipe()
	m, err := v.Mapping(u)
	if err != nil {
		return nil, err
	}
	im.VK = bytes.Clone(u.Key.Bytes())
	im.Plain = testkit.Pattern(int(m.Size), 13)
	c, err := sectorcipher.New(m.Mapping)
	if err != nil {
		return nil, err
	}
	ct := bytes.Clone(im.Plain)
	c.Encrypt(ct, 0)
	copy(b[m.Offset:], ct)
	return im, os.WriteFile(im.Path, b, 0o600)
}
