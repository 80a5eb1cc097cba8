package luks

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
)

// TestSharedLUKS2RoundTrip: the LUKS2 headers of cryptsetup's own test
// suite (every metadata size, an unbound keyslot, a kernel-API cipher,
// other versions' output) committed again unchanged load in cryptsetup
// with the same content and open with their passphrases; a header with
// requirements cryptsetup does not know is refused and left untouched.
func TestSharedLUKS2RoundTrip(t *testing.T) {
	type c struct{ file, name, pass string }
	cases := []c{
		{"luks2_keyslot_unassigned.img.xz", "luks2_keyslot_unassigned.img", "compatkey"},
		{"luks2_valid_hdr.img.xz", "luks2_valid_hdr.img", ""},
		{"luks2_invalid_cipher.img.xz", "luks2_invalid_cipher.img", "93R4P4pIqAH8"},
		{"luks2_header_requirements.tar.xz", "luks2_header_requirements_free", "blablabl"},
	}
	for _, n := range []string{"16", "32", "64", "128", "256", "512", "1024", "2048", "4096"} {
		cases = append(cases, c{"luks2_mda_images.tar.xz", "test_image_" + n, "Qx3qn46vq0v"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(unxz(t, c.file), c.name)
			before := runCS(t, "luksDump", "--dump-json-metadata", p)
			dump := luksDumpNoEpoch(t, p)
			h := readLUKS2File(t, p)
			d, err := h.Draft()
			if err != nil {
				t.Fatal(err)
			}
			if err := CommitLUKS2(openDev(t, p), d); err != nil {
				t.Fatalf("CommitLUKS2: %v", err)
			}
			if got := runCS(t, "luksDump", "--dump-json-metadata", p); !jsonEqual(t, []byte(got), []byte(before)) {
				t.Error("cryptsetup's JSON dump changed")
			}
			if got := luksDumpNoEpoch(t, p); got != dump {
				t.Errorf("luksDump changed:\n%s\nwas\n%s", got, dump)
			}
			if h2 := readLUKS2File(t, p); h2.SeqID != h.SeqID+1 || h2.Primary != nil || h2.Secondary != nil {
				t.Errorf("seqid %d (was %d), copies %v / %v", h2.SeqID, h.SeqID, h2.Primary, h2.Secondary)
			}
			if c.pass != "" {
				runCS(t, "open", "--test-passphrase", "--key-file", passFile(t, c.pass), p)
			}
		})
	}
	t.Run("unknown requirements", func(t *testing.T) {
		p := filepath.Join(unxz(t, "luks2_header_requirements.tar.xz"), "luks2_header_requirements")
		before := readImage(t, p)
		d, err := readLUKS2File(t, p).Draft()
		if err != nil {
			t.Fatal(err)
		}
		if err := CommitLUKS2(openDev(t, p), d); errclass.Code(err) != errclass.ExitDevice {
			t.Errorf("commit over unknown requirements: %v, want a Device refusal", err)
		}
		if !bytes.Equal(readImage(t, p), before) {
			t.Error("the refused commit wrote to the device")
		}
	})
}

// TestLUKS2EditKeepsUnknown: a keyslot added to a header with members,
// keyslot and token types cryptshift does not interpret changes the JSON
// text only by the new keyslot and its digest binding, byte for byte; it
// is placed around the unknown keyslot's area where cryptsetup places it;
// and cryptsetup loads the result and opens the new keyslot.
func TestLUKS2EditKeepsUnknown(t *testing.T) {
	im := smallLUKS2(t)
	orig := readImage(t, im.path)
	hs := hdrSizeOf(orig)
	var m map[string]any
	if err := json.Unmarshal([]byte(runCS(t, "luksDump", "--dump-json-metadata", im.path)), &m); err != nil {
		t.Fatal(err)
	}
	type J = map[string]any
	m["x-top"] = J{"k": []any{1.0, "two"}}
	m["keyslots"].(J)["4"] = J{"type": "x-vendor", "key_size": 32.0, "area": J{"type": "x-area", "offset": "290816", "size": "8192"}, "x-extra": "kept"}
	m["tokens"].(J)["2"] = J{"type": "x-token", "keyslots": []any{"0"}, "blob": J{"nested": J{"deep": true}}}
	m["segments"].(J)["0"].(J)["x-seg"] = "kept"
	m["config"].(J)["x-config"] = 7.0
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	setCopy(t, orig, 0, js, 0)
	setCopy(t, orig, hs, js, 0)
	writeImage(t, im.path, orig)
	runCS(t, "luksDump", im.path) // cryptsetup accepts it
	h := readLUKS2File(t, im.path)
	beforeText := bytes.Clone(h.Meta.Raw)
	_, wantOff := csPlacement(t, im.path, im.pass)
	vk := unlockKey(t, im.path, readPass(t, im.pass))
	np := writeFile(t, filepath.Join(filepath.Dir(im.path), "new"), []byte("beside unknowns"))
	mat := addAndCommit(t, im.path, AnySlot, vk, readPass(t, np), h.Meta.Keyslots[0].Spec(), func(*Draft2) int { return 0 })
	defer mat.Wipe()
	if uint64(mat.Offset) != wantOff || mat.Slot != 1 {
		t.Errorf("keyslot %d at %d, cryptsetup would use keyslot 1 at %d", mat.Slot, mat.Offset, wantOff)
	}
	after := readLUKS2File(t, im.path).Meta.Raw
	undone, err := editJSON(after, []string{"keyslots", strconv.Itoa(mat.Slot)}, nil)
	if err == nil {
		undone, err = editJSON(undone, []string{"digests", "0", "keyslots"}, json.RawMessage(`["0"]`))
	}
	if err != nil || !bytes.Equal(undone, beforeText) {
		t.Errorf("the JSON text changed beyond the new keyslot (%v):\n%s\nwas\n%s", err, after, beforeText)
	}
	runCS(t, "open", "--test-passphrase", "--key-slot", strconv.Itoa(mat.Slot), "--key-file", np, im.path)
	if got := csKey(t, im.path, np, "--key-slot", strconv.Itoa(mat.Slot)); !bytes.Equal(got, vk) {
		t.Error("cryptsetup dumps another key from the new keyslot")
	}
	var dumped map[string]any
	if err := json.Unmarshal([]byte(runCS(t, "luksDump", "--dump-json-metadata", im.path)), &dumped); err != nil {
		t.Fatal(err)
	}
	if dumped["x-top"] == nil || dumped["keyslots"].(J)["4"].(J)["x-extra"] != "kept" || dumped["segments"].(J)["0"].(J)["x-seg"] != "kept" {
		t.Error("cryptsetup no longer sees the unknown members")
	}
}
