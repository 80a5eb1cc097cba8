package luks

import (
	"strings"
	"testing"
)

// TestLUKS2ConversionMarksWithStock: the marks a cryptshift conversion puts
// in a LUKS2 header (an unknown mandatory requirement, a reserved area held
// by a keyslot of an unknown type, a token of an unknown type) give a header
// stock cryptsetup reads, whose passphrases it still tests, on which it
// refuses every change with "Unmet LUKS2 requirements detected" (activation
// is refused by the same check: tests/vm); once the requirement is gone it
// changes the header again and places a new keyslot around the reserved area.
func TestLUKS2ConversionMarksWithStock(t *testing.T) {
	im := format(t, 4<<20, "marks 0", join([]string{"--type", "luks2", "--luks2-metadata-size", "16k", "--luks2-keyslots-size", "2m", "--offset", "6144"}, pbkdf2Cheap)...)
	dev := openDev(t, im.path)
	h0 := readLUKS2File(t, im.path)
	k0 := h0.Meta.Keyslots[0].Area
	d := mustDraft(t, h0)
	slot, area, err := d.ReserveArea("cryptshift", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	free, err := d.LargestFree()
	if err != nil {
		t.Fatal(err)
	}
	// 2 MiB of keyslots: keyslot 0 and the 1 MiB reserved after it.
	if slot != 31 || area.Offset != k0.Offset+k0.Size || free != 2<<20-k0.Size-1<<20 {
		t.Fatalf("reserved keyslot %d at %d, %d bytes left free", slot, area.Offset, free)
	}
	tid, err := d.FreeToken()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetToken(tid, []byte(`{"type":"cryptshift","keyslots":[],"state":"converting"}`)); err != nil {
		t.Fatal(err)
	}
	if err := d.SetRequirement("cryptshift-reencrypt", true); err != nil {
		t.Fatal(err)
	}
	if err := CommitLUKS2(dev, d); err != nil {
		t.Fatal(err)
	}
	dump := runCS(t, "luksDump", im.path)
	for _, want := range []string{"Requirements:\tcryptshift-reencrypt", "31: cryptshift", "cryptshift"} {
		if !strings.Contains(dump, want) {
			t.Errorf("luksDump lacks %q:\n%s", want, dump)
		}
	}
	runCS(t, "open", "--test-passphrase", "--key-file", im.pass, im.path)
	writeFile(t, im.pass+"1", []byte("marks 1"))
	out, err := runCSFail(t, append(append([]string{"luksAddKey", "--batch-mode", "--key-file", im.pass}, pbkdf2Cheap...), im.path, im.pass+"1")...)
	if err == nil || !strings.Contains(out, "Unmet LUKS2 requirements detected") {
		t.Fatalf("luksAddKey over the requirement: %v\n%s", err, out)
	}
	// CommitLUKS2 refuses the header now, as cryptsetup does; only the
	// writer that set the requirement takes it away.
	d = mustDraft(t, readLUKS2File(t, im.path))
	if err := d.SetRequirement("cryptshift-reencrypt", false); err != nil {
		t.Fatal(err)
	}
	if err := CommitLUKS2(dev, d); err == nil {
		t.Fatal("CommitLUKS2 changed a header with an unknown requirement")
	}
	if err := CommitLUKS2Own(dev, d, "other"); err == nil {
		t.Fatal("CommitLUKS2Own accepted a requirement it does not own")
	}
	if err := CommitLUKS2Own(dev, d, "cryptshift-reencrypt"); err != nil {
		t.Fatal(err)
	}
	runCS(t, append(append([]string{"luksAddKey", "--batch-mode", "--key-file", im.pass}, pbkdf2Cheap...), im.path, im.pass+"1")...)
	h := readLUKS2File(t, im.path)
	if len(h.Meta.Config.Mandatory) != 0 {
		t.Fatalf("requirements left: %v", h.Meta.Config.Mandatory)
	}
	k := h.Meta.Keyslots[1]
	if k == nil || k.Area.Offset < area.Offset+area.Size {
		t.Fatalf("cryptsetup placed keyslot 1 at %+v, inside the reserved area %+v", k, area)
	}
	d = mustDraft(t, h)
	if _, err := d.RemoveOther(slot); err != nil {
		t.Fatal(err)
	}
	if err := d.SetToken(tid, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.SetSegmentCrypt(0, "aes-cbc-essiv:sha256", 512); err != nil {
		t.Fatal(err)
	}
	if err := CommitLUKS2(dev, d); err != nil {
		t.Fatal(err)
	}
	dump = runCS(t, "luksDump", im.path)
	if strings.Contains(dump, "cryptshift") || !strings.Contains(dump, "aes-cbc-essiv:sha256") {
		t.Fatalf("after removing the marks:\n%s", dump)
	}
}
