package vm

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// luksImage is the default guest plus libgcc_s, which glibc loads at run
// time (ldd does not list it) when a thread exits: cryptsetup's Argon2
// runs in threads; and the CLI with its test hooks, for the LUKS2
// conversion that shares the boot (luksConvertScript).
var luksImage = Image{Files: map[string]string{"/lib/x86_64-linux-gnu/libgcc_s.so.1": "/lib/x86_64-linux-gnu/libgcc_s.so.1"},
	GoPackages: []string{"./cmd/cryptshift"}, GoTags: []string{"testhooks"}}

// TestLUKSMappingMatchesCryptsetup formats LUKS1 and LUKS2 images with
// stock cryptsetup on the host, derives their data mapping with package
// luks, then opens them with cryptsetup in a real kernel: the live table
// (key shown: LUKS2 with --disable-keyring) must be that mapping, and data
// written through the kernel's mapping must decrypt with it on the host.
func TestLUKSMappingMatchesCryptsetup(t *testing.T) {
	Require(t)
	cs, err := exec.LookPath("cryptsetup")
	if err != nil {
		t.Fatalf("cryptsetup is needed on the host: %v", err)
	}
	cases := [][]string{
		{"--type", "luks1", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"},
		{"--type", "luks2", "--luks2-metadata-size", "16k", "--luks2-keyslots-size", "1m", "--offset", "4096",
			"--sector-size", "4096", "--pbkdf", "argon2id", "--pbkdf-memory", "32", "--pbkdf-force-iterations", "4"},
	}
	rng := rand.New(rand.NewPCG(10, 10))
	plain := make([]byte, 256<<10)
	for i := range plain {
		plain[i] = byte(rng.Uint32())
	}
	dir := t.TempDir()
	var disks []string
	var maps []*luks.DataMapping
	files := map[string][]byte{"/etc/vm/plain": plain}
	var script strings.Builder
	script.WriteString("set -e\n")
	for i, opts := range cases {
		img := filepath.Join(dir, fmt.Sprintf("luks%d.img", i))
		pass := []byte(fmt.Sprintf("vm passphrase %d", i))
		pf := img + ".pass"
		if err := os.WriteFile(pf, pass, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(img, make([]byte, 4<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(cs, append(append([]string{"luksFormat", "--batch-mode"}, opts...), img, pf)...).CombinedOutput(); err != nil {
			t.Fatalf("luksFormat: %v\n%s", err, out)
		}
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		v, err := luks.Open(f, 4<<20)
		if err != nil {
			t.Fatal(err)
		}
		u, err := v.Unlock(pass, luks.AnySlot)
		if err != nil {
			t.Fatal(err)
		}
		m, err := v.Mapping(u)
		if err != nil {
			t.Fatal(err)
		}
		// The mapping aliases the key memory, which lives until the test
		// ends; a copy keeps it simple.
		m.Mapping.Key = append([]byte(nil), m.Mapping.Key...)
		u.Wipe()
		f.Close()
		disks, maps = append(disks, img), append(maps, m)
		files[fmt.Sprintf("/etc/vm/pass%d", i)] = pass
		dev := fmt.Sprintf("/dev/vd%c", 'a'+i)
		fmt.Fprintf(&script, "cryptsetup open --disable-keyring --key-file /etc/vm/pass%d %s l%d\n", i, dev, i)
		fmt.Fprintf(&script, "echo \"TABLE%d $(dmsetup table --showkeys l%d)\"\n", i, i)
		fmt.Fprintf(&script, "dd if=/etc/vm/plain of=/dev/mapper/l%d bs=64k conv=fsync 2>/dev/null\n", i)
		fmt.Fprintf(&script, "cryptsetup close l%d\n", i)
	}
	conv := luksConvertSetup(t, dir, files, len(disks))
	disks = append(disks, conv.img)
	script.WriteString(conv.script)
	conv1 := luks1ConvertSetup(t, dir, files, len(disks))
	disks = append(disks, conv1.img)
	script.WriteString(conv1.script)
	// The conversion (argon2id unlocks, mkfs, 12 MiB converted under TCG)
	// needs more than the default boot time on a loaded machine.
	res := Run(t, Config{Image: luksImage, Disks: disks, Files: files, Script: script.String(), Timeout: 20 * time.Minute})
	conv.check(t, res)
	conv1.check(t, res)
	for i, m := range maps {
		line := regexp.MustCompile(fmt.Sprintf(`TABLE%d (\S.*)`, i)).FindStringSubmatch(res.Console)
		if line == nil {
			t.Fatalf("no table for case %d\n%s", i, res.Tail(consoleTail))
		}
		// start length crypt cipher key iv_offset device offset [n features...]
		f := strings.Fields(line[1])
		if len(f) < 8 || f[2] != "crypt" {
			t.Fatalf("case %d: table %q", i, line[1])
		}
		sector := 512
		for j, feat := range f[8:] {
			if s, ok := strings.CutPrefix(feat, "sector_size:"); ok && j > 0 {
				sector, _ = strconv.Atoi(s)
			}
		}
		key, _ := hex.DecodeString(f[4])
		ivOff, _ := strconv.ParseUint(f[5], 10, 64)
		off, _ := strconv.ParseInt(f[7], 10, 64)
		length, _ := strconv.ParseInt(f[1], 10, 64)
		if f[3] != m.Mapping.Spec.KernelCipher() || !bytes.Equal(key, m.Mapping.Key) || ivOff != m.Mapping.IVOffset ||
			off*512 != m.Offset || length*512 != m.Size || sector != m.Mapping.SectorSize {
			t.Errorf("case %d: live table %q; luks mapping %s iv_offset %d offset %d size %d sector %d (key equal: %v)",
				i, strings.Replace(line[1], f[4], "<key>", 1), m.Mapping.Spec, m.Mapping.IVOffset, m.Offset, m.Size, m.Mapping.SectorSize, bytes.Equal(key, m.Mapping.Key))
		}
		c, err := sectorcipher.New(m.Mapping)
		if err != nil {
			t.Fatal(err)
		}
		data := readDisk(t, disks[i])[m.Offset : m.Offset+int64(len(plain))]
		c.Decrypt(data, 0)
		if !bytes.Equal(data, plain) {
			t.Errorf("case %d: data written through the kernel's mapping does not decrypt with the luks mapping", i)
		}
	}
}
