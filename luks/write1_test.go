package luks

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/tests/fault"
)

func readLUKS1File(t *testing.T, path string) *LUKS1 {
	t.Helper()
	v, done := openFile(t, path)
	defer done()
	if v.V1 == nil {
		t.Fatalf("%s is not LUKS1", path)
	}
	return v.V1
}

// TestLUKS1AddRemoveKeyslot: keyslots added into free LUKS1 slots (6
// straddles the phdr's first two sectors) open in cryptsetup and yield the
// volume key; a removed one no longer opens, its material is overwritten,
// and the others still open.
func TestLUKS1AddRemoveKeyslot(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []string
	}{
		{"xts512-sha256", join([]string{"--type", "luks1"}, pbkdf2Cheap)},
		{"essiv256-sha1", join([]string{"--type", "luks1", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--hash", "sha1"}, pbkdf2Cheap)},
	} {
		t.Run(c.name, func(t *testing.T) {
			im := format(t, 4<<20, "luks1 "+c.name, c.opts...)
			vk := unlockKey(t, im.path, readPass(t, im.pass))
			dev := openDev(t, im.path)
			for _, slot := range []int{6, AnySlot} {
				d := readLUKS1File(t, im.path).Draft()
				np := writeFile(t, filepath.Join(filepath.Dir(im.path), fmt.Sprintf("new%d", slot)), []byte(fmt.Sprintf("luks1 new %d", slot)))
				mat, err := d.AddKeyslot(slot, vk, readPass(t, np), 1000)
				if err != nil {
					t.Fatal(err)
				}
				if err := WriteKeyslotMaterial(dev, mat); err != nil {
					t.Fatal(err)
				}
				if err := CommitLUKS1(dev, d); err != nil {
					t.Fatal(err)
				}
				mat.Wipe()
				if slot == AnySlot && mat.Slot != 1 {
					t.Errorf("the lowest free keyslot is 1, got %d", mat.Slot)
				}
				s := strconv.Itoa(mat.Slot)
				runCS(t, "open", "--test-passphrase", "--key-slot", s, "--key-file", np, im.path)
				if got := csKey(t, im.path, np, "--key-slot", s); !bytes.Equal(got, vk) {
					t.Errorf("keyslot %d: cryptsetup dumps another key", mat.Slot)
				}
				if f := dumpFields(runCS(t, "luksDump", im.path)); !strings.HasPrefix(f["Key Slot "+s], "ENABLED") {
					t.Errorf("luksDump: keyslot %s %q", s, f["Key Slot "+s])
				}
			}
			before := readImage(t, im.path)
			d := readLUKS1File(t, im.path).Draft()
			area, err := d.RemoveKeyslot(6)
			if err != nil {
				t.Fatal(err)
			}
			if err := CommitLUKS1(dev, d); err != nil {
				t.Fatal(err)
			}
			if err := WipeKeyslotArea(dev, area); err != nil {
				t.Fatal(err)
			}
			after := readImage(t, im.path)
			for s := area.Offset; s < area.Offset+area.Size; s += 512 {
				if bytes.Equal(before[s:s+512], after[s:s+512]) {
					t.Fatalf("sector at %d of the wiped material is unchanged", s)
				}
			}
			if f := dumpFields(runCS(t, "luksDump", im.path)); f["Key Slot 6"] != "DISABLED" {
				t.Errorf("luksDump: keyslot 6 %q after removal", f["Key Slot 6"])
			}
			if _, err := runCSFail(t, "open", "--test-passphrase", "--key-file", filepath.Join(filepath.Dir(im.path), "new6"), im.path); err == nil {
				t.Error("cryptsetup still opens the removed keyslot's passphrase")
			}
			runCS(t, "open", "--test-passphrase", "--key-slot", "0", "--key-file", im.pass, im.path)
			runCS(t, "open", "--test-passphrase", "--key-slot", "1", "--key-file", filepath.Join(filepath.Dir(im.path), fmt.Sprintf("new%d", AnySlot)), im.path)
			d = readLUKS1File(t, im.path).Draft()
			if _, err := d.AddKeyslot(2, vk[:len(vk)-1], []byte("x"), 1000); !errorsIsWrongKey(err) {
				t.Errorf("a key that is not the volume key: %v", err)
			}
			if _, err := d.RemoveKeyslot(0); err != nil {
				t.Fatal(err)
			}
			if _, err := d.RemoveKeyslot(1); errclass.Code(err) != errclass.ExitUsage {
				t.Errorf("a second keyslot change in one draft: %v, want a usage error", err)
			}
		})
	}
}

func errorsIsWrongKey(err error) bool { return errclass.Code(err) == errclass.ExitWrongKey }

// luks1View is what a LUKS1 reader acts on: the header fields and the
// enabled keyslots' fields (a disabled keyslot's iterations and salt mean
// nothing).
func luks1View(h *LUKS1) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s %d %d %x %x %d %s", h.CipherName, h.CipherMode, h.HashSpec, h.PayloadOffset, h.KeyBytes, h.MKDigest, h.MKDigestSalt, h.MKDigestIterations, h.UUID)
	for i, k := range h.Keyslots {
		if k.Enabled() {
			fmt.Fprintf(&b, " slot%d:%d:%x:%d", i, k.Iterations, k.Salt, k.KeyMaterialOffset)
		} else {
			fmt.Fprintf(&b, " slot%d:off:%d", i, k.KeyMaterialOffset)
		}
	}
	return b.String()
}

// TestLUKS1CommitCrash crashes a keyslot added into slot 6 (the one
// straddling two sectors) and slot 2, and a keyslot removed and wiped, at
// every write and flush, every subset and torn mix: the phdr reads as the
// old header or the new one, and the passphrases of the one it reads as
// open. Shorn sectors are left out: LUKS1 has one phdr and no checksum, so
// a garbage sector 0 destroys the volume whatever the order (the
// conversion's log must keep a copy of the phdr; docs/DESIGN.md). A
// mutant that writes the phdr in one piece is caught.
func TestLUKS1CommitCrash(t *testing.T) {
	im := format(t, 3<<20, "one", join([]string{"--type", "luks1", "--key-size", "256"}, pbkdf2Cheap)...)
	writeFile(t, im.pass+"6", []byte("six"))
	runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-slot", "6", "--key-file", im.pass}, pbkdf2Cheap, []string{im.path, im.pass + "6"})...)
	fresh := readImage(t, im.path)
	vk := unlockKey(t, im.path, []byte("one"))
	opts := fault.EnumOptions{MaxStates: 96, Torn: true, Seed: 1}
	type op struct {
		name             string
		newPass, oldPass []string
		oneWrite         bool
		run              func(d *Draft1) (*KeyslotMaterial, *Area)
	}
	ops := []op{
		{"add slot 2", []string{"one", "six", "added"}, []string{"one", "six"}, false, func(d *Draft1) (*KeyslotMaterial, *Area) {
			m, err := d.AddKeyslot(2, vk, []byte("added"), 1000)
			if err != nil {
				t.Fatal(err)
			}
			return m, nil
		}},
		{"remove slot 6", []string{"one"}, []string{"one", "six"}, false, func(d *Draft1) (*KeyslotMaterial, *Area) {
			a, err := d.RemoveKeyslot(6)
			if err != nil {
				t.Fatal(err)
			}
			return nil, &a
		}},
		{"re-add slot 6", []string{"one", "again"}, []string{"one"}, false, nil},
		{"mutant: re-add slot 6 in one write", []string{"one", "again"}, []string{"one"}, true, nil},
	}
	readd := func(d *Draft1) (*KeyslotMaterial, *Area) {
		m, err := d.AddKeyslot(6, vk, []byte("again"), 1000)
		if err != nil {
			t.Fatal(err)
		}
		return m, nil
	}
	ops[2].run, ops[3].run = readd, readd
	var states int
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			img := bytes.Clone(fresh)
			if strings.Contains(o.name, "re-add") {
				// Slot 6 disabled first, with its old salt left behind, so
				// that the sector holding the rest of it changes too.
				o := keyslot1Offset + 6*keyslot1Size
				copy(img[o:], []byte{0, 0, 0xde, 0xad})
			}
			v, err := openBytes(t, img)
			if err != nil {
				t.Fatal(err)
			}
			old := luks1View(v.V1)
			dom := fault.NewDomain()
			disk := dom.NewDisk(img)
			d := v.V1.Draft()
			mat, area := o.run(d)
			if mat != nil {
				if err := WriteKeyslotMaterial(disk, mat); err != nil {
					t.Fatal(err)
				}
				mat.Wipe()
			}
			if o.oneWrite {
				disk.WriteAt(d.phdr[:], 0)
				disk.Flush()
			} else if err := CommitLUKS1(disk, d); err != nil {
				t.Fatal(err)
			}
			if area != nil {
				if err := WipeKeyslotArea(disk, *area); err != nil {
					t.Fatal(err)
				}
			}
			nv, err := openBytes(t, disk.Contents())
			if err != nil {
				t.Fatal(err)
			}
			nw := luks1View(nv.V1)
			var failure error
			for i, st := range crashStates(t, dom, opts, 16) {
				imgs, err := dom.Image(st.K, st.Choice)
				if err != nil {
					t.Fatal(err)
				}
				states++
				if err := checkLUKS1State(t, imgs[0], old, nw, o.newPass, o.oldPass); err != nil {
					failure = fmt.Errorf("%s: %w", st.Desc, err)
					break
				}
				if !o.oneWrite && i%5 == 0 {
					checkStockLUKS1(t, imgs[0], st.Desc)
				}
			}
			switch {
			case o.oneWrite && failure == nil:
				t.Fatal("the one-write mutant left no bad crash state")
			case o.oneWrite:
				t.Logf("mutant caught: %v", failure)
			case failure != nil:
				t.Fatal(failure)
			}
		})
	}
	t.Logf("%d crash states", states)
}

