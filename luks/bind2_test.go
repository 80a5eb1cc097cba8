package luks

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
)

// TestLUKS2KeySwitch walks the header side of a volume key change with
// stock cryptsetup judging each commit: (1) a new digest and, per
// passphrase, a keyslot for the new key made like the old one, token
// bindings copied: cryptsetup still maps the old key with every
// passphrase; (2) the data segment handed to the new digest: cryptsetup
// now maps the new key with every passphrase; (3) the old keyslots removed
// and wiped: the old key is gone, the tokens list only the new keyslots.
func TestLUKS2KeySwitch(t *testing.T) {
	im := format(t, 5<<20, "first", join(luks2Small, argon2idCheap)...)
	passes := addPassphrases(t, im, pbkdf2Cheap)
	tf := writeFile(t, filepath.Join(filepath.Dir(im.path), "token.json"), []byte(`{"type":"systemd-recovery","keyslots":["1"]}`))
	runCS(t, "token", "import", "--json-file", tf, "--token-id", "0", im.path)
	oldVK := unlockKey(t, im.path, readPass(t, im.pass))
	newVK := make([]byte, len(oldVK))
	rand.Read(newVK)
	dev := openDev(t, im.path)
	draft := func() *Draft2 { return mustDraft(t, readLUKS2File(t, im.path)) }

	d := draft()
	nd, err := d.AddDigest(newVK, "sha256", 1000)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := d.Metadata()
	var newSlots []int
	for old := 0; old < 2; old++ {
		mat, err := d.AddKeyslot(AnySlot, newVK, readPass(t, passes[old]), m.Keyslots[old].Spec(), nd)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteKeyslotMaterial(dev, mat); err != nil {
			t.Fatal(err)
		}
		mat.Wipe()
		if err := d.CopyTokenBindings(old, mat.Slot); err != nil {
			t.Fatal(err)
		}
		newSlots = append(newSlots, mat.Slot)
	}
	if err := CommitLUKS2(dev, d); err != nil {
		t.Fatal(err)
	}
	for i, pf := range passes {
		if got := csKey(t, im.path, pf); !bytes.Equal(got, oldVK) {
			t.Errorf("stage 1, passphrase %d: cryptsetup maps another key than the old one", i)
		}
		if got := csUnboundKey(t, im.path, pf, strconv.Itoa(newSlots[i])); !bytes.Equal(got, newVK) {
			t.Errorf("stage 1, passphrase %d: the new keyslot does not hold the new key", i)
		}
	}

	d = draft()
	if err := d.MoveSegments(0, nd); err != nil {
		t.Fatal(err)
	}
	if err := CommitLUKS2(dev, d); err != nil {
		t.Fatal(err)
	}
	for i, pf := range passes {
		if got := csKey(t, im.path, pf); !bytes.Equal(got, newVK) {
			t.Errorf("stage 2, passphrase %d: cryptsetup does not map the new key", i)
		}
	}

	d = draft()
	var areas []Area
	for old := 0; old < 2; old++ {
		a, err := d.RemoveKeyslot(old)
		if err != nil {
			t.Fatal(err)
		}
		areas = append(areas, a)
	}
	if err := CommitLUKS2(dev, d); err != nil {
		t.Fatal(err)
	}
	for _, a := range areas {
		if err := WipeKeyslotArea(dev, a); err != nil {
			t.Fatal(err)
		}
	}
	for i, pf := range passes {
		runCS(t, "open", "--test-passphrase", "--key-file", pf, im.path)
		if got := csKey(t, im.path, pf); !bytes.Equal(got, newVK) {
			t.Errorf("stage 3, passphrase %d: cryptsetup does not map the new key", i)
		}
	}
	var meta struct {
		Keyslots map[string]json.RawMessage
		Tokens   map[string]struct{ Keyslots []string }
		Digests  map[string]struct{ Keyslots, Segments []string }
	}
	if err := json.Unmarshal([]byte(runCS(t, "luksDump", "--dump-json-metadata", im.path)), &meta); err != nil {
		t.Fatal(err)
	}
	want := strconv.Itoa(newSlots[1])
	if len(meta.Keyslots) != 2 || len(meta.Digests) != 1 || len(meta.Tokens["0"].Keyslots) != 1 || meta.Tokens["0"].Keyslots[0] != want {
		t.Errorf("after the switch: %d keyslots, %d digests, token keyslots %v (want [%s])", len(meta.Keyslots), len(meta.Digests), meta.Tokens["0"].Keyslots, want)
	}
}
