package luks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/tests/fault"
)

var (
	argon2Cheap = KDF{Type: "argon2id", Time: 4, Memory: 32, CPUs: 1}
	pbkdf2KDF   = KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}
)

func convertFile(t *testing.T, path string, oldKey []byte, p LUKS1ToLUKS2Params) *LUKS1ToLUKS2 {
	t.Helper()
	v, done := openFile(t, path)
	defer done()
	c, err := PlanLUKS1ToLUKS2(v, oldKey, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Wipe)
	if err := c.Commit(openDev(t, path)); err != nil {
		t.Fatal(err)
	}
	return c
}

// jsonSection is one top-level object of a LUKS2 JSON text, re-encoded.
func jsonSection(t *testing.T, js []byte, name string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(m[name], &v); err != nil {
		t.Fatal(err)
	}
	return string(mustJSON(t, v))
}

// TestLUKS1ToLUKS2: a LUKS1 aes-cbc-essiv:sha256 volume with passphrases
// in keyslots 0 and 2 becomes LUKS2 with the same UUID, each passphrase
// in the keyslot of the same number with the KDF asked for (argon2id,
// pbkdf2), the same volume key and cipher: stock cryptsetup opens it with
// both and dumps the key, its config and segment are those `cryptsetup
// convert` makes of the same volume, the data area is untouched, and no
// LUKS1 key material is left. The headline variant gets aes-xts-plain64
// 512-bit with 4096-byte sectors and a new key in the same header.
func TestLUKS1ToLUKS2(t *testing.T) {
	for _, headline := range []bool{false, true} {
		t.Run(map[bool]string{false: "same key", true: "xts-512 4k new key"}[headline], func(t *testing.T) {
			im := format(t, 4<<20, "zero", essiv256...)
			p2 := writeFile(t, filepath.Join(filepath.Dir(im.path), "p2"), []byte("two"))
			runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-slot", "2", "--key-file", im.pass}, pbkdf2Cheap, []string{im.path, p2})...)
			oldKey := unlockKey(t, im.path, []byte("zero"))
			h1 := readLUKS1File(t, im.path)
			before := readImage(t, im.path)
			p := LUKS1ToLUKS2Params{DigestIterations: 1000, Label: "converted",
				Keep: []Carry2{{Slot: 0, Pass: []byte("zero"), KDF: argon2Cheap}, {Slot: 2, Pass: []byte("two"), KDF: pbkdf2KDF}}}
			want := oldKey
			if headline {
				want = randKey(t, 64)
				p.Key, p.Cipher, p.SectorSize = want, "aes-xts-plain64", 4096
			}
			c := convertFile(t, im.path, oldKey, p)
			if fmt.Sprint(c.Slots) != "[0 2]" {
				t.Errorf("LUKS2 keyslots %v, want the LUKS1 numbers [0 2]", c.Slots)
			}
			f := dumpFields(runCS(t, "luksDump", im.path))
			if f["Version"] != "2" || f["UUID"] != h1.UUID || f["Label"] != "converted" {
				t.Errorf("luksDump: version %q UUID %q label %q", f["Version"], f["UUID"], f["Label"])
			}
			for i, pf := range []string{im.pass, p2} {
				s := strconv.Itoa(c.Slots[i])
				runCS(t, "open", "--test-passphrase", "--key-slot", s, "--key-file", pf, im.path)
				if got := csKey(t, im.path, pf); !bytes.Equal(got, want) {
					t.Errorf("passphrase %d: cryptsetup dumps another key", i)
				}
			}
			h2 := readLUKS2File(t, im.path)
			if h2.Primary != nil || h2.Secondary != nil {
				t.Errorf("copies: %v / %v", h2.Primary, h2.Secondary)
			}
			if k := h2.Meta.Keyslots[0]; k.KDF.Type != "argon2id" || k.KDF.Memory != 32 {
				t.Errorf("keyslot 0 KDF %+v", k.KDF)
			}
			if k := h2.Meta.Keyslots[2]; k.KDF.Type != "pbkdf2" || k.KDF.Iterations != 1000 {
				t.Errorf("keyslot 2 KDF %+v", k.KDF)
			}
			after := readImage(t, im.path)
			pay := int(h1.PayloadOffset) * sectorSize
			if !bytes.Equal(before[pay:], after[pay:]) {
				t.Error("the data area changed")
			}
			// The LUKS1 phdr over today's disk: its keyslots open nothing.
			mix := bytes.Clone(after)
			copy(mix, before[:2*sectorSize])
			if v, err := openBytes(t, mix); err == nil {
				for _, pass := range []string{"zero", "two"} {
					if u, err := v.Unlock([]byte(pass), AnySlot); err == nil {
						u.Wipe()
						t.Errorf("LUKS1 material of %q survived", pass)
					}
				}
			}
			// What cryptsetup convert makes of the same LUKS1 volume.
			orig := filepath.Join(t.TempDir(), "orig.img")
			writeImage(t, orig, before)
			runCS(t, "convert", "--batch-mode", "--type", "luks2", orig)
			theirs := readLUKS2File(t, orig)
			for _, sec := range []string{"config", "tokens"} {
				if a, b := jsonSection(t, h2.Meta.Raw, sec), jsonSection(t, theirs.Meta.Raw, sec); a != b {
					t.Errorf("%s: ours %s, cryptsetup convert's %s", sec, a, b)
				}
			}
			if !headline {
				if a, b := jsonSection(t, h2.Meta.Raw, "segments"), jsonSection(t, theirs.Meta.Raw, "segments"); a != b {
					t.Errorf("segments: ours %s, cryptsetup convert's %s", a, b)
				}
			}
		})
	}
}

