package luks

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/tests/fault"
)

// TestLUKS1Mark: a marked LUKS1 volume is no LUKS volume to stock
// cryptsetup and blkid; Detect and Open report it as cryptshift's (not as
// a cryptsetup-reencrypt run); OpenMarked reads and unlocks it; unmarking
// gives back the exact image cryptsetup made, which it opens again. A
// volume marked by cryptsetup's reencryption (magic only) is reported as
// that, and neither marked over nor unmarked.
func TestLUKS1Mark(t *testing.T) {
	im := format(t, 3<<20, "mark me", essiv256...)
	orig := readImage(t, im.path)
	dev := openDev(t, im.path)
	if err := MarkLUKS1(dev); err != nil {
		t.Fatal(err)
	}
	if err := MarkLUKS1(dev); err != nil {
		t.Fatalf("marking twice: %v", err)
	}
	marked := readImage(t, im.path)
	if !bytes.Equal(marked[:6], magicReenc) || !bytes.Equal(marked[6:sectorSize], orig[6:sectorSize]) || !bytes.Equal(marked[markTagOffset:markUUIDOffset], markTag) {
		t.Fatal("the mark is not the magic plus the tag")
	}
	if diff := diffSectors(orig, marked); fmt.Sprint(diff) != "[0 1]" {
		t.Errorf("marking changed sectors %v, want [0 1]", diff)
	}
	if out, err := runCSFail(t, "luksDump", im.path); err == nil || !strings.Contains(out, "not a valid LUKS device") {
		t.Errorf("cryptsetup luksDump of a marked volume: %v %s", err, out)
	}
	if out, err := runCSFail(t, "isLuks", im.path); err == nil {
		t.Errorf("cryptsetup isLuks of a marked volume succeeds: %s", out)
	}
	sig, err := Detect(byteDev(marked), int64(len(marked)))
	if err != nil || sig == nil || !sig.InConversion || !strings.Contains(sig.String(), "cryptshift") {
		t.Errorf("Detect: %+v %v", sig, err)
	}
	_, err = openBytes(t, marked)
	if !errors.Is(err, ErrInConversion) || errclass.Code(err) != errclass.ExitDevice {
		t.Errorf("Open of a marked volume: %v", err)
	}
	v, err := OpenMarked(byteDev(marked), int64(len(marked)))
	if err != nil || !v.InConversion {
		t.Fatalf("OpenMarked: %v", err)
	}
	u, err := v.Unlock([]byte("mark me"), AnySlot)
	if err != nil {
		t.Fatal(err)
	}
	u.Wipe()
	if err := UnmarkLUKS1(dev); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readImage(t, im.path), orig) {
		t.Error("unmarking did not restore the image")
	}
	runCS(t, "open", "--test-passphrase", "--key-file", im.pass, im.path)

	// cryptsetup's own mark: the magic alone.
	theirs := bytes.Clone(orig)
	copy(theirs, magicReenc)
	sig, _ = Detect(byteDev(theirs), int64(len(theirs)))
	if sig == nil || !sig.Reencrypting || sig.InConversion || !strings.Contains(sig.String(), "cryptsetup-reencrypt") {
		t.Errorf("Detect of a cryptsetup-reencrypt volume: %+v", sig)
	}
	if _, err := openBytes(t, theirs); errors.Is(err, ErrInConversion) || err == nil || !strings.Contains(err.Error(), "cryptsetup-reencrypt") {
		t.Errorf("Open of a cryptsetup-reencrypt volume: %v", err)
	}
	writeImage(t, im.path, theirs)
	for name, f := range map[string]func() error{"mark": func() error { return MarkLUKS1(dev) }, "unmark": func() error { return UnmarkLUKS1(dev) }} {
		if err := f(); errclass.Code(err) != errclass.ExitDevice {
			t.Errorf("%s over cryptsetup's reencryption: %v", name, err)
		}
	}
	if !bytes.Equal(readImage(t, im.path), theirs) {
		t.Error("a refused mark or unmark wrote")
	}
}

func diffSectors(a, b []byte) []int {
	var out []int
	for s := 0; s*sectorSize < len(a); s++ {
		if !bytes.Equal(a[s*sectorSize:(s+1)*sectorSize], b[s*sectorSize:(s+1)*sectorSize]) {
			out = append(out, s)
		}
	}
	return out
}

// TestLUKS1MarkCrash crashes marking and unmarking at every write and
// flush, torn sectors included: the volume is then either plain LUKS1
// (Open reads it, the passphrase opens it) or marked by cryptshift
// (Open refuses it with ErrInConversion, OpenMarked reads it), never
// cryptsetup's mark, never unreadable. A mutant that writes the magic
// before the tag leaves a state that reads as cryptsetup's mark.
func TestLUKS1MarkCrash(t *testing.T) {
	im := format(t, 3<<20, "mark me", essiv256...)
	fresh := readImage(t, im.path)
	dev := fault.NewDomain().NewDisk(bytes.Clone(fresh))
	if err := MarkLUKS1(dev); err != nil {
		t.Fatal(err)
	}
	markedImg := dev.Contents()
	for _, c := range []struct {
		name   string
		start  []byte
		run    func(*fault.Disk) error
		mutant bool
	}{
		{"mark", fresh, func(d *fault.Disk) error { return MarkLUKS1(d) }, false},
		{"unmark", markedImg, func(d *fault.Disk) error { return UnmarkLUKS1(d) }, false},
		{"mutant: magic before tag", fresh, func(d *fault.Disk) error {
			s0 := bytes.Clone(fresh[:sectorSize])
			copy(s0, magicReenc)
			if err := writeSector(d, 0, s0, "x"); err != nil {
				return err
			}
			s1 := bytes.Clone(fresh[sectorSize : 2*sectorSize])
			copy(s1[markTagOffset-sectorSize:], markTag)
			copy(s1[markUUIDOffset-sectorSize:], fresh[168:208])
			return writeSector(d, 1, s1, "x")
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dom := fault.NewDomain()
			disk := dom.NewDisk(bytes.Clone(c.start))
			if err := c.run(disk); err != nil {
				t.Fatal(err)
			}
			var failure error
			n := 0
			for _, st := range crashStates(t, dom, fault.EnumOptions{MaxStates: 64, Torn: true, Seed: 5}, 4) {
				imgs, err := dom.Image(st.K, st.Choice)
				if err != nil {
					t.Fatal(err)
				}
				n++
				if err := checkMarkState(imgs[0]); err != nil {
					failure = fmt.Errorf("%s: %w", st.Desc, err)
					break
				}
			}
			switch {
			case c.mutant && failure == nil:
				t.Fatal("the mutant left no bad state")
			case c.mutant:
				t.Logf("mutant caught: %v", failure)
			case failure != nil:
				t.Fatal(failure)
			}
			t.Logf("%d crash states", n)
		})
	}
}

func checkMarkState(b []byte) error {
	size := int64(len(b))
	if v, err := Open(byteDev(b), size); err == nil {
		u, err := v.Unlock([]byte("mark me"), AnySlot)
		if err != nil {
			return err
		}
		u.Wipe()
		return nil
	} else if !errors.Is(err, ErrInConversion) {
		return fmt.Errorf("neither LUKS1 nor marked by cryptshift: %w", err)
	}
	v, err := OpenMarked(byteDev(b), size)
	if err != nil || !v.InConversion {
		return fmt.Errorf("OpenMarked: %v", err)
	}
	return nil
}
