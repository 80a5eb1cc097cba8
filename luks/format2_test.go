package luks

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/tests/fault"
)

// freshImage writes a FormatLUKS2 header onto a new image file of size
// bytes with this package's writer.
func freshImage(t *testing.T, size int64, p FormatParams) (string, *Fresh2) {
	t.Helper()
	f, err := FormatLUKS2(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Wipe)
	path := filepath.Join(t.TempDir(), "fresh.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	if err := WriteFreshLUKS2(openDev(t, path), f); err != nil {
		t.Fatal(err)
	}
	return path, f
}

// The values that differ between two formats with the same parameters:
// salts, digests, and the digest's iterations (cryptsetup benchmarks
// them; there is no option to force them).
var (
	maskSalt   = regexp.MustCompile(`"(salt|digest)":"[^"]*"`)
	maskDigIts = regexp.MustCompile(`("segments":\[[^\]]*\],"hash":"[^"]*","iterations":)[0-9]+`)
)

func maskJSON(js []byte) string {
	return maskDigIts.ReplaceAllString(maskSalt.ReplaceAllString(string(js), `"$1":"-"`), "${1}0")
}

// TestFormatLUKS2Golden: a header FormatLUKS2 makes is one stock
// cryptsetup accepts (luksDump), opens with the passphrase and dumps our
// volume key from; and cryptsetup luksFormat with the same parameters
// makes the same header: the JSON text identical byte for byte but for
// salts, digests and the digest's benchmarked iterations, the same label,
// subsystem, UUID and sizes, as read by this package's reader. Default
// layout (16 KiB metadata, 16 MiB data offset) and smaller ones; every
// KDF; 256- and 512-bit keys; 512- and 4096-byte sectors.
func TestFormatLUKS2Golden(t *testing.T) {
	uuid := "4f6c2b1e-1b0a-4c1e-9a37-2d5e8f1a0c93"
	cases := []struct {
		name string
		size int64
		p    FormatParams
		cs   []string
	}{
		{"defaults-argon2id-4k", 20 << 20,
			FormatParams{UUID: uuid, Label: "data", Key: randKey(t, 64), SectorSize: 4096, KDF: KDF{Type: "argon2id", Time: 4, Memory: 32, CPUs: 1}, DigestIterations: 1000},
			[]string{"--label", "data", "--key-size", "512", "--sector-size", "4096", "--pbkdf", "argon2id", "--pbkdf-memory", "32", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"}},
		{"pbkdf2-small-layout", 5 << 20,
			FormatParams{UUID: uuid, Subsystem: "sub", Key: randKey(t, 64), MetadataSize: 64 << 10, KeyslotsSize: 1 << 20, DataOffset: 4 << 20, KDF: KDF{Type: "pbkdf2", Hash: "sha512", Iterations: 1000}, DigestHash: "sha512", AFHash: "sha512", DigestIterations: 1000},
			[]string{"--subsystem", "sub", "--key-size", "512", "--sector-size", "512", "--luks2-metadata-size", "64k", "--luks2-keyslots-size", "1m", "--offset", "8192", "--pbkdf", "pbkdf2", "--hash", "sha512", "--pbkdf-force-iterations", "1000"}},
		{"argon2i-256-keyslot3", 5 << 20,
			FormatParams{UUID: uuid, Key: randKey(t, 32), Keyslot: 3, DataOffset: 2 << 20, KDF: KDF{Type: "argon2i", Time: 4, Memory: 64, CPUs: 2}, DigestIterations: 1000},
			[]string{"--key-size", "256", "--sector-size", "512", "--offset", "4096", "--key-slot", "3", "--pbkdf", "argon2i", "--pbkdf-memory", "64", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.p.Pass = []byte("fresh " + c.name)
			path, f := freshImage(t, c.size, c.p)
			pass := writeFile(t, filepath.Join(filepath.Dir(path), "pass"), c.p.Pass)
			fields := dumpFields(runCS(t, "luksDump", path))
			if fields["UUID"] != uuid || fields["Version"] != "2" {
				t.Errorf("luksDump: UUID %q version %q", fields["UUID"], fields["Version"])
			}
			runCS(t, "open", "--test-passphrase", "--key-file", pass, path)
			if got := csKey(t, path, pass); !bytes.Equal(got, c.p.Key) {
				t.Error("cryptsetup dumps another volume key")
			}
			if f.Material.Slot != c.p.Keyslot {
				t.Errorf("keyslot %d, asked for %d", f.Material.Slot, c.p.Keyslot)
			}

			// The same parameters through cryptsetup luksFormat.
			vk := writeFile(t, filepath.Join(filepath.Dir(path), "vk"), c.p.Key)
			im := format(t, c.size, string(c.p.Pass), append([]string{"--type", "luks2", "--uuid", uuid, "--volume-key-file", vk}, c.cs...)...)
			ours, theirs := readLUKS2File(t, path), readLUKS2File(t, im.path)
			if a, b := maskJSON(ours.Meta.Raw), maskJSON(theirs.Meta.Raw); a != b {
				t.Errorf("JSON differs from cryptsetup's:\nours   %s\ntheirs %s", a, b)
			}
			if ours.Label != theirs.Label || ours.Subsystem != theirs.Subsystem || ours.UUID != theirs.UUID || ours.HdrSize != theirs.HdrSize || ours.ChecksumAlg != theirs.ChecksumAlg {
				t.Errorf("binary header: ours %q %q %q %d %q, cryptsetup's %q %q %q %d %q", ours.Label, ours.Subsystem, ours.UUID, ours.HdrSize, ours.ChecksumAlg, theirs.Label, theirs.Subsystem, theirs.UUID, theirs.HdrSize, theirs.ChecksumAlg)
			}
			if ours.Primary != nil || ours.Secondary != nil {
				t.Errorf("copies: %v / %v", ours.Primary, ours.Secondary)
			}
			if got := unlockKey(t, im.path, c.p.Pass); !bytes.Equal(got, c.p.Key) {
				t.Error("our reader unlocks another key from cryptsetup's format")
			}
		})
	}
}

// TestFormatLUKS2Refusals: parameters cryptsetup would refuse, and a
// device that already holds a LUKS header, are refused before any write.
func TestFormatLUKS2Refusals(t *testing.T) {
	good := FormatParams{Key: randKey(t, 64), Pass: []byte("x"), KDF: KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}, DigestIterations: 1000}
	for name, mod := range map[string]func(p *FormatParams){
		"metadata size": func(p *FormatParams) { p.MetadataSize = 20000 },
		"sector size":   func(p *FormatParams) { p.SectorSize = 1000 },
		"key size":      func(p *FormatParams) { p.Key = p.Key[:20] },
		"uuid":          func(p *FormatParams) { p.UUID = "not-a-uuid" },
		"kdf cost":      func(p *FormatParams) { p.KDF = KDF{Type: "argon2id", Time: 1, Memory: 32, CPUs: 1} },
		"digest":        func(p *FormatParams) { p.DigestIterations = 10 },
		"keyslots area": func(p *FormatParams) { p.DataOffset, p.KeyslotsSize = 1<<20, 1<<20 },
		"label":         func(p *FormatParams) { p.Label = strings.Repeat("x", 48) },
	} {
		p := good
		mod(&p)
		if _, err := FormatLUKS2(p); errclass.Code(err) != errclass.ExitUsage {
			t.Errorf("%s: %v, want a usage error", name, err)
		}
	}
	f, err := FormatLUKS2(good)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Wipe()
	im := format(t, 20<<20, "there", join([]string{"--type", "luks1"}, pbkdf2Cheap)...)
	before := readImage(t, im.path)
	if err := WriteFreshLUKS2(openDev(t, im.path), f); errclass.Code(err) != errclass.ExitRefused {
		t.Errorf("over a LUKS1 volume: %v", err)
	}
	if !bytes.Equal(before, readImage(t, im.path)) {
		t.Error("the refused format wrote")
	}
	if m, _ := f.Draft.Metadata(); m.Config.KeyslotsSize != DefaultDataOffset-2*DefaultMetadataSize || m.Keyslots[0].Area.Offset != 2*DefaultMetadataSize {
		t.Errorf("default layout: keyslots_size %d, keyslot at %d", m.Config.KeyslotsSize, m.Keyslots[0].Area.Offset)
	}
}

// TestFormatLUKS2Crash crashes the fresh format at every write and flush,
// torn and shorn sectors included: a state has no LUKS header at all, or a
// valid one (the new header, seqid 1) whose passphrase opens the volume
// key; never a header that names missing material. A sample goes to stock
// cryptsetup, which must agree (no header, or this one).
func TestFormatLUKS2Crash(t *testing.T) {
	key := randKey(t, 64)
	f, err := FormatLUKS2(FormatParams{Key: key, Pass: []byte("fresh"), MetadataSize: 16 << 10, KeyslotsSize: 1 << 20, DataOffset: 2 << 20, KDF: KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}, DigestIterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Wipe()
	dom := fault.NewDomain()
	disk := dom.NewDisk(make([]byte, 3<<20))
	if err := WriteFreshLUKS2(disk, f); err != nil {
		t.Fatal(err)
	}
	states, none, stock := 0, 0, 0
	for _, st := range crashStates(t, dom, fault.EnumOptions{MaxStates: 64, Torn: true, Shorn: true, Seed: 7}, 8) {
		imgs, err := dom.Image(st.K, st.Choice)
		if err != nil {
			t.Fatal(err)
		}
		states++
		b := imgs[0]
		v, err := openBytes(t, b)
		if err != nil {
			if errclass.Code(err) == errclass.ExitDevice && strings.Contains(err.Error(), "no LUKS header") {
				none++
				if none%8 == 1 {
					stock++
					p := filepath.Join(t.TempDir(), "s.img")
					writeImage(t, p, b)
					if out, err := runCSFail(t, "luksDump", p); err == nil {
						t.Fatalf("%s: cryptsetup finds a header the reader does not:\n%s", st.Desc, out)
					}
					if out, _ := exec.Command("blkid", "-p", "-o", "value", "-s", "TYPE", p).Output(); len(out) != 0 {
						t.Fatalf("%s: blkid sees %q", st.Desc, out)
					}
				}
				continue
			}
			t.Fatalf("%s: %v", st.Desc, err)
		}
		u, err := v.Unlock([]byte("fresh"), AnySlot)
		if err != nil {
			t.Fatalf("%s: the header's keyslot does not open: %v", st.Desc, err)
		}
		if !bytes.Equal(u.Key.Bytes(), key) {
			t.Fatalf("%s: another key", st.Desc)
		}
		u.Wipe()
		{
			stock++
			p := filepath.Join(t.TempDir(), "s.img")
			writeImage(t, p, b)
			if f := dumpFields(runCS(t, "luksDump", p)); f["Epoch"] != strconv.Itoa(1) || f["UUID"] != v.UUID {
				t.Fatalf("%s: cryptsetup's epoch %q UUID %q", st.Desc, f["Epoch"], f["UUID"])
			}
		}
	}
	if none == 0 || none == states {
		t.Fatalf("%d of %d states without a header: the enumeration missed one side", none, states)
	}
	t.Logf("%d crash states, %d without a header, %d judged by stock cryptsetup", states, none, stock)
}

// TestFormatLUKS2CrashMutant: writing each copy whole (as a commit over an
// existing header does) leaves torn states with a LUKS magic over an
// invalid header, which blkid would report; the crash check above sees
// them.
func TestFormatLUKS2CrashMutant(t *testing.T) {
	f, err := FormatLUKS2(FormatParams{Key: randKey(t, 64), Pass: []byte("fresh"), MetadataSize: 16 << 10, KeyslotsSize: 1 << 20, DataOffset: 2 << 20, KDF: KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000}, DigestIterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Wipe()
	dom := fault.NewDomain()
	disk := dom.NewDisk(make([]byte, 3<<20))
	copies, err := EncodeLUKS2(f.Draft, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyslotMaterial(disk, f.Material); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 0} {
		disk.WriteAt(copies[i], int64(i)*int64(f.Draft.HdrSize))
		disk.Flush()
	}
	for _, st := range crashStates(t, dom, fault.EnumOptions{MaxStates: 64, Torn: true, Seed: 7}, 8) {
		imgs, err := dom.Image(st.K, st.Choice)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := openBytes(t, imgs[0]); err != nil && errclass.Code(err) == errclass.ExitHeader {
			t.Logf("caught: %s: %v", st.Desc, err)
			return
		}
	}
	t.Fatal("no torn state shows a magic over an invalid header")
}