// TestLUKS1ToLUKS2Refusals: four 512-bit passphrases leave no room for
// the LUKS2 keyslots in front of a 2 MiB payload beside the LUKS1 ones
// still in use, and the error names the shift and the data offset that
// make room; three fit; with the data offset the error names (the data
// moved) four fit. A passphrase that opens nothing is WrongKey. Nothing is
// written.
func TestLUKS1ToLUKS2Refusals(t *testing.T) {
	im := format(t, 6<<20, "pass 0", join([]string{"--type", "luks1"}, pbkdf2Cheap)...)
	keep := []Carry2{{Slot: 0, Pass: []byte("pass 0"), KDF: pbkdf2KDF}}
	for i := 1; i < 4; i++ {
		pf := writeFile(t, filepath.Join(filepath.Dir(im.path), fmt.Sprint("p", i)), []byte(fmt.Sprint("pass ", i)))
		runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-file", im.pass}, pbkdf2Cheap, []string{im.path, pf})...)
		keep = append(keep, Carry2{Slot: i, Pass: []byte(fmt.Sprint("pass ", i)), KDF: pbkdf2KDF})
	}
	oldKey := unlockKey(t, im.path, []byte("pass 0"))
	before := readImage(t, im.path)
	v, done := openFile(t, im.path)
	defer done()
	p := LUKS1ToLUKS2Params{DigestIterations: 1000, Keep: keep}
	_, err := PlanLUKS1ToLUKS2(v, oldKey, p)
	m := regexp.MustCompile(`move by ([0-9]+) bytes \(data offset ([0-9]+)\)$`).FindStringSubmatch(fmt.Sprint(err))
	if errclass.Code(err) != errclass.ExitDevice || m == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("four 512-bit keyslots in front of 2 MiB: %v", err)
	}
	shift, need := atoi64(t, m[1]), atoi64(t, m[2])
	if need != 2<<20+shift || need%(1<<20) != 0 {
		t.Errorf("shift %d to data offset %d from a payload at 2 MiB", shift, need)
	}
	p.Keep = keep[:3]
	if c, err := PlanLUKS1ToLUKS2(v, oldKey, p); err != nil {
		t.Errorf("three 512-bit keyslots in front of 2 MiB: %v", err)
	} else {
		c.Wipe()
	}
	p.Keep, p.DataOffset = keep, uint64(need)
	c, err := PlanLUKS1ToLUKS2(v, oldKey, p)
	if err != nil {
		t.Errorf("with the data at the offset the refusal named, %d: %v", need, err)
	} else {
		c.Wipe()
	}
	p.Keep = []Carry2{{Slot: AnySlot, Pass: []byte("nothing"), KDF: pbkdf2KDF}}
	if _, err := PlanLUKS1ToLUKS2(v, oldKey, p); !errorsIsWrongKey(err) {
		t.Errorf("a wrong passphrase: %v", err)
	}
	if !bytes.Equal(before, readImage(t, im.path)) {
		t.Error("a plan wrote")
	}
}

