package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// luksConversion is a LUKS2 volume converted offline by cryptshift in the
// guest of TestLUKSMappingMatchesCryptsetup (one boot for both): made by
// stock cryptsetup on the host with an argon2id and a pbkdf2 keyslot,
// ext4 with known files written in the guest through stock `cryptsetup
// open`; converted to a new volume key and 4096-byte sectors, interrupted
// after window 3. Mid-way stock `cryptsetup open` must refuse; at the end
// it opens with each passphrase, e2fsck -fn is clean, the files are
// intact, `luksDump --dump-volume-key` shows another key and the UUID is
// the same.
type luksConversion struct {
	img, uuid, script string
}

func luksConvertSetup(t *testing.T, dir string, files map[string][]byte, index int) *luksConversion {
	t.Helper()
	c := &luksConversion{img: filepath.Join(dir, "convert.img")}
	const dataOff = 8256 * 512 // 16 KiB metadata copies, 4 MiB of keyslots
	if err := os.WriteFile(c.img, make([]byte, dataOff+12<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	var pf [2]string
	for i := range pf {
		pf[i] = filepath.Join(dir, fmt.Sprintf("convert%d.pass", i))
		pass := []byte(fmt.Sprintf("convert passphrase %d", i))
		if err := os.WriteFile(pf[i], pass, 0o600); err != nil {
			t.Fatal(err)
		}
		files[fmt.Sprintf("/etc/vm/cp%d", i)] = pass
	}
	cs := func(args ...string) string {
		out, err := exec.Command("cryptsetup", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("cryptsetup %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cs("luksFormat", "--batch-mode", "--type", "luks2", "--luks2-metadata-size", "16k", "--luks2-keyslots-size", "4m",
		"--offset", "8256", "--sector-size", "512", "--pbkdf", "argon2id", "--pbkdf-memory", "32", "--pbkdf-force-iterations", "4", c.img, pf[0])
	cs("luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", pf[0], c.img, pf[1])
	c.uuid = strings.TrimSpace(cs("luksUUID", c.img))
	dev := fmt.Sprintf("/dev/vd%c", 'a'+index)
	conv := fmt.Sprintf("cryptshift convert --key-file /etc/vm/cp0 --key-file /etc/vm/cp1 --window 1M --new-sector-size 4096 --progress none %s", dev)
	vk := fmt.Sprintf("cryptsetup luksDump --dump-volume-key --batch-mode --key-file /etc/vm/cp0 %s | sed -n '/MK dump/,$p' | tr -d ' \\t\\n'", dev)
	c.script = fmt.Sprintf(`
cryptsetup open --key-file /etc/vm/cp0 %[1]s lc
mkfs.ext4 -q -F -b 4096 /dev/mapper/lc
mkdir -p /mnt/lc
mount /dev/mapper/lc /mnt/lc
cp /etc/vm/plain /mnt/lc/plain
echo "known file" > /mnt/lc/hello
(cd /mnt/lc && sha256sum plain hello) > /tmp/sums
umount /mnt/lc
cryptsetup close lc
echo "VK0 $(%[3]s)"
rc=0; CRYPTSHIFT_TEST_INTERRUPT_AFTER=3 %[2]s > /tmp/conv1 2>&1 || rc=$?
echo "CONV1 $rc"
rc=0; cryptsetup open --key-file /etc/vm/cp0 %[1]s lcx > /tmp/mid 2>&1 || rc=$?
echo "MIDOPEN $rc $(tr '\n' ' ' < /tmp/mid)"
cryptshift status %[1]s | sed 's/^/STATUS /'
rc=0; %[2]s > /tmp/conv2 2>&1 || rc=$?
echo "CONV2 $rc $(tr '\n' ' ' < /tmp/conv2)"
for k in 0 1; do
  cryptsetup open --key-file /etc/vm/cp$k %[1]s lc
  rc=0; e2fsck -fn /dev/mapper/lc > /tmp/fsck 2>&1 || rc=$?
  echo "FSCK$k $rc"
  mount -o ro /dev/mapper/lc /mnt/lc
  rc=0; (cd /mnt/lc && sha256sum -c /tmp/sums) > /tmp/sumc 2>&1 || rc=$?
  echo "SUMS$k $rc"
  umount /mnt/lc
  cryptsetup close lc
done
echo "UUID $(cryptsetup luksUUID %[1]s)"
echo "VK1 $(%[3]s)"
truncate -s 8M /tmp/dmeta
rc=0; CRYPTSHIFT_TEST_INTERRUPT_AFTER=2 %[4]s > /tmp/dec1 2>&1 || rc=$?
echo "DEC1 $rc"
rc=0; cryptsetup open --key-file /etc/vm/cp0 %[1]s lcx > /tmp/mid 2>&1 || rc=$?
echo "DECMID $rc $(tr '\n' ' ' < /tmp/mid)"
rc=0; %[4]s > /tmp/dec2 2>&1 || rc=$?
echo "DEC2 $rc $(tr '\n' ' ' < /tmp/dec2)"
rc=0; cryptsetup isLuks %[1]s || rc=$?
echo "DECISLUKS $rc"
echo "DECBLKID $(blkid -p -o value -s TYPE %[1]s)"
rc=0; e2fsck -fn %[1]s > /tmp/fsck 2>&1 || rc=$?
echo "DECFSCK $rc"
mount -o ro %[1]s /mnt/lc
rc=0; (cd /mnt/lc && sha256sum -c /tmp/sums) > /tmp/sumc 2>&1 || rc=$?
echo "DECSUMS $rc"
umount /mnt/lc
`, dev, conv, vk, "cryptshift convert --decrypt --key-file /etc/vm/cp1 --metadata /tmp/dmeta --window 1M --progress none "+dev)
	return c
}

func (c *luksConversion) check(t *testing.T, res *Result) {
	t.Helper()
	get := func(tag string) string {
		m := regexp.MustCompile(`(?m)^` + tag + ` ?(.*)$`).FindStringSubmatch(res.Console)
		if m == nil {
			t.Fatalf("LUKS2 conversion: no %s line\n%s", tag, res.Tail(consoleTail))
		}
		return strings.TrimSpace(m[1])
	}
	if v := get("CONV1"); v != "8" {
		t.Errorf("interrupted convert exited %s, want 8 (paused)", v)
	}
	if v := get("MIDOPEN"); strings.HasPrefix(v, "0") || !strings.Contains(v, "Unmet LUKS2 requirements detected") {
		t.Errorf("stock cryptsetup open mid-way: %s", v)
	}
	if v := get("STATUS Keyslots:"); !strings.Contains(v, "kept 2, 3; erased at the end 0, 1") {
		t.Errorf("status mid-way: %s", v)
	}
	if v := get("CONV2"); !strings.HasPrefix(v, "0 ") {
		t.Errorf("resumed convert: %s", v)
	}
	for _, tag := range []string{"FSCK0", "FSCK1", "SUMS0", "SUMS1"} {
		if v := get(tag); v != "0" {
			t.Errorf("%s: %s (want 0)", tag, v)
		}
	}
	if v := get("UUID"); v != c.uuid {
		t.Errorf("UUID after the conversion %q, was %q", v, c.uuid)
	}
	// Then decrypted in place (the second passphrase opens the new key):
	// interrupted, refused by stock cryptsetup mid-way, resumed; the
	// partition then mounts directly with the files intact.
	if v := get("DEC1"); v != "8" {
		t.Errorf("interrupted convert --decrypt exited %s, want 8 (paused)", v)
	}
	if v := get("DECMID"); strings.HasPrefix(v, "0") || !strings.Contains(v, "Unmet LUKS2 requirements detected") {
		t.Errorf("stock cryptsetup open mid-decryption: %s", v)
	}
	if v := get("DEC2"); !strings.HasPrefix(v, "0 ") {
		t.Errorf("resumed convert --decrypt: %s", v)
	}
	if v := get("DECISLUKS"); v == "0" {
		t.Errorf("cryptsetup isLuks says LUKS after the decryption")
	}
	if v := get("DECBLKID"); v != "ext4" {
		t.Errorf("blkid -p after the decryption: %q, want ext4", v)
	}
	for _, tag := range []string{"DECFSCK", "DECSUMS"} {
		if v := get(tag); v != "0" {
			t.Errorf("%s: %s (want 0)", tag, v)
		}
	}
	vk0, vk1 := get("VK0"), get("VK1")
	if !strings.HasPrefix(vk0, "MKdump:") || len(vk0) < 64 || vk0 == vk1 || !strings.HasPrefix(vk1, "MKdump:") {
		t.Errorf("volume key dumps before %q and after %q: want two different keys", vk0, vk1)
	}
}
