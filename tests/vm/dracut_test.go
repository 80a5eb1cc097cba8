package vm

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/testkit"
)

// TestDracutSystemd builds an initramfs with dracut and the module in
// dist/dracut/90cryptshift, for the guest's Debian kernel, with systemd in
// it as Fedora, RHEL and openSUSE build theirs, and boots it once for two
// things:
//
//   - The root filesystem is on a device whose conversion (plaintext to
//     AES-XTS) was killed mid-window on the host. The kernel command line
//     names root=/dev/mapper/croot, which exists only if the module's unit
//     ran `cryptshift recover --all` from the table it copied in, with the
//     key file it copied in, before the root device was waited for. The
//     script checks the mounted root's files against what the host wrote,
//     which reads through the two-part table recovery set up.
//   - A second disk is converted the way docs/ONLINE.md ("Long runs under
//     systemd") says: systemd-run, a transient unit, the key as a systemd
//     credential. The unit is started from a stand-in SSH session (another
//     unit) which is then stopped, killing everything in it, while the
//     conversion is held in its first I/O (the device is suspended): the
//     conversion must still be there and finish once the device resumes.
//     The host then decrypts the disk with the credential's key and
//     compares it with what it wrote; rerunning the same command on the
//     finished conversion must leave the unit successful, not failed.
func TestDracutSystemd(t *testing.T) {
	Require(t)
	k, err := FindKernel()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := buildCryptshift(t, dir, "cryptshift")
	hooked := buildCryptshift(t, dir, "cryptshift-testhooks", "testhooks")

	// The root filesystem: a marker and a blob that spans converted and
	// unconverted windows.
	rootKey := testkit.Key(64, 21)
	vdbKey := testkit.Key(64, 22)
	keyDir := filepath.Join(dir, "keys")
	if err := os.Mkdir(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	rootKeyFile := filepath.Join(keyDir, "croot.key")
	if err := os.WriteFile(rootKeyFile, rootKey, 0o600); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	marker := "root-" + randomHex(t, 8)
	blob := testkit.Plaintext(40<<20, 21)
	sum := sha256.Sum256(blob)
	for name, data := range map[string][]byte{"marker": []byte(marker + "\n"), "blob": blob} {
		if err := os.WriteFile(filepath.Join(tree, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const (
		dataSize = 64 << 20
		metaSize = 32 << 20 // convert's default metadata area, at the end
	)
	rootImg := filepath.Join(dir, "root.img")
	run(t, "mkfs.ext4", "-q", "-F", "-d", tree, rootImg, "64M")
	if err := os.Truncate(rootImg, dataSize+metaSize); err != nil {
		t.Fatal(err)
	}
	// Killed after window 3 of 8 commits, on the host (an image file needs
	// no device-mapper): the next window is in flight, so the boot must
	// recover before it can set croot up.
	cmd := exec.Command(hooked, "convert", "--old-cipher", "none", "--new-key-file", rootKeyFile, "--progress", "none", rootImg)
	cmd.Env = append(os.Environ(), "CRYPTSHIFT_TEST_KILL_AFTER=3")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("convert with CRYPTSHIFT_TEST_KILL_AFTER=3 was not killed:\n%s", out)
	}
	st := hostStatus(t, bin, rootImg)
	if st.State != "in-progress" || st.OpenWindow == nil || st.WindowsDone == 0 || st.WindowsDone >= st.WindowsTotal {
		t.Fatalf("after the kill: state %s, %d of %d windows, open window %v; want a conversion stopped mid-way with a window in flight",
			st.State, st.WindowsDone, st.WindowsTotal, st.OpenWindow)
	}

	tab := filepath.Join(dir, "cryptshifttab")
	if err := os.WriteFile(tab, []byte("# NAME DEVICE OLD NEW\ncroot /dev/vda - "+rootKeyFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd.img")
	start := time.Now()
	err = BuildDracut(k, Dracut{
		Modules:    []string{"systemd-initrd", "rootfs-block", "cryptshift"},
		ModuleDirs: []string{filepath.Join(root, "dist/dracut/90cryptshift")},
		Drivers:    []string{"virtio_blk", "virtio_pci", "ext4"},
		Install:    []string{"systemd-run", "journalctl", "sha256sum", "grep", "sleep", "cat", "sync"},
		Conf:       "cryptshift_tab=" + tab + "\ncryptshift_binary=" + bin + "\n",
	}, initrd)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dracut: %v", time.Since(start).Round(time.Millisecond))
	files, err := DracutFiles(initrd)
	if err != nil {
		t.Fatal(err)
	}
	has := map[string]bool{}
	for _, f := range files {
		has[f] = true
	}
	for _, want := range []string{
		"/usr/sbin/cryptshift",
		"/etc/cryptshift/cryptshifttab",
		rootKeyFile,
		"/usr/lib/systemd/system/cryptshift-recover.service",
		"/etc/systemd/system/initrd.target.wants/cryptshift-recover.service",
		"/usr/lib/modules/" + k.Version + "/kernel/drivers/md/dm-crypt.ko",
	} {
		if !has[want] {
			t.Errorf("the dracut image has no %s", want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The second disk, plaintext, converted under systemd in the guest.
	const vdbSize = 16 << 20
	vdbPlain := testkit.Plaintext(vdbSize, 22)
	vdb := newDisk(t, "vdb.img", vdbSize+metaSize, vdbPlain)

	files2 := SystemdRunner("sysroot.mount", "cryptshift-recover.service")
	files2["/etc/vm/vdb.key"] = vdbKey
	convert := `systemd-run --no-block --unit cryptshift-vdb --description "cryptshift: vdb" \
	--property Type=notify --property NotifyAccess=all \
	--property KillMode=mixed --property TimeoutStopSec=5min \
	--property LoadCredential=new.key:/etc/vm/vdb.key \
	/sbin/cryptshift convert --old-cipher none --new-key-file new.key --window 4M --progress plain /dev/mapper/vdbl`
	files2["/etc/vm/convert"] = []byte(convert + "\n")
	script := `set -ex
prop() { systemctl show -p "$2" --value "$1"; }
# waitfor UNIT STATE...: until the unit's ActiveState is one of them (10
# minutes at most: emulated, on a busy machine, this can take minutes).
waitfor() {
	{ set +x; } 2>/dev/null
	u=$1; shift
	i=0
	while [ $i -lt 1200 ]; do
		s=$(prop "$u" ActiveState)
		for w in "$@"; do [ "$s" = "$w" ] && { set -x; return 0; }; done
		sleep 0.5
		i=$((i+1))
	done
	echo "$u stays $s, want $*"; return 1
}

echo "== root through recover --all"
journalctl -b -o cat -u cryptshift-recover.service --no-pager
[ "$(prop cryptshift-recover.service Result)" = success ]
[ "$(prop cryptshift-recover.service ActiveState)" = active ]
grep -q ' /sysroot ext4 ' /proc/mounts
[ "$(cat /sysroot/marker)" = "` + marker + `" ]
set -- $(sha256sum /sysroot/blob)
[ "$1" = "` + hex.EncodeToString(sum[:]) + `" ]
dmsetup table croot
echo ROOT-OK

echo "== a transient unit outlives the session that started it"
dmsetup create vdbl --table "0 ` + strconv.Itoa((vdbSize+metaSize)/512) + ` linear /dev/vdb 0"
udevadm settle
# Suspended, the device holds the conversion in its first I/O, before it
# has written anything, for as long as the test needs.
dmsetup suspend vdbl
systemd-run --unit fake-ssh --property Type=exec sh -c 'sh /etc/vm/convert; exec sleep 600'
waitfor cryptshift-vdb activating
pid=$(prop cryptshift-vdb MainPID)
systemctl stop fake-ssh
[ "$(prop fake-ssh ActiveState)" = inactive ]
[ "$(prop cryptshift-vdb ActiveState)" = activating ]
[ "$(prop cryptshift-vdb MainPID)" = "$pid" ]
kill -0 "$pid"
echo SESSION-GONE-CONVERSION-ALIVE
dmsetup resume vdbl
waitfor cryptshift-vdb active inactive failed
echo "conversion running (READY=1)"
waitfor cryptshift-vdb inactive failed
journalctl -b -o cat -u cryptshift-vdb --no-pager
journalctl -b -o cat -u cryptshift-vdb --no-pager | grep -q '^Finished, converted 16.0 MiB'
/sbin/cryptshift status --json /dev/mapper/vdbl | grep -q '"state": "complete"'
echo CONVERTED-UNDER-SYSTEMD

echo "== the same command again, on the finished conversion"
sed 's/--no-block //' /etc/vm/convert >/tmp/again
sh /tmp/again
waitfor cryptshift-vdb inactive failed
journalctl -b -o cat -u cryptshift-vdb --no-pager
if journalctl -b -o cat -u cryptshift-vdb --no-pager | grep -q 'Failed with result'; then
	echo "the rerun failed the unit"; exit 1
fi
journalctl -b -o cat -u cryptshift-vdb --no-pager | grep -q '^Already complete'
dmsetup remove vdbl
echo RERUN-OK
`
	res := Run(t, Config{
		Initrd: initrd,
		Disks:  []string{rootImg, vdb},
		Files:  files2,
		Script: script,
		Append: "root=/dev/mapper/croot rootfstype=ext4 ro rd.shell=0 rd.emergency=poweroff systemd.show_status=1" +
			// Under emulation on a busy machine, systemd in the initramfs can take
			// minutes to get to the root device and to start a service: its
			// 90 s defaults would fail the boot.
			" rootflags=x-systemd.device-timeout=0 systemd.default_timeout_start_sec=600",
		Timeout: 20 * time.Minute,
	})
	for _, m := range []string{"ROOT-OK", "SESSION-GONE-CONVERSION-ALIVE", "CONVERTED-UNDER-SYSTEMD", "RERUN-OK"} {
		if !strings.Contains(res.Console, m) {
			t.Errorf("the guest did not print %s\n%s", m, res.Tail(consoleTail))
		}
	}

	// Independently of the guest: the disk decrypts, with the key the
	// credential carried, to what the host wrote on it.
	got := readDisk(t, vdb)[:vdbSize]
	c := testkit.Cipher(t, testkit.Mapping(t, "aes-xts-plain64", vdbKey, 512))
	c.Decrypt(got, 0)
	if !bytes.Equal(got, vdbPlain) {
		t.Error("vdb does not decrypt with the credential's key to the plaintext the host wrote")
	}
}

// buildCryptshift builds ./cmd/cryptshift, static, into dir/name.
func buildCryptshift(t *testing.T, dir, name string, tags ...string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	goBin, err := goTool()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	args := []string{"build", "-trimpath", "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command(goBin, append(args, "./cmd/cryptshift")...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

type hostStatusJSON struct {
	State        string  `json:"state"`
	WindowsDone  uint64  `json:"windows_done"`
	WindowsTotal uint64  `json:"windows_total"`
	OpenWindow   *uint64 `json:"open_window"`
}

func hostStatus(t *testing.T, bin, dev string) hostStatusJSON {
	t.Helper()
	out, err := exec.Command(bin, "status", "--json", dev).Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("cryptshift status %s: %v\n%s", dev, err, ee.Stderr)
	} else if err != nil {
		t.Fatal(err)
	}
	var st hostStatusJSON
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("cryptshift status --json: %v\n%s", err, out)
	}
	return st
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