// TestLUKS1ToLUKS2Crash crashes the replacement (keyslot 0 moved out of
// the LUKS2 metadata's way, keyslot 6 not carried, a new 512-bit xts key) at
// every write and flush with torn mixes: each state is the LUKS1 volume
// (old key, every kept passphrase opening it) or the LUKS2 one (new key,
// likewise), LUKS2 once the switch is durable, and FinishLUKS2 then
// leaves both LUKS2 copies valid. Stock cryptsetup names the same version
// on a sample. The mutant that writes the primary copy in one piece is
// caught: a torn write leaves the LUKS1 magic over a LUKS2 sector 1,
// which no one opens.
func TestLUKS1ToLUKS2Crash(t *testing.T) {
	im := format(t, 3<<20, "zero", essiv256...)
	dir := filepath.Dir(im.path)
	for s, p := range map[string]string{"3": "three", "6": "six"} {
		pf := writeFile(t, filepath.Join(dir, "p"+s), []byte(p))
		runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-slot", s, "--key-file", im.pass}, pbkdf2Cheap, []string{im.path, pf})...)
	}
	fresh := readImage(t, im.path)
	oldKey := unlockKey(t, im.path, []byte("zero"))
	newKey := randKey(t, 64)
	passes := []string{"zero", "three"}
	opts, torn := fault.EnumOptions{MaxStates: 48, Torn: true, Seed: 11}, 8
	var states, stock int
	for _, mutant := range []bool{false, true} {
		t.Run(map[bool]string{false: "commit", true: "mutant: primary in one write"}[mutant], func(t *testing.T) {
			dom := fault.NewDomain()
			disk := dom.NewDisk(bytes.Clone(fresh))
			v, err := openBytes(t, fresh)
			if err != nil {
				t.Fatal(err)
			}
			c, err := PlanLUKS1ToLUKS2(v, oldKey, LUKS1ToLUKS2Params{Key: newKey, Cipher: "aes-xts-plain64", DigestIterations: 1000,
				Keep: []Carry2{{Slot: 0, Pass: []byte("zero"), KDF: pbkdf2KDF}, {Slot: 3, Pass: []byte("three"), KDF: argon2Cheap}}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Wipe()
			if len(c.moves) != 1 || c.moves[0].from != 0 || len(c.drop) != 0 {
				t.Fatalf("plan: moves %+v drops %v", c.moves, c.drop)
			}
			if mutant {
				copies, err := EncodeLUKS2(c.Draft, 1)
				if err != nil {
					t.Fatal(err)
				}
				if err := runMoves(disk, c.oldKey, c.drop, c.moves); err != nil {
					t.Fatal(err)
				}
				for _, m := range c.mats {
					disk.WriteAt(m.Bytes(), m.Offset)
				}
				disk.Flush()
				disk.WriteAt(copies[1], int64(c.Draft.HdrSize))
				disk.Flush()
				disk.WriteAt(copies[0], 0)
				disk.Flush()
			} else if err := c.Commit(disk); err != nil {
				t.Fatal(err)
			}
			switchK := -1
			for _, cp := range dom.CrashPoints() {
				if cp.Kind&^fault.PointBetweenWrites != 0 && switchK < 0 {
					img, _ := dom.Image(cp.K, fault.Choice{})
					if v, err := openBytes(t, img[0]); err == nil && v.V2 != nil {
						switchK = cp.K
					}
				}
			}
			if switchK < 0 {
				t.Fatal("no crash point after the switch")
			}
			var failure error
			sts := crashStates(t, dom, opts, torn)
			if mutant {
				slices.Reverse(sts) // its fault is at the end: find it first
			} else if testing.Short() {
				sts = sts[:min(len(sts), 40)]
			}
			for i, st := range sts {
				imgs, err := dom.Image(st.K, st.Choice)
				if err != nil {
					t.Fatal(err)
				}
				states++
				if err := checkConvertState(t, imgs[0], oldKey, newKey, passes, st.K >= switchK); err != nil {
					failure = fmt.Errorf("%s: %w", st.Desc, err)
					break
				}
				if !mutant && i%13 == 0 {
					stock++
					p := filepath.Join(t.TempDir(), "s.img")
					writeImage(t, p, imgs[0])
					v, _ := openBytes(t, imgs[0])
					if f := dumpFields(runCS(t, "luksDump", p)); f["Version"] != strconv.Itoa(v.Version) {
						t.Fatalf("%s: cryptsetup reads LUKS%s, the reader LUKS%d", st.Desc, f["Version"], v.Version)
					}
				}
			}
			switch {
			case mutant && failure == nil:
				t.Fatal("the mutant left no bad crash state")
			case mutant:
				t.Logf("mutant caught: %v", failure)
			case failure != nil:
				t.Fatal(failure)
			}
		})
	}
	t.Logf("%d crash states, %d judged by stock cryptsetup", states, stock)
}

func checkConvertState(t *testing.T, b []byte, oldKey, newKey []byte, passes []string, switched bool) error {
	t.Helper()
	v, err := openBytes(t, b)
	if err != nil {
		return fmt.Errorf("no LUKS header: %w", err)
	}
	want := oldKey
	if v.Version == 2 {
		want = newKey
	} else if switched {
		return fmt.Errorf("LUKS1 again after the switch was durable")
	}
	for _, p := range passes {
		u, err := v.Unlock([]byte(p), AnySlot)
		if err != nil {
			return fmt.Errorf("LUKS%d: passphrase %q opens nothing: %w", v.Version, p, err)
		}
		ok := bytes.Equal(u.Key.Bytes(), want)
		u.Wipe()
		if !ok {
			return fmt.Errorf("LUKS%d: passphrase %q unlocks another key", v.Version, p)
		}
	}
	if v.Version == 2 {
		disk := fault.NewDomain().NewDisk(bytes.Clone(b))
		if ok, err := FinishLUKS2(disk); err != nil || !ok {
			return fmt.Errorf("FinishLUKS2: %v %v", ok, err)
		}
		h, err := readLUKS2(disk, disk.Size())
		if err != nil || h.Primary != nil || h.Secondary != nil {
			return fmt.Errorf("after FinishLUKS2: %v", err)
		}
	}
	return nil
}

// TestLUKS1ToLUKS2OldLayout: cryptsetup's early-format test image
// (aes-cbc-plain, sha1, payload at 1010 sectors, not 4 KiB aligned,
// keyslot iterations far below today's minimum) becomes a LUKS2 volume
// stock cryptsetup opens with the same passphrase and volume key.
func TestLUKS1ToLUKS2OldLayout(t *testing.T) {
	dir := unxz(t, "compatv10image.img.xz")
	path := filepath.Join(dir, "compatv10image.img")
	oldKey := unlockKey(t, path, []byte("compatkey"))
	c := convertFile(t, path, oldKey, LUKS1ToLUKS2Params{DigestIterations: 1000, Keep: []Carry2{{Slot: AnySlot, Pass: []byte("compatkey"), KDF: pbkdf2KDF}}})
	pf := writeFile(t, filepath.Join(dir, "pass"), []byte("compatkey"))
	runCS(t, "open", "--test-passphrase", "--key-file", pf, path)
	if got := csKey(t, path, pf); !bytes.Equal(got, oldKey) {
		t.Error("cryptsetup dumps another key")
	}
	if f := dumpFields(runCS(t, "luksDump", path)); f["Version"] != "2" || !strings.HasPrefix(f["offset"], "517120 ") {
		t.Errorf("luksDump: version %q, data offset %q", f["Version"], f["offset"])
	}
	t.Logf("keyslot %d", c.Slots[0])
}
