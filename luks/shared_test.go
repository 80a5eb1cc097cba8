package luks

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// The shared images were made by cryptsetup (several versions) and by
// hand; they are read from ../shared/luks-testdata, never copied here.

func passFile(t *testing.T, pass string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(p, []byte(pass), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSharedAgreeWithCryptsetup(t *testing.T) {
	cases := []struct{ file, name, pass string }{
		{"compatimage.img.xz", "compatimage.img", "compatkey"},
		{"compatimage2.img.xz", "compatimage2.img", "compatkey"},
		{"compatv10image.img.xz", "compatv10image.img", "compatkey"},
		{"luks2_keyslot_unassigned.img.xz", "luks2_keyslot_unassigned.img", "compatkey"},
	}
	for _, n := range []string{"16", "32", "64", "128", "256", "512", "1024", "2048", "4096"} {
		cases = append(cases, struct{ file, name, pass string }{"luks2_mda_images.tar.xz", "test_image_" + n, "Qx3qn46vq0v"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			im := image{path: filepath.Join(unxz(t, c.file), c.name), pass: passFile(t, c.pass)}
			checkAgainstCryptsetup(t, im, []string{im.pass})
		})
	}
}

// TestSharedMDASizes: each metadata size is read from where it belongs.
func TestSharedMDASizes(t *testing.T) {
	dir := unxz(t, "luks2_mda_images.tar.xz")
	for _, kib := range []uint64{16, 32, 64, 128, 256, 512, 1024, 2048, 4096} {
		v, done := openFile(t, filepath.Join(dir, "test_image_"+itoa(kib)))
		if v.V2.HdrSize != kib<<10 || v.V2.Meta.Config.JSONSize != kib<<10-4096 || v.V2.Primary != nil || v.V2.Secondary != nil {
			t.Errorf("test_image_%d: hdr_size %d json_size %d, copies %v / %v", kib, v.V2.HdrSize, v.V2.Meta.Config.JSONSize, v.V2.Primary, v.V2.Secondary)
		}
		done()
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// TestSharedLUKS1Images: the aes images agree with cryptsetup and decrypt
// to the DEAD-BABE filesystem; the others are refused by name.
func TestSharedLUKS1Images(t *testing.T) {
	dir := filepath.Join(unxz(t, "luks1-images.tar.xz"), "luks1-images")
	key := filepath.Join(dir, "keyfile1")
	ok := []string{"aes-xts-plain64-sha1", "aes-xts-plain64-sha256", "aes-xts-plain64-whirlpool", "aes-cbc-essiv-sha256-sha1",
		// cryptsetup wrote these keyslots and data with its own twofish:
		// known answers for twofish-xts-plain64 from outside this project.
		"twofish-xts-plain64-sha1", "twofish-xts-plain64-sha256", "twofish-xts-plain64-whirlpool"}
	refused := map[string]string{
		"aes-lrw-plain64-sha1":          `cipher "aes-lrw-plain64" is not supported`,
		"aes-xts-essiv-wp256-whirlpool": `cipher "aes-xts-essiv:wp256" is not supported`,
		"serpent-xts-plain64-sha1":      `cipher "serpent-xts-plain64" is not supported`,
		"serpent-xts-plain64-sha256":    `cipher "serpent-xts-plain64" is not supported`,
		"serpent-xts-plain64-whirlpool": `cipher "serpent-xts-plain64" is not supported`,
	}
	for _, n := range ok {
		t.Run(n, func(t *testing.T) {
			im := image{path: filepath.Join(dir, "luks1_"+n+".img"), pass: key}
			// The host's cryptsetup runs a twofish keyslot through
			// dm-crypt, which this host lacks; Unlock's digest check and
			// the boot sector below stand for it.
			if !strings.HasPrefix(n, "twofish-") {
				checkAgainstCryptsetup(t, im, []string{key})
			}
			v, done := openFile(t, im.path)
			defer done()
			u, err := v.Unlock(readPass(t, key), AnySlot)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Wipe()
			m, err := v.Mapping(u)
			if err != nil {
				t.Fatal(err)
			}
			// The README: the mapped data holds a filesystem with UUID
			// DEAD-BABE, a FAT volume serial, stored little-endian in the
			// boot sector.
			img, err := os.ReadFile(im.path)
			if err != nil {
				t.Fatal(err)
			}
			c, err := sectorcipher.New(m.Mapping)
			if err != nil {
				t.Fatal(err)
			}
			boot := append([]byte(nil), img[m.Offset:m.Offset+512]...)
			c.Decrypt(boot, 0)
			if !bytes.Contains(boot, []byte{0xbe, 0xba, 0xad, 0xde}) || boot[510] != 0x55 || boot[511] != 0xaa {
				t.Errorf("decrypted first data sector is not the DEAD-BABE filesystem's boot sector:\n%s", hex.Dump(boot[:64]))
			}
		})
	}
	for n, want := range refused {
		t.Run(n, func(t *testing.T) {
			v, done := openFile(t, filepath.Join(dir, "luks1_"+n+".img"))
			defer done()
			_, err := v.Unlock(readPass(t, key), AnySlot)
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "supported:") {
				t.Fatalf("Unlock: %v; want a refusal containing %q and the supported list", err, want)
			}
			if _, err := v.Unlock(readPass(t, key), 0); errclass.Code(err) != errclass.ExitDevice {
				t.Errorf("Unlock(slot 0): %v, want a Device error", err)
			}
		})
	}
}

// TestSharedEvilHeaders: cryptsetup refuses each of the five, and so does
// Open, each with its own reason, naming the keyslot cryptsetup names.
func TestSharedEvilHeaders(t *testing.T) {
	cases := map[string]struct {
		class int
		want  string
	}{
		"evil_hdr-keyslot_overlap":     {errclass.ExitHeader, "LUKS keyslot 1 is invalid: its key material overlaps that of keyslot"},
		"evil_hdr-luks_hdr_damage":     {errclass.ExitHeader, "LUKS keyslot 2 is invalid: its key material at sector 1 overlaps the LUKS header"},
		"evil_hdr-payload_overwrite":   {errclass.ExitHeader, "LUKS keyslot 3 is invalid: its key material (sectors"},
		"evil_hdr-stripes_payload_dmg": {errclass.ExitHeader, "LUKS keyslot 5 is invalid: 44944 AF stripes"},
		"evil_hdr-small_luks_device":   {errclass.ExitDevice, "device is too small: its LUKS1 header and keyslots need at least 1049600 bytes"},
	}
	seen := map[string]bool{}
	slot := regexp.MustCompile(`LUKS keyslot \d+ is invalid`)
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(unxz(t, name+".xz"), name)
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, _ := f.Stat()
			_, err = Open(f, st.Size())
			if err == nil || errclass.Code(err) != c.class || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open: %v; want class %d and %q", err, c.class, c.want)
			}
			if seen[err.Error()] {
				t.Errorf("two evil headers share the message %q", err)
			}
			seen[err.Error()] = true
			// cryptsetup names the same keyslot.
			out, csErr := runCSFail(t, "luksDump", p)
			if csErr == nil {
				t.Fatalf("cryptsetup luksDump accepted %s", name)
			}
			if m := slot.FindString(out); m != "" && !strings.Contains(err.Error(), m) {
				t.Errorf("cryptsetup says %q, we say %q", m, err)
			}
		})
	}
}

