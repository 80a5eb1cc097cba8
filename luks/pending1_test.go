package luks

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
)

// TestPendingLUKS1 writes a conversion record after a re-layout's
// Prepare and reads it back: the record's header unlocks the new key with
// the kept passphrase (its material is on disk), while the header on disk
// still opens the old one; a torn record (one of its two sectors old)
// reads as none; a record whose keyslots 6 and 7 differ from the header's
// is refused; the switch makes the record's header the volume's, and
// FinishLUKS1 leaves no trace of either.
func TestPendingLUKS1(t *testing.T) {
	im := format(t, 3<<20, "zero", essiv256...)
	dev := blockdev.MemFrom(readImage(t, im.path))
	pass := []byte("zero")
	if err := MarkLUKS1(dev); err != nil {
		t.Fatal(err)
	}
	v, err := OpenMarked(dev, dev.Size())
	if err != nil {
		t.Fatal(err)
	}
	old, err := v.Unlock(pass, AnySlot)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Wipe()
	newKey := bytes.Repeat([]byte{0x5a}, 64)
	r, err := PlanRelayout1(v, old.Key.Bytes(), Relayout1Params{Cipher: "aes-xts-plain64", Key: newKey, DigestIterations: 1000, Keep: []Carry1{{Slot: AnySlot, Pass: pass}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Wipe()
	if err := r.Prepare(dev); err != nil {
		t.Fatal(err)
	}
	if next, _, err := mustMarked(t, dev).PendingLUKS1(); next != nil || err != nil {
		t.Fatalf("a record before it was written: %v %v", next, err)
	}
	if err := WritePendingLUKS1(dev, r, MetaSeparate); err != nil {
		t.Fatal(err)
	}
	v = mustMarked(t, dev)
	next, place, err := v.PendingLUKS1()
	if err != nil || next == nil || place != MetaSeparate {
		t.Fatalf("record: %v %v %v", next, place, err)
	}
	u, err := next.Unlock(pass, AnySlot)
	if err != nil || !bytes.Equal(u.Key.Bytes(), newKey) {
		t.Fatalf("the record's header does not unlock the new key: %v", err)
	}
	u.Wipe()
	if u, err := v.Unlock(pass, AnySlot); err != nil || !bytes.Equal(u.Key.Bytes(), old.Key.Bytes()) {
		t.Fatalf("the marked header no longer opens the old key: %v", err)
	}
	img := contents(t, dev)

	torn := bytes.Clone(img)
	clear(torn[pendingOffset+sectorSize : pendingOffset+2*sectorSize])
	if n, _, err := mustMarked(t, blockdev.MemFrom(torn)).PendingLUKS1(); n != nil || err != nil {
		t.Fatalf("a torn record reads as %v, %v", n, err)
	}
	edited := bytes.Clone(img)
	edited[keyslot1Offset+7*keyslot1Size+8] ^= 1 // keyslot 7's salt, in sector 1
	if _, _, err := mustMarked(t, blockdev.MemFrom(edited)).PendingLUKS1(); errclass.Code(err) != errclass.ExitHeader {
		t.Fatalf("an edited sector 1: %v", err)
	}

	if err := SwitchLUKS1(dev, next.V1); err != nil {
		t.Fatal(err)
	}
	sw, err := Open(dev, dev.Size())
	if err != nil || sw.V1.Cipher() != "aes-xts-plain64" || sw.UUID != v.UUID {
		t.Fatalf("after the switch: %v", err)
	}
	if err := FinishLUKS1(dev); err != nil {
		t.Fatal(err)
	}
	fin := contents(t, dev)
	if bytes.Contains(fin[:8*sectorSize], []byte("cryptshift")) {
		t.Fatal("the tag or the record is left")
	}
	if tagged, _ := mustOpen(t, dev).Tagged(); tagged {
		t.Fatal("still tagged")
	}
}

// TestCheckPendingRoom: cryptsetup 1.0's layout put keyslot 0 at sector 2,
// where the record goes: refused, as the device class (exit 4).
func TestCheckPendingRoom(t *testing.T) {
	v, done := openFile(t, filepath.Join(unxz(t, "compatv10image.img.xz"), "compatv10image.img"))
	defer done()
	if err := CheckPendingRoom(v.V1); errclass.Code(err) != errclass.ExitDevice {
		t.Fatalf("keyslot at sector %d: %v", v.V1.Keyslots[0].KeyMaterialOffset, err)
	}
	im := format(t, 3<<20, "zero", essiv256...)
	w, done2 := openFile(t, im.path)
	defer done2()
	if err := CheckPendingRoom(w.V1); err != nil {
		t.Fatal(err)
	}
}

func mustMarked(t *testing.T, dev blockdev.Device) *Volume {
	t.Helper()
	v, err := OpenMarked(dev, dev.Size())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustOpen(t *testing.T, dev blockdev.Device) *Volume {
	t.Helper()
	v, err := Open(dev, dev.Size())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func contents(t *testing.T, d blockdev.Device) []byte {
	t.Helper()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzPendingLUKS1 feeds arbitrary new-header bytes to the conversion
// record's decoder, under a valid tag and checksum (so that the fuzzer
// reaches the header checks, not only the sha256), beside a valid LUKS1
// phdr: it must not panic, and what it accepts is a LUKS1 header of the
// same UUID and keyslots 6 and 7 as the volume's.
func FuzzPendingLUKS1(f *testing.F) {
	base := make([]byte, phdrSize)
	copy(base, magic1st)
	base[7] = 1
	copy(base[8:], "aes")
	copy(base[40:], "xts-plain64")
	copy(base[72:], "sha256")
	base[104+2], base[108+3] = 0x10, 64 // payload 4096, 64-byte key
	copy(base[168:], "0b1d9d4e-5d3e-4f7e-9b0e-4c1f2a3b4c5d")
	for i := 0; i < numKeyslots1; i++ {
		o := keyslot1Offset + i*keyslot1Size
		copy(base[o:], []byte{0, 0, 0xde, 0xad})
		off := uint32(8 + i*504)
		base[o+40], base[o+41], base[o+42], base[o+43] = byte(off>>24), byte(off>>16), byte(off>>8), byte(off)
		base[o+46], base[o+47] = 0x0f, 0xa0
	}
	f.Add(bytes.Clone(base), byte(0))
	f.Add(base[:100], byte(1))
	f.Fuzz(func(t *testing.T, phdr []byte, place byte) {
		img := make([]byte, 4<<20)
		copy(img, base)
		rec := img[pendingOffset : pendingOffset+pendingLen]
		copy(rec, pendingTag)
		copy(rec[pendingPhdr:pendingPlace], phdr)
		rec[pendingPlace] = place
		sum := sha256Sum(rec[:pendingSum])
		copy(rec[pendingSum:], sum)
		v, err := Open(byteDev(img), int64(len(img)))
		if err != nil {
			t.Fatalf("the base header: %v", err)
		}
		next, _, err := v.PendingLUKS1()
		if err != nil || next == nil {
			return
		}
		if next.UUID != v.UUID || !bytes.Equal(next.V1.Raw[sectorSize:], v.V1.Raw[sectorSize:]) {
			t.Fatalf("accepted a record of another volume or other keyslots 6 and 7")
		}
	})
}
