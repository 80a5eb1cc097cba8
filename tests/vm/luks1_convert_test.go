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

// luks1Conversion is the LUKS1 headline case converted offline in the
// guest of TestLUKSMappingMatchesCryptsetup (the same boot as the LUKS2
// one): a LUKS1 aes-cbc-essiv:sha256 256-bit volume made by stock
// cryptsetup on the host with two keyslots, ext4 with known files on its
// first 12 MiB (written through stock `cryptsetup open`), converted to
// aes-xts-plain64 512-bit with cryptshift's metadata in the last 4 MiB of
// the device, interrupted after window 3. Mid-way stock `cryptsetup open`
// must refuse; at the end it opens with each passphrase, e2fsck -fn is
// clean, the files are intact, `luksDump --dump-volume-key` shows another
// key, the UUID is the same.
type luks1Conversion struct {
	img, uuid, script string
}

func luks1ConvertSetup(t *testing.T, dir string, files map[string][]byte, index int) *luks1Conversion {
	t.Helper()
	c := &luks1Conversion{img: filepath.Join(dir, "convert1.img")}
	if err := os.WriteFile(c.img, make([]byte, 18<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	var pf [2]string
	for i := range pf {
		pf[i] = filepath.Join(dir, fmt.Sprintf("convert1-%d.pass", i))
		pass := []byte(fmt.Sprintf("luks1 passphrase %d", i))
		if err := os.WriteFile(pf[i], pass, 0o600); err != nil {
			t.Fatal(err)
		}
		files[fmt.Sprintf("/etc/vm/l1p%d", i)] = pass
	}
	cs := func(args ...string) string {
		out, err := exec.Command("cryptsetup", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("cryptsetup %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cs("luksFormat", "--batch-mode", "--type", "luks1", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--hash", "sha256",
		"--pbkdf-force-iterations", "1000", c.img, pf[0])
	cs("luksAddKey", "--batch-mode", "--pbkdf-force-iterations", "1000", "--key-file", pf[0], c.img, pf[1])
	c.uuid = strings.TrimSpace(cs("luksUUID", c.img))
	dev := fmt.Sprintf("/dev/vd%c", 'a'+index)
	conv := fmt.Sprintf("cryptshift convert --key-file /etc/vm/l1p0 --key-file /etc/vm/l1p1 --window 1M --metadata-size 4M --new-cipher aes-xts-plain64 --new-key-size 512 --progress none %s", dev)
	vk := fmt.Sprintf("cryptsetup luksDump --dump-volume-key --batch-mode --key-file /etc/vm/l1p0 %s | sed -n '/MK dump/,$p' | tr -d ' \\t\\n'", dev)
	c.script = fmt.Sprintf(`
cryptsetup open --key-file /etc/vm/l1p0 %[1]s l1c
mkfs.ext4 -q -F -b 4096 /dev/mapper/l1c 3072
mkdir -p /mnt/l1c
mount /dev/mapper/l1c /mnt/l1c
cp /etc/vm/plain /mnt/l1c/plain
echo "known file" > /mnt/l1c/hello
(cd /mnt/l1c && sha256sum plain hello) > /tmp/l1sums
umount /mnt/l1c
cryptsetup close l1c
echo "L1VK0 $(%[3]s)"
rc=0; CRYPTSHIFT_TEST_INTERRUPT_AFTER=3 %[2]s > /tmp/l1conv1 2>&1 || rc=$?
echo "L1CONV1 $rc $(tr '\n' ' ' < /tmp/l1conv1)"
rc=0; cryptsetup open --key-file /etc/vm/l1p0 %[1]s l1x > /tmp/l1mid 2>&1 || rc=$?
echo "L1MIDOPEN $rc $(tr '\n' ' ' < /tmp/l1mid)"
cryptshift status %[1]s | sed 's/^/L1STATUS /'
rc=0; %[2]s > /tmp/l1conv2 2>&1 || rc=$?
echo "L1CONV2 $rc $(tr '\n' ' ' < /tmp/l1conv2)"
for k in 0 1; do
  cryptsetup open --key-file /etc/vm/l1p$k %[1]s l1c
  echo "L1TABLE$k $(dmsetup table l1c | cut -d' ' -f4)"
  rc=0; e2fsck -fn /dev/mapper/l1c > /tmp/l1fsck 2>&1 || rc=$?
  echo "L1FSCK$k $rc"
  mount -o ro /dev/mapper/l1c /mnt/l1c
  rc=0; (cd /mnt/l1c && sha256sum -c /tmp/l1sums) > /tmp/l1sumc 2>&1 || rc=$?
  echo "L1SUMS$k $rc"
  umount /mnt/l1c
  cryptsetup close l1c
done
echo "L1UUID $(cryptsetup luksUUID %[1]s)"
echo "L1VK1 $(%[3]s)"
`, dev, conv, vk)
	return c
}

func (c *luks1Conversion) check(t *testing.T, res *Result) {
	t.Helper()
	get := func(tag string) string {
		m := regexp.MustCompile(`(?m)^` + tag + ` ?(.*)$`).FindStringSubmatch(res.Console)
		if m == nil {
			t.Fatalf("LUKS1 conversion: no %s line\n%s", tag, res.Tail(consoleTail))
		}
		return strings.TrimSpace(m[1])
	}
	if v := get("L1CONV1"); !strings.HasPrefix(v, "8 ") || !strings.Contains(v, "last 4 MiB of DEVICE") {
		t.Errorf("interrupted LUKS1 convert: %s (want exit 8, paused, saying where the metadata goes)", v)
	}
	if v := get("L1MIDOPEN"); strings.HasPrefix(v, "0") || !strings.Contains(v, "not a valid LUKS device") {
		t.Errorf("stock cryptsetup open of the LUKS1 volume mid-way: %s", v)
	}
	if v := get("L1STATUS Keyslots:"); !strings.Contains(v, "kept 2, 3; erased at the end 0, 1") {
		t.Errorf("LUKS1 status mid-way: %s", v)
	}
	if v := get("L1CONV2"); !strings.HasPrefix(v, "0 ") {
		t.Errorf("resumed LUKS1 convert: %s", v)
	}
	for _, tag := range []string{"L1FSCK0", "L1FSCK1", "L1SUMS0", "L1SUMS1"} {
		if v := get(tag); v != "0" {
			t.Errorf("%s: %s (want 0)", tag, v)
		}
	}
	for _, tag := range []string{"L1TABLE0", "L1TABLE1"} {
		if v := get(tag); v != "aes-xts-plain64" {
			t.Errorf("%s: stock open maps %q, want aes-xts-plain64", tag, v)
		}
	}
	if v := get("L1UUID"); v != c.uuid {
		t.Errorf("LUKS1 UUID after the conversion %q, was %q", v, c.uuid)
	}
	vk0, vk1 := get("L1VK0"), get("L1VK1")
	if !strings.HasPrefix(vk0, "MKdump:") || !strings.HasPrefix(vk1, "MKdump:") || len(vk1) != len("MKdump:")+128 || strings.Contains(vk1, strings.TrimPrefix(vk0, "MKdump:")) {
		t.Errorf("LUKS1 volume key dumps before %q and after %q: want a new 512-bit key", vk0, vk1)
	}
}
