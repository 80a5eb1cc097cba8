package luks

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
)

func writeFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// csAreaOffset is where cryptsetup placed keyslot slot, from its JSON dump.
func csAreaOffset(t *testing.T, img string, slot int) uint64 {
	t.Helper()
	var meta struct {
		Keyslots map[string]struct {
			Area struct {
				Offset string `json:"offset"`
			} `json:"area"`
		} `json:"keyslots"`
	}
	if err := json.Unmarshal([]byte(runCS(t, "luksDump", "--dump-json-metadata", img)), &meta); err != nil {
		t.Fatal(err)
	}
	k, ok := meta.Keyslots[strconv.Itoa(slot)]
	if !ok {
		t.Fatalf("cryptsetup made no keyslot %d", slot)
	}
	n, err := strconv.ParseUint(k.Area.Offset, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// csPlacement is where cryptsetup's own luksAddKey would put the next
// keyslot of img (run on a copy).
func csPlacement(t *testing.T, img, pass string, extra ...string) (int, uint64) {
	t.Helper()
	cp := img + ".placement"
	writeImage(t, cp, readImage(t, img))
	defer os.Remove(cp)
	before := readLUKS2File(t, cp).Meta.Keyslots
	np := writeFile(t, cp+".pass", []byte("placement"))
	runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-file", pass}, pbkdf2Cheap, extra, []string{cp, np})...)
	for id := range readLUKS2File(t, cp).Meta.Keyslots {
		if _, old := before[id]; !old {
			return id, csAreaOffset(t, cp, id)
		}
	}
	t.Fatal("cryptsetup added no keyslot")
	return 0, 0
}

// addAndCommit adds a keyslot to the image's header through the writer:
// material written and flushed, then the header committed.
func addAndCommit(t *testing.T, img string, slot int, key, pass []byte, spec KeyslotSpec, digest func(d *Draft2) int) *KeyslotMaterial {
	t.Helper()
	h := readLUKS2File(t, img)
	d, err := h.Draft()
	if err != nil {
		t.Fatal(err)
	}
	mat, err := d.AddKeyslot(slot, key, pass, spec, digest(d))
	if err != nil {
		t.Fatalf("AddKeyslot: %v", err)
	}
	dev := openDev(t, img)
	if err := WriteKeyslotMaterial(dev, mat); err != nil {
		t.Fatal(err)
	}
	if err := CommitLUKS2(dev, d); err != nil {
		t.Fatalf("CommitLUKS2: %v", err)
	}
	return mat
}

func unlockKey(t *testing.T, img string, pass []byte) []byte {
	t.Helper()
	v, done := openFile(t, img)
	defer done()
	u, err := v.Unlock(pass, AnySlot)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Wipe()
	return bytes.Clone(u.Key.Bytes())
}

// TestLUKS2AddKeyslotSameSpec: a keyslot for the volume key made with the
// parameters of an existing one (every KDF) is placed where cryptsetup
// would place it, opens in cryptsetup with its passphrase, yields the
// volume key there, and keeps the KDF type and cost.
func TestLUKS2AddKeyslotSameSpec(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []string
	}{
		{"argon2id", join(luks2Small, argon2idCheap)},
		{"argon2i", join(luks2Small, argon2iCheap)},
		{"pbkdf2-sha512", join(luks2Small, pbkdf2Cheap, []string{"--hash", "sha512"})},
		{"xts256-default-layout", join([]string{"--type", "luks2", "--key-size", "256"}, argon2idCheap)},
	} {
		t.Run(c.name, func(t *testing.T) {
			im := format(t, 20<<20, "same spec "+c.name, c.opts...)
			vk := unlockKey(t, im.path, readPass(t, im.pass))
			wantSlot, wantOff := csPlacement(t, im.path, im.pass)
			spec := readLUKS2File(t, im.path).Meta.Keyslots[0].Spec()
			np := writeFile(t, filepath.Join(filepath.Dir(im.path), "new"), []byte("the new passphrase"))
			mat := addAndCommit(t, im.path, AnySlot, vk, readPass(t, np), spec, func(*Draft2) int { return 0 })
			defer mat.Wipe()
			if mat.Slot != wantSlot || uint64(mat.Offset) != wantOff {
				t.Errorf("keyslot %d at %d; cryptsetup would make keyslot %d at %d", mat.Slot, mat.Offset, wantSlot, wantOff)
			}
			slot := strconv.Itoa(mat.Slot)
			runCS(t, "open", "--test-passphrase", "--key-slot", slot, "--key-file", np, im.path)
			if got := csKey(t, im.path, np, "--key-slot", slot); !bytes.Equal(got, vk) {
				t.Error("cryptsetup dumps another volume key from the new keyslot")
			}
			runCS(t, "open", "--test-passphrase", "--key-slot", "0", "--key-file", im.pass, im.path)
			h := readLUKS2File(t, im.path)
			old, nw := h.Meta.Keyslots[0], h.Meta.Keyslots[mat.Slot]
			if !bytes.Equal(nw.KDF.Salt, old.KDF.Salt) && len(nw.KDF.Salt) == saltSize {
				nw.KDF.Salt, old.KDF.Salt = nil, nil
			} else {
				t.Error("the new keyslot's salt is the old one's, or not 32 bytes")
			}
			if !reflect.DeepEqual(nw.KDF, old.KDF) || nw.AF != old.AF || nw.Area.Encryption != old.Area.Encryption || nw.Area.KeySize != old.Area.KeySize || nw.KeySize != old.KeySize {
				t.Errorf("new keyslot %+v differs from its model %+v", nw, old)
			}
		})
	}
}

// TestLUKS2UnboundKeyslot: a new volume key with its own digest and an
// unbound keyslot sits in the header beside the old one; cryptsetup still
// maps the data with the old key and dumps the new key from the unbound
// keyslot.
func TestLUKS2UnboundKeyslot(t *testing.T) {
	im := format(t, 5<<20, "old key", join(luks2Small, argon2idCheap)...)
	oldVK := unlockKey(t, im.path, readPass(t, im.pass))
	newVK := make([]byte, 64)
	rand.Read(newVK)
	spec := readLUKS2File(t, im.path).Meta.Keyslots[0].Spec()
	np := writeFile(t, filepath.Join(filepath.Dir(im.path), "new"), []byte("old key"))
	var did int
	mat := addAndCommit(t, im.path, 3, newVK, readPass(t, np), spec, func(d *Draft2) int {
		var err error
		if did, err = d.AddDigest(newVK, "sha256", 1000); err != nil {
			t.Fatal(err)
		}
		return did
	})
	defer mat.Wipe()
	if did != 1 || mat.Slot != 3 {
		t.Errorf("digest %d, keyslot %d; want 1 and 3", did, mat.Slot)
	}
	runCS(t, "open", "--test-passphrase", "--key-slot", "3", "--key-file", np, im.path)
	if got := csUnboundKey(t, im.path, np, "3"); !bytes.Equal(got, newVK) {
		t.Error("cryptsetup's unbound key differs from the new volume key")
	}
	if got := csKey(t, im.path, im.pass); !bytes.Equal(got, oldVK) {
		t.Error("the data segment's key changed")
	}
	runCS(t, "open", "--test-passphrase", "--key-file", im.pass, im.path)
	// The same passphrase opens both keyslots; unnamed, it opens the bound one.
	v, done := openFile(t, im.path)
	defer done()
	u, err := v.Unlock(readPass(t, np), AnySlot)
	if err != nil || u.Slot != 0 || !bytes.Equal(u.Key.Bytes(), oldVK) {
		t.Fatalf("Unlock any slot: %v %+v", err, u)
	}
	u.Wipe()
	u, err = v.Unlock(readPass(t, np), 3)
	if err != nil || !bytes.Equal(u.Key.Bytes(), newVK) {
		t.Fatalf("Unlock keyslot 3: %v", err)
	}
	u.Wipe()
	// A key that is not the digest's is refused.
	d, _ := v.V2.Draft()
	if _, err := d.AddKeyslot(AnySlot, oldVK, []byte("x"), spec, did); !errors.Is(err, errclass.WrongKey) {
		t.Errorf("AddKeyslot with the wrong key for digest %d: %v", did, err)
	}
}

// TestLUKS2RemoveKeyslot: a removed keyslot is gone for cryptsetup, its
// token binding with it, and its area no longer holds the material; the
// other keyslots still open. The last keyslot of the data's digest is
// refused.
func TestLUKS2RemoveKeyslot(t *testing.T) {
	im := format(t, 5<<20, "keep me", join(luks2Small, pbkdf2Cheap)...)
	passes := addPassphrases(t, im, argon2idCheap, pbkdf2Cheap)
	tf := writeFile(t, filepath.Join(filepath.Dir(im.path), "token.json"), []byte(`{"type":"x-test","keyslots":["1","2"],"k":"v"}`))
	runCS(t, "token", "import", "--json-file", tf, "--token-id", "0", im.path)
	before := readImage(t, im.path)
	h := readLUKS2File(t, im.path)
	d, err := h.Draft()
	if err != nil {
		t.Fatal(err)
	}
	area, err := d.RemoveKeyslot(1)
	if err != nil {
		t.Fatal(err)
	}
	dev := openDev(t, im.path)
	if err := CommitLUKS2(dev, d); err != nil {
		t.Fatal(err)
	}
	if err := WipeKeyslotArea(dev, area); err != nil {
		t.Fatal(err)
	}
	after := readImage(t, im.path)
	old, nw := before[area.Offset:area.Offset+area.Size], after[area.Offset:area.Offset+area.Size]
	for s := 0; s < len(old); s += 512 {
		if bytes.Equal(old[s:s+512], nw[s:s+512]) {
			t.Fatalf("sector %d of the wiped area is unchanged", s/512)
		}
	}
	if _, err := runCSFail(t, "open", "--test-passphrase", "--key-file", passes[1], im.path); err == nil {
		t.Error("cryptsetup still opens the removed keyslot's passphrase")
	}
	for _, i := range []int{0, 2} {
		runCS(t, "open", "--test-passphrase", "--key-file", passes[i], im.path)
	}
	m := readLUKS2File(t, im.path).Meta
	if _, ok := m.Keyslots[1]; ok || len(m.Keyslots) != 2 {
		t.Errorf("keyslots after removal: %v", m.Keyslots)
	}
	if tk := m.Tokens[0]; tk == nil || len(tk.Keyslots) != 1 || tk.Keyslots[0] != 2 || !bytes.Contains(tk.Raw, []byte(`"k":"v"`)) {
		t.Errorf("token after removal: %+v", tk)
	}
	d, _ = readLUKS2File(t, im.path).Draft()
	if _, err := d.RemoveKeyslot(0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RemoveKeyslot(2); errclass.Code(err) != errclass.ExitRefused {
		t.Errorf("removing the data's last keyslot: %v, want a Refused error", err)
	}
}

// TestLUKS2Placement: first fit around a hole left by luksKillSlot, and
// around areas of different sizes, lands where cryptsetup lands.
func TestLUKS2Placement(t *testing.T) {
	im := format(t, 5<<20, "p", join(luks2Small, pbkdf2Cheap, []string{"--key-size", "256"})...)
	addPassphrases(t, im, pbkdf2Cheap, pbkdf2Cheap, pbkdf2Cheap)
	runCS(t, "luksKillSlot", "--batch-mode", "--key-file", im.pass, im.path, "1")
	for _, keyBits := range []int{256, 512} {
		h := readLUKS2File(t, im.path)
		area := (uint64(keyBits/8)*stripes + 4095) / 4096 * 4096
		got, err := firstFit(h.Meta, h.HdrSize, area)
		if err != nil {
			t.Fatal(err)
		}
		// cryptsetup places a key of another size only for an unbound
		// keyslot of that size.
		extra := []string{}
		if keyBits != 256 {
			extra = []string{"--unbound", "--key-size", strconv.Itoa(keyBits)}
		}
		_, want := csPlacement(t, im.path, im.pass, extra...)
		if got != want {
			t.Errorf("%d-bit key: first fit at %d, cryptsetup at %d", keyBits, got, want)
		}
	}
}

// TestLUKS2AddKeyslotsGivenKDF fills a header to eight keyslots through
// the writer, each with a KDF given explicitly (PBKDF2 with several
// hashes, Argon2i and Argon2id with several costs), and cryptsetup opens
// every one and dumps the volume key from it.
func TestLUKS2AddKeyslotsGivenKDF(t *testing.T) {
	im := format(t, 5<<20, "given kdf", join(luks2Small, pbkdf2Cheap)...)
	vk := unlockKey(t, im.path, readPass(t, im.pass))
	base := readLUKS2File(t, im.path).Meta.Keyslots[0].Spec()
	kdfs := []KDF{
		{Type: "pbkdf2", Hash: "sha256", Iterations: 1000},
		{Type: "pbkdf2", Hash: "sha512", Iterations: 1500},
		{Type: "pbkdf2", Hash: "sha1", Iterations: 1000},
		{Type: "argon2i", Time: 4, Memory: 32, CPUs: 1},
		{Type: "argon2id", Time: 4, Memory: 32, CPUs: 2},
		{Type: "argon2id", Time: 5, Memory: 64, CPUs: 1},
		{Type: "argon2i", Time: 4, Memory: 48, CPUs: 2},
	}
	for i, k := range kdfs {
		spec := base
		spec.KDF = k
		if i == 6 {
			p := int64(2)
			spec.Priority = &p
		}
		pass := []byte("given " + strconv.Itoa(i))
		mat := addAndCommit(t, im.path, AnySlot, vk, pass, spec, func(*Draft2) int { return 0 })
		mat.Wipe()
		if mat.Slot != i+1 {
			t.Fatalf("keyslot %d, want %d", mat.Slot, i+1)
		}
		pf := writeFile(t, filepath.Join(filepath.Dir(im.path), "given"+strconv.Itoa(i)), pass)
		s := strconv.Itoa(mat.Slot)
		runCS(t, "open", "--test-passphrase", "--key-slot", s, "--key-file", pf, im.path)
		if got := csKey(t, im.path, pf, "--key-slot", s); !bytes.Equal(got, vk) {
			t.Errorf("keyslot %s: cryptsetup dumps another key", s)
		}
		got := readLUKS2File(t, im.path).Meta.Keyslots[mat.Slot]
		got.KDF.Salt = nil
		if !reflect.DeepEqual(got.KDF, k) {
			t.Errorf("keyslot %s KDF %+v, want %+v", s, got.KDF, k)
		}
	}
	f := runCS(t, "luksDump", im.path)
	if !strings.Contains(f, "preferred") {
		t.Error("luksDump does not show keyslot 7 as preferred")
	}
	if _, err := readLUKS2File(t, im.path).Draft(); err != nil {
		t.Fatal(err)
	}
}
