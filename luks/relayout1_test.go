package luks

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/tests/fault"
)

func randKey(t *testing.T, n int) []byte {
	t.Helper()
	k := make([]byte, n)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// essiv256 is the LUKS1 volume the headline conversion starts from.
var essiv256 = join([]string{"--type", "luks1", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"}, pbkdf2Cheap)

// TestLUKS1LayoutMatchesCryptsetup: LUKS1Layout is where cryptsetup
// luksFormat puts all eight keyslots (enabled or not) for 128-, 256- and
// 512-bit keys, and its end fits the payload offset cryptsetup picks.
func TestLUKS1LayoutMatchesCryptsetup(t *testing.T) {
	for _, c := range []struct {
		bits   int
		cipher string
	}{{128, "aes-cbc-essiv:sha256"}, {256, "aes-cbc-essiv:sha256"}, {512, "aes-xts-plain64"}} {
		im := format(t, 3<<20, "x", join([]string{"--type", "luks1", "--cipher", c.cipher, "--key-size", strconv.Itoa(c.bits)}, pbkdf2Cheap)...)
		h := readLUKS1File(t, im.path)
		offs, end := LUKS1Layout(c.bits / 8)
		for i, k := range h.Keyslots {
			if k.KeyMaterialOffset != offs[i] {
				t.Errorf("%d-bit keyslot %d: cryptsetup at sector %d, LUKS1Layout %d", c.bits, i, k.KeyMaterialOffset, offs[i])
			}
		}
		if end > uint64(h.PayloadOffset) || uint64(h.PayloadOffset) != (end+2047)/2048*2048 {
			t.Errorf("%d-bit: layout ends at %d, cryptsetup's payload offset %d", c.bits, end, h.PayloadOffset)
		}
	}
}

// relayoutFile plans and commits a re-layout on an image file.
func relayoutFile(t *testing.T, path string, oldKey []byte, p Relayout1Params) *Relayout1 {
	t.Helper()
	v, done := openFile(t, path)
	defer done()
	r, err := PlanRelayout1(v, oldKey, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Wipe)
	if err := r.Commit(openDev(t, path)); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestLUKS1RelayoutEssivToXTS: the headline case. An aes-cbc-essiv:sha256
// 256-bit LUKS1 volume with passphrases in keyslots 0 and 3 gets an
// aes-xts-plain64 512-bit volume key: stock cryptsetup then opens it with
// each passphrase and dumps the new key, reports the new cipher and key
// size, all eight keyslots sit where cryptsetup's own 512-bit layout puts
// them, the data area is untouched, and the old volume key can no longer
// be unlocked from anything on the disk.
func TestLUKS1RelayoutEssivToXTS(t *testing.T) {
	im := format(t, 4<<20, "zero", essiv256...)
	passes := []string{im.pass, writeFile(t, filepath.Join(filepath.Dir(im.path), "p3"), []byte("three"))}
	runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-slot", "3", "--key-file", im.pass}, pbkdf2Cheap, []string{im.path, passes[1]})...)
	oldKey := unlockKey(t, im.path, []byte("zero"))
	before := readImage(t, im.path)
	newKey := randKey(t, 64)
	r := relayoutFile(t, im.path, oldKey, Relayout1Params{
		Cipher: "aes-xts-plain64", Key: newKey, DigestIterations: 1000,
		Keep: []Carry1{{Slot: 0, Pass: []byte("zero")}, {Slot: 3, Pass: []byte("three"), Iterations: 2000}},
	})
	after := readImage(t, im.path)
	f := dumpFields(runCS(t, "luksDump", im.path))
	if f["Cipher name"] != "aes" || f["Cipher mode"] != "xts-plain64" || f["MK bits"] != "512" || f["UUID"] != readLUKS1File(t, im.path).UUID {
		t.Errorf("luksDump: cipher %q mode %q MK bits %q UUID %q", f["Cipher name"], f["Cipher mode"], f["MK bits"], f["UUID"])
	}
	for i, pf := range passes {
		s := strconv.Itoa(r.Slots[i])
		runCS(t, "open", "--test-passphrase", "--key-slot", s, "--key-file", pf, im.path)
		if got := csKey(t, im.path, pf); !bytes.Equal(got, newKey) {
			t.Errorf("passphrase %d: cryptsetup dumps another volume key", i)
		}
	}
	h := readLUKS1File(t, im.path)
	offs, _ := LUKS1Layout(64)
	enabled := 0
	for i, k := range h.Keyslots {
		if k.KeyMaterialOffset != offs[i] {
			t.Errorf("keyslot %d at sector %d, cryptsetup's 512-bit layout has %d", i, k.KeyMaterialOffset, offs[i])
		}
		if k.Enabled() {
			enabled++
		}
	}
	if enabled != 2 || h.Keyslots[r.Slots[1]].Iterations != 2000 {
		t.Errorf("%d keyslots enabled, keyslot %d has %d iterations", enabled, r.Slots[1], h.Keyslots[r.Slots[1]].Iterations)
	}
	pay := int(h.PayloadOffset) * sectorSize
	if !bytes.Equal(before[pay:], after[pay:]) {
		t.Error("the data area changed")
	}
	// The old phdr over today's keyslot area: no kept passphrase unlocks
	// the old key any more.
	mix := bytes.Clone(after)
	copy(mix, before[:2*sectorSize])
	v, err := openBytes(t, mix)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"zero", "three"} {
		if u, err := v.Unlock([]byte(p), AnySlot); err == nil {
			u.Wipe()
			t.Errorf("the old key material of %q survived", p)
		}
	}
}

// TestLUKS1RelayoutMovesAndDrops: a kept passphrase in keyslot 6 (which
// the switch's sector 1 must have disabled) is moved first, an active
// keyslot 7 not kept is removed, and stock cryptsetup opens the result
// with the kept passphrases only.
func TestLUKS1RelayoutMovesAndDrops(t *testing.T) {
	im := format(t, 4<<20, "zero", essiv256...)
	dir := filepath.Dir(im.path)
	p6 := writeFile(t, filepath.Join(dir, "p6"), []byte("six"))
	p7 := writeFile(t, filepath.Join(dir, "p7"), []byte("seven"))
	for s, pf := range map[string]string{"6": p6, "7": p7} {
		runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-slot", s, "--key-file", im.pass}, pbkdf2Cheap, []string{im.path, pf})...)
	}
	oldKey := unlockKey(t, im.path, []byte("zero"))
	newKey := randKey(t, 64)
	v, done := openFile(t, im.path)
	r, err := PlanRelayout1(v, oldKey, Relayout1Params{Cipher: "aes-xts-plain64", Key: newKey, DigestIterations: 1000,
		Keep: []Carry1{{Slot: AnySlot, Pass: []byte("zero")}, {Slot: 6, Pass: []byte("six")}}})
	done()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Wipe()
	if len(r.moves) != 1 || r.moves[0].from != 6 || len(r.drop) != 1 || r.drop[0] != 7 {
		t.Fatalf("plan: moves %v, drops %v; want keyslot 6 moved, 7 dropped", r.moves, r.drop)
	}
	if err := r.Commit(openDev(t, im.path)); err != nil {
		t.Fatal(err)
	}
	for _, pf := range []string{im.pass, p6} {
		if got := csKey(t, im.path, pf); !bytes.Equal(got, newKey) {
			t.Errorf("%s: cryptsetup dumps another key", pf)
		}
	}
	if _, err := runCSFail(t, "open", "--test-passphrase", "--key-file", p7, im.path); err == nil {
		t.Error("the dropped keyslot 7 still opens")
	}
}

// TestLUKS1RelayoutRefusals: the tight old layout of cryptsetup's test
// image (128-bit, payload at 1032) has no room for 256-bit keyslots, and
// the error says which payload offset would be needed; four passphrases
// cannot be re-laid out crash-safely under 2 MiB; a passphrase that opens
// nothing is WrongKey. Nothing is written in any case.
func TestLUKS1RelayoutRefusals(t *testing.T) {
	dir := unxz(t, "compatimage.img.xz")
	path := filepath.Join(dir, "compatimage.img")
	before := readImage(t, path)
	v, done := openFile(t, path)
	u, err := v.Unlock([]byte("compatkey"), AnySlot)
	if err != nil {
		t.Fatal(err)
	}
	_, err = PlanRelayout1(v, u.Key.Bytes(), Relayout1Params{Cipher: "aes-xts-plain64", Key: randKey(t, 32), DigestIterations: 1000, Keep: []Carry1{{Slot: 0, Pass: []byte("compatkey")}}})
	u.Wipe()
	done()
	if errclass.Code(err) != errclass.ExitDevice || !strings.Contains(err.Error(), "at least 2050 sectors (4096 with") || strings.Contains(err.Error(), "\n") {
		t.Errorf("tight layout: %v; want a one-line Device error naming payload offset 2050 (4096)", err)
	}
	if !bytes.Equal(before, readImage(t, path)) {
		t.Error("the refused plan changed the image")
	}

	im := format(t, 4<<20, "zero", essiv256...)
	keep := []Carry1{{Slot: 0, Pass: []byte("zero")}}
	for i := 1; i < 4; i++ {
		pf := writeFile(t, filepath.Join(filepath.Dir(im.path), fmt.Sprint("p", i)), []byte(fmt.Sprint("pass ", i)))
		runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-file", im.pass}, pbkdf2Cheap, []string{im.path, pf})...)
		keep = append(keep, Carry1{Slot: i, Pass: []byte(fmt.Sprint("pass ", i))})
	}
	oldKey := unlockKey(t, im.path, []byte("zero"))
	v, done = openFile(t, im.path)
	defer done()
	p := Relayout1Params{Cipher: "aes-xts-plain64", Key: randKey(t, 64), DigestIterations: 1000, Keep: keep}
	if _, err := PlanRelayout1(v, oldKey, p); errclass.Code(err) != errclass.ExitDevice {
		t.Errorf("four keyslots 256 -> 512 bit: %v, want a Device refusal", err)
	}
	p.Keep = keep[:3]
	r, err := PlanRelayout1(v, oldKey, p)
	if err != nil {
		t.Errorf("three keyslots 256 -> 512 bit: %v", err)
	} else {
		r.Wipe()
	}
	p.Keep = []Carry1{{Slot: 0, Pass: []byte("wrong")}}
	if _, err := PlanRelayout1(v, oldKey, p); !errorsIsWrongKey(err) {
		t.Errorf("a wrong passphrase: %v", err)
	}
}

// relayState is what a reader finds in a crash state of a re-layout: the
// old volume key or the new one, and every kept passphrase opening it.
func checkRelayoutState(t *testing.T, b []byte, oldKey, newKey []byte, passes []string) (bool, error) {
	t.Helper()
	v, err := openBytes(t, b)
	if err != nil {
		if errors.Is(err, ErrInConversion) {
			v, err = OpenMarked(byteDev(b), int64(len(b)))
		}
		if err != nil {
			return false, fmt.Errorf("no LUKS1 header after the crash: %w", err)
		}
	}
	isNew := v.CheckVolumeKey(newKey) == nil
	want := newKey
	if !isNew {
		if err := v.CheckVolumeKey(oldKey); err != nil {
			return false, fmt.Errorf("the header verifies neither the old nor the new volume key")
		}
		want = oldKey
	}
	for _, p := range passes {
		u, err := v.Unlock([]byte(p), AnySlot)
		if err != nil {
			return isNew, fmt.Errorf("passphrase %q opens nothing under the %s header: %w", p, map[bool]string{true: "new", false: "old"}[isNew], err)
		}
		ok := bytes.Equal(u.Key.Bytes(), want)
		u.Wipe()
		if !ok {
			return isNew, fmt.Errorf("passphrase %q unlocks another key", p)
		}
	}
	return isNew, nil
}

// TestLUKS1RelayoutCrash crashes the re-layout (essiv 256-bit to xts
// 512-bit, with a keyslot dropped and one moved, and a plain one; marked
// as in conversion or not) at every write and flush, with every subset of
// the pending writes and torn mixes: each state holds a valid LUKS1 header
// with the old key or the new one that opens every kept passphrase, the
// new one once the switch's flush returned. Stock cryptsetup agrees on a
// sample (which key size, which keyslots). The mutant that writes the new
// phdr in one two-sector write without preparing sector 1 is caught.
func TestLUKS1RelayoutCrash(t *testing.T) {
	im := format(t, 3<<20, "zero", essiv256...)
	dir := filepath.Dir(im.path)
	for s, p := range map[string]string{"2": "two", "6": "six"} {
		pf := writeFile(t, filepath.Join(dir, "p"+s), []byte(p))
		runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-slot", s, "--key-file", im.pass}, pbkdf2Cheap, []string{im.path, pf})...)
	}
	fresh := readImage(t, im.path)
	oldKey := unlockKey(t, im.path, []byte("zero"))
	newKey := randKey(t, 64)
	opts, torn := fault.EnumOptions{MaxStates: 32, Torn: true, Seed: 3}, 6
	short := testing.Short()
	cases := []struct {
		name   string
		keep   []string
		marked bool
		mutant bool
	}{
		{"keep 0, drop 2 and 6", []string{"zero"}, false, false},
		{"keep 0 and 6 (moved), drop 2", []string{"zero", "six"}, false, false},
		{"marked, keep 0 2 6", []string{"zero", "two", "six"}, true, false},
		{"mutant: one two-sector phdr write", []string{"zero", "two"}, false, true},
	}
	var states, stock int
	for ci, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if short && ci > 0 && !c.mutant {
				t.Skip("short mode: the first case and the mutant only")
			}
			img := bytes.Clone(fresh)
			dom := fault.NewDomain()
			disk := dom.NewDisk(img)
			if c.marked {
				if err := MarkLUKS1(disk); err != nil {
					t.Fatal(err)
				}
				img = disk.Contents()
				dom = fault.NewDomain()
				disk = dom.NewDisk(img)
			}
			v, err := Open(byteDev(img), int64(len(img)))
			if c.marked {
				v, err = OpenMarked(byteDev(img), int64(len(img)))
			}
			if err != nil {
				t.Fatal(err)
			}
			var keep []Carry1
			for _, p := range c.keep {
				keep = append(keep, Carry1{Slot: AnySlot, Pass: []byte(p)})
			}
			r, err := PlanRelayout1(v, oldKey, Relayout1Params{Cipher: "aes-xts-plain64", Key: newKey, DigestIterations: 1000, Keep: keep})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Wipe()
			if c.mutant {
				for _, m := range r.mats {
					disk.WriteAt(m.Bytes(), m.Offset)
				}
				disk.Flush()
				disk.WriteAt(r.newPhdr[:], 0)
				disk.Flush()
			} else if err := r.Commit(disk); err != nil {
				t.Fatal(err)
			}
			if isNew, err := checkRelayoutState(t, disk.Contents(), oldKey, newKey, c.keep); err != nil || !isNew {
				t.Fatalf("after the commit: new %v, %v", isNew, err)
			}
			switchK := -1
			for _, cp := range dom.CrashPoints() {
				if cp.Kind&^fault.PointBetweenWrites != 0 {
					img, _ := dom.Image(cp.K, fault.Choice{})
					if isNew, _ := checkRelayoutState(t, img[0], oldKey, newKey, nil); isNew && switchK < 0 {
						switchK = cp.K
					}
				}
			}
			var failure error
			sts := crashStates(t, dom, opts, torn)
			if c.mutant {
				slices.Reverse(sts) // its fault is at the end: find it first
			} else if short {
				sts = sts[:min(len(sts), 40)]
			}
			for i, st := range sts {
				imgs, err := dom.Image(st.K, st.Choice)
				if err != nil {
					t.Fatal(err)
				}
				states++
				isNew, err := checkRelayoutState(t, imgs[0], oldKey, newKey, c.keep)
				if err == nil && !isNew && switchK >= 0 && st.K >= switchK {
					err = fmt.Errorf("the old header is back after the switch was durable")
				}
				if err != nil {
					failure = fmt.Errorf("%s: %w", st.Desc, err)
					break
				}
				if !c.mutant && !c.marked && i%9 == 0 {
					stock++
					checkStockLUKS1(t, imgs[0], st.Desc)
				}
			}
			switch {
			case c.mutant && failure == nil:
				t.Fatal("the mutant left no bad crash state")
			case c.mutant:
				t.Logf("mutant caught: %v", failure)
			case failure != nil:
				t.Fatal(failure)
			}
		})
	}
	t.Logf("%d crash states, %d judged by stock cryptsetup", states, stock)
}
