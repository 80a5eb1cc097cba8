package luks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
)

// Small KDF costs: two cores are shared by the whole team.
var (
	pbkdf2Cheap   = []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
	argon2idCheap = []string{"--pbkdf", "argon2id", "--pbkdf-memory", "32", "--pbkdf-force-iterations", "4"}
	argon2iCheap  = []string{"--pbkdf", "argon2i", "--pbkdf-memory", "64", "--pbkdf-force-iterations", "4"}
	// A small LUKS2 layout: 16 KiB metadata, room for eight 512-bit
	// keyslots, data at 4 MiB.
	luks2Small = []string{"--type", "luks2", "--luks2-metadata-size", "16k", "--luks2-keyslots-size", "3m", "--offset", "8192"}
)

func join(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// checkAgainstCryptsetup unlocks im with every passphrase and compares
// the volume key and the data mapping with what stock cryptsetup reports.
func checkAgainstCryptsetup(t *testing.T, im image, passFiles []string) {
	t.Helper()
	v, done := openFile(t, im.path)
	defer done()
	if uuid := runCS(t, "luksUUID", im.path); v.UUID+"\n" != uuid {
		t.Errorf("UUID %q, cryptsetup says %q", v.UUID, uuid)
	}
	for _, pf := range passFiles {
		want := csKey(t, im.path, pf)
		u, err := v.Unlock(readPass(t, pf), AnySlot)
		if err != nil {
			t.Fatalf("Unlock with %s: %v", filepath.Base(pf), err)
		}
		if !bytes.Equal(u.Key.Bytes(), want) {
			t.Fatalf("volume key via keyslot %d differs from cryptsetup's", u.Slot)
		}
		// The same keyslot named explicitly opens too.
		u2, err := v.Unlock(readPass(t, pf), u.Slot)
		if err != nil || !bytes.Equal(u2.Key.Bytes(), want) {
			t.Fatalf("Unlock(slot %d): %v", u.Slot, err)
		}
		u2.Wipe()
		m, err := v.Mapping(u)
		if err != nil {
			t.Fatalf("Mapping: %v", err)
		}
		checkMapping(t, im, v, m, want)
		u.Wipe()
		if u.Key.Bytes() != nil {
			t.Fatal("Wipe left the key readable")
		}
	}
	_, err := v.Unlock([]byte("not the passphrase"), AnySlot)
	if !errors.Is(err, errclass.WrongKey) || errclass.Code(err) != errclass.ExitWrongKey {
		t.Fatalf("wrong passphrase: %v, want a WrongKey error", err)
	}
}

// checkMapping compares a mapping with cryptsetup's view of the data
// segment: luksDump (LUKS1) or its JSON metadata (LUKS2).
func checkMapping(t *testing.T, im image, v *Volume, m *DataMapping, key []byte) {
	t.Helper()
	st, err := os.Stat(im.path)
	if err != nil {
		t.Fatal(err)
	}
	var cipher string
	var off, sector int64
	var ivTweak uint64
	if v.Version == 1 {
		f := dumpFields(runCS(t, "luksDump", im.path))
		cipher = f["Cipher name"] + "-" + f["Cipher mode"]
		off = atoi64(t, f["Payload offset"]) * 512
		sector = 512
		if bits := atoi64(t, f["MK bits"]); bits != int64(len(key)*8) {
			t.Errorf("MK bits %d, key of %d bytes", bits, len(key))
		}
	} else {
		var meta struct {
			Segments map[string]struct {
				Offset     string `json:"offset"`
				Tweak      string `json:"iv_tweak"`
				Encryption string `json:"encryption"`
				SectorSize int64  `json:"sector_size"`
			}
		}
		if err := json.Unmarshal([]byte(runCS(t, "luksDump", "--dump-json-metadata", im.path)), &meta); err != nil {
			t.Fatal(err)
		}
		s := meta.Segments["0"]
		cipher, sector = s.Encryption, s.SectorSize
		off = atoi64(t, s.Offset)
		ivTweak, _ = strconv.ParseUint(s.Tweak, 10, 64)
	}
	if m.Mapping.Spec.String() != cipher || m.Offset != off || int64(m.Mapping.SectorSize) != sector ||
		m.Mapping.IVOffset != ivTweak || !bytes.Equal(m.Mapping.Key, key) {
		t.Errorf("mapping %s offset %d sector %d iv_offset %d; cryptsetup: %s offset %d sector %d iv_tweak %d",
			m.Mapping.Spec, m.Offset, m.Mapping.SectorSize, m.Mapping.IVOffset, cipher, off, sector, ivTweak)
	}
	if want := (st.Size() - off) / sector * sector; m.Size != want {
		t.Errorf("data size %d, want %d", m.Size, want)
	}
}

func TestGoldenFormats(t *testing.T) {
	cases := []struct {
		name string
		size int64
		opts []string
	}{
		{"luks1-xts512-sha256", 4 << 20, join([]string{"--type", "luks1"}, pbkdf2Cheap)},
		{"luks1-essiv128-sha1", 4 << 20, join([]string{"--type", "luks1", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "128", "--hash", "sha1"}, pbkdf2Cheap)},
		{"luks1-xts256-sha512", 4 << 20, join([]string{"--type", "luks1", "--key-size", "256", "--hash", "sha512"}, pbkdf2Cheap)},
		{"luks1-xts256-whirlpool", 4 << 20, join([]string{"--type", "luks1", "--key-size", "256", "--hash", "whirlpool"}, pbkdf2Cheap)},
		{"luks2-pbkdf2-whirlpool-xts512", 5 << 20, join(luks2Small, pbkdf2Cheap, []string{"--hash", "whirlpool"})},
		{"luks1-cbc-plain64-256-ripemd160", 4 << 20, join([]string{"--type", "luks1", "--cipher", "aes-cbc-plain64", "--key-size", "256", "--hash", "ripemd160"}, pbkdf2Cheap)},
		{"luks2-pbkdf2-xts512-4k", 5 << 20, join(luks2Small, pbkdf2Cheap, []string{"--sector-size", "4096"})},
		{"luks2-pbkdf2-sha1-essiv256-512", 5 << 20, join(luks2Small, pbkdf2Cheap, []string{"--hash", "sha1", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--sector-size", "512"})},
		{"luks2-argon2id-xts256-512", 5 << 20, join(luks2Small, argon2idCheap, []string{"--key-size", "256", "--sector-size", "512"})},
		{"luks2-argon2i-xts512-4k", 5 << 20, join(luks2Small, argon2iCheap, []string{"--sector-size", "4096"})},
		{"luks2-argon2id-cbc-plain-128", 5 << 20, join(luks2Small, argon2idCheap, []string{"--cipher", "aes-cbc-plain", "--key-size", "128"})},
		{"luks2-default-layout", 20 << 20, join([]string{"--type", "luks2"}, argon2idCheap)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			im := format(t, c.size, "pass "+c.name, c.opts...)
			checkAgainstCryptsetup(t, im, []string{im.pass})
		})
	}
}

// TestGoldenEightKeyslots fills every LUKS1 keyslot, and eight LUKS2 ones
// of mixed KDFs, each with its own passphrase.
func TestGoldenEightKeyslots(t *testing.T) {
	for _, typ := range []struct {
		name string
		opts []string
		add  func(i int) []string
	}{
		{"luks1", join([]string{"--type", "luks1", "--key-size", "256"}, pbkdf2Cheap), func(int) []string { return pbkdf2Cheap }},
		{"luks2", join(luks2Small, pbkdf2Cheap), func(i int) []string {
			if i%2 == 1 {
				return argon2idCheap
			}
			return pbkdf2Cheap
		}},
	} {
		t.Run(typ.name, func(t *testing.T) {
			im := format(t, 5<<20, "slot 0", typ.opts...)
			passes := []string{im.pass}
			for i := 1; i < 8; i++ {
				pf := filepath.Join(filepath.Dir(im.path), fmt.Sprintf("pass%d", i))
				if err := os.WriteFile(pf, []byte(fmt.Sprintf("slot %d", i)), 0o600); err != nil {
					t.Fatal(err)
				}
				runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-file", im.pass}, typ.add(i), []string{im.path, pf})...)
				passes = append(passes, pf)
			}
			checkAgainstCryptsetup(t, im, passes)
			v, done := openFile(t, im.path)
			defer done()
			for i, pf := range passes {
				u, err := v.Unlock(readPass(t, pf), AnySlot)
				if err != nil || u.Slot != i {
					t.Errorf("passphrase %d opened slot %v (%v), want %d", i, u, err, i)
				} else {
					u.Wipe()
				}
				if i > 0 {
					if _, err := v.Unlock(readPass(t, pf), 0); !errors.Is(err, errclass.WrongKey) {
						t.Errorf("passphrase %d on keyslot 0: %v, want WrongKey", i, err)
					}
				}
			}
		})
	}
}

// TestGoldenToken: a token imported with cryptsetup is read back intact,
// unknown members included, and does not disturb unlocking.
func TestGoldenToken(t *testing.T) {
	im := format(t, 5<<20, "token test", join(luks2Small, pbkdf2Cheap)...)
	tok := `{"type":"cryptshift-test","keyslots":["0"],"opaque":{"n":1,"s":"x"},"list":[1,2,3]}`
	tf := filepath.Join(filepath.Dir(im.path), "token.json")
	if err := os.WriteFile(tf, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	runCS(t, "token", "import", "--json-file", tf, "--token-id", "3", im.path)
	v, done := openFile(t, im.path)
	defer done()
	got, ok := v.V2.Meta.Tokens[3]
	if !ok || got.Type != "cryptshift-test" || !reflect.DeepEqual(got.Keyslots, []int{0}) {
		t.Fatalf("token 3: %+v", got)
	}
	if !jsonEqual(t, got.Raw, []byte(tok)) {
		t.Errorf("token raw JSON %s, imported %s", got.Raw, tok)
	}
	// The whole metadata, as kept, equals cryptsetup's own dump of it.
	if !jsonEqual(t, v.V2.Meta.Raw, []byte(runCS(t, "luksDump", "--dump-json-metadata", im.path))) {
		t.Error("raw metadata differs from cryptsetup's JSON dump")
	}
	checkAgainstCryptsetup(t, im, []string{im.pass})
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}