func checkLUKS1State(t *testing.T, b []byte, old, nw string, newPass, oldPass []string) error {
	t.Helper()
	v, err := openBytes(t, b)
	if err != nil {
		return fmt.Errorf("no LUKS1 header after the crash: %w", err)
	}
	got := luks1View(v.V1)
	passes := oldPass
	switch got {
	case nw:
		passes = newPass
	case old:
	default:
		return fmt.Errorf("the phdr is neither the old header nor the new one:\n%s\nold %s\nnew %s", got, old, nw)
	}
	for _, p := range passes {
		u, err := v.Unlock([]byte(p), AnySlot)
		if err != nil {
			return fmt.Errorf("passphrase %q opens nothing: %w", p, err)
		}
		u.Wipe()
	}
	return nil
}

// checkStockLUKS1 asks stock cryptsetup which LUKS1 keyslots a crash
// state has enabled; the reader must agree.
func checkStockLUKS1(t *testing.T, b []byte, desc string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "crash.img")
	writeImage(t, p, b)
	f := dumpFields(runCS(t, "luksDump", p))
	v, err := openBytes(t, b)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range v.V1.Keyslots {
		want := "DISABLED"
		if k.Enabled() {
			want = "ENABLED"
		}
		if got := f["Key Slot "+strconv.Itoa(i)]; got != want {
			t.Fatalf("%s: cryptsetup says keyslot %d is %q, the reader %s", desc, i, got, want)
		}
	}
}