func runCSFail(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := execCS(t, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestSharedRequirements: unknown mandatory requirements do not stop
// reading or unlocking, and are reported so that a writer refuses.
func TestSharedRequirements(t *testing.T) {
	dir := unxz(t, "luks2_header_requirements.tar.xz")
	pass := passFile(t, "blablabl")
	for name, want := range map[string][]string{"luks2_header_requirements": {"req0", "req1"}, "luks2_header_requirements_free": nil} {
		t.Run(name, func(t *testing.T) {
			im := image{path: filepath.Join(dir, name), pass: pass}
			v, done := openFile(t, im.path)
			defer done()
			if got := v.UnknownRequirements(); !reflect.DeepEqual(got, want) {
				t.Errorf("UnknownRequirements %v, want %v", got, want)
			}
			u, err := v.Unlock(readPass(t, pass), AnySlot)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Wipe()
			if !bytes.Equal(u.Key.Bytes(), csKey(t, im.path, pass)) {
				t.Error("volume key differs from cryptsetup's")
			}
		})
	}
}

// TestSharedUnboundKeyslot: keyslot 1 of luks2_keyslot_unassigned holds
// a key of its own digest under its own passphrase, bound to no segment:
// AnySlot never picks it, naming it unlocks the key cryptsetup dumps, and
// that key maps nothing.
func TestSharedUnboundKeyslot(t *testing.T) {
	p := filepath.Join(unxz(t, "luks2_keyslot_unassigned.img.xz"), "luks2_keyslot_unassigned.img")
	pass := passFile(t, "compatkey")
	v, done := openFile(t, p)
	defer done()
	u, err := v.Unlock(readPass(t, pass), AnySlot)
	if err != nil || u.Slot != 0 {
		t.Fatalf("AnySlot: %v, %v; want keyslot 0", u, err)
	}
	u.Wipe()
	if _, err := v.Unlock(readPass(t, pass), 1); !errors.Is(err, errclass.WrongKey) {
		t.Errorf("keyslot 0's passphrase on keyslot 1: %v, want WrongKey", err)
	}
	pass1 := passFile(t, "93R4P4pIqAH8") // compat-test2's PWD1
	if _, err := v.Unlock(readPass(t, pass1), AnySlot); !errors.Is(err, errclass.WrongKey) {
		t.Errorf("AnySlot with the unbound keyslot's passphrase: %v, want WrongKey (it maps nothing)", err)
	}
	u1, err := v.Unlock(readPass(t, pass1), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer u1.Wipe()
	if !bytes.Equal(u1.Key.Bytes(), csUnboundKey(t, p, pass1, "1")) {
		t.Error("unbound key differs from cryptsetup's")
	}
	if _, err := v.Mapping(u1); errclass.Code(err) != errclass.ExitUsage {
		t.Errorf("Mapping of an unbound key: %v, want a Usage refusal", err)
	}
}

// TestSharedValidHeaders: headers whose passphrase the README does not
// give are read, agree with luksDump, and check their known volume key.
func TestSharedValidHeaders(t *testing.T) {
	p := filepath.Join(unxz(t, "valid_header_file.xz"), "valid_header_file")
	v, done := openFile(t, p)
	defer done()
	f := dumpFields(runCS(t, "luksDump", p))
	if v.V1.Cipher() != f["Cipher name"]+"-"+f["Cipher mode"] || int64(v.V1.PayloadOffset) != atoi64(t, f["Payload offset"]) || v.UUID != f["UUID"] {
		t.Errorf("valid_header_file: %s payload %d uuid %s; luksDump %v", v.V1.Cipher(), v.V1.PayloadOffset, v.UUID, f)
	}
	vk, _ := hex.DecodeString("bb21158c733229347bd4e681891e213d94c685be6a5b84818afe7a78a6de7a1a")
	if err := v.CheckVolumeKey(vk); err != nil {
		t.Errorf("known volume key: %v", err)
	}
	vk[0] ^= 1
	if err := v.CheckVolumeKey(vk); !errors.Is(err, errclass.WrongKey) {
		t.Errorf("altered volume key: %v, want WrongKey", err)
	}
	p2 := filepath.Join(unxz(t, "luks2_valid_hdr.img.xz"), "luks2_valid_hdr.img")
	v2, done2 := openFile(t, p2)
	defer done2()
	if uuid := strings.TrimSpace(runCS(t, "luksUUID", p2)); v2.UUID != uuid || v2.Version != 2 {
		t.Errorf("luks2_valid_hdr: LUKS%d %s, cryptsetup %s", v2.Version, v2.UUID, uuid)
	}
	if !jsonEqual(t, v2.V2.Meta.Raw, []byte(runCS(t, "luksDump", "--dump-json-metadata", p2))) {
		t.Error("luks2_valid_hdr: metadata differs from cryptsetup's JSON dump")
	}
}

// TestSharedCapiCipher: a segment cipher in kernel crypto-API syntax that
// sectorcipher lacks unlocks (its keyslot uses plain aes-xts-plain64) but
// is refused as a mapping, by name.
func TestSharedCapiCipher(t *testing.T) {
	p := filepath.Join(unxz(t, "luks2_invalid_cipher.img.xz"), "luks2_invalid_cipher.img")
	pass := passFile(t, "93R4P4pIqAH8")
	v, done := openFile(t, p)
	defer done()
	u, err := v.Unlock(readPass(t, pass), AnySlot)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Wipe()
	if !bytes.Equal(u.Key.Bytes(), csKey(t, p, pass)) {
		t.Error("volume key differs from cryptsetup's")
	}
	_, err = v.Mapping(u)
	if errclass.Code(err) != errclass.ExitDevice || !strings.Contains(err.Error(), "capi:xts(ecb(aes-generic))-plain64") {
		t.Errorf("Mapping: %v; want a Device refusal naming the cipher", err)
	}
}
