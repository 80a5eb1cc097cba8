package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// luksOnlineImage is the CLI guest with the fsync-logging writer, plus
// libgcc_s for cryptsetup's Argon2 threads (see luksImage).
var luksOnlineImage = Image{Files: map[string]string{"/lib/x86_64-linux-gnu/libgcc_s.so.1": "/lib/x86_64-linux-gnu/libgcc_s.so.1"},
	GoPackages: []string{"./cmd/cryptshift", "./tests/vm/internal/onlineguest"}, GoTags: []string{"testhooks"}}

// luksOnlineScript is the guest of TestOnlineLUKS2CLI. One boot checks, in
// order: the refusals (device and NAME's table untouched), a conversion
// killed with its guard (nothing left to heal it), `recover --activate` of
// the live NAME, stock cryptsetup refusing the volume mid-way, `recover
// --activate` re-creating NAME, the resume to the end under a second
// writer (whose worker is killed twice on the way, holding a window and
// between NAME's switch to the new key and the final commit, and healed
// by its guard each time), and stock cryptsetup afterwards with each
// passphrase.
const luksOnlineScript = `
. /etc/vm/lib.sh
D=/dev/vda
CONV="cryptshift convert --online lc --key-file /etc/vm/cp0 --key-file /etc/vm/cp1 --window 1M --progress plain $D"
vk() { cryptsetup luksDump --dump-volume-key --batch-mode --key-file /etc/vm/cp0 $D | sed -n '/MK dump/,$p' | tr -d ' \t\n'; }
slots a /dev/vdb 0
slots b /dev/vdb 1
echo "VK0 $(vk)"
step r open cryptsetup open --key-file /etc/vm/cp0 $D lc
echo "KEYFIELD $(dmsetup table lc | awk '{print $5}')"
T0=$(dmsetup table lc | md5sum)
H0=$(sha256sum < $D)
dmsetup create other --table "0 2048 linear /dev/vdb 40000"
stepq r not-device /tmp/r1 cryptshift convert --online other --key-file /etc/vm/cp0 --key-file /etc/vm/cp1 $D
show r OUT /tmp/r1
stepq r wrong-pass /tmp/r2 cryptshift convert --online lc --key-file /etc/vm/bad $D
show r OUT /tmp/r2
cryptsetup open --type plain --shared --cipher aes-cbc-essiv:sha256 --key-size 256 --key-file /dev/urandom --offset 32768 --size $DSECT $D lcbad
stepq r cipher /tmp/r3 cryptshift convert --online lcbad --key-file /etc/vm/cp0 --key-file /etc/vm/cp1 $D
show r OUT /tmp/r3
cryptsetup close lcbad
dmsetup remove other
if [ "$(sha256sum < $D)" = "$H0" ] && [ "$(dmsetup table lc | md5sum)" = "$T0" ]; then echo "UNTOUCHED yes"; else echo "UNTOUCHED no"; fi

step m mkfs mkfs.ext4 -q -F /dev/mapper/lc
step m mount mount -t ext4 /dev/mapper/lc /mnt
dd if=/dev/urandom of=/mnt/ballast bs=1M count=3 conv=fsync 2>/dev/null
echo "known file" > /mnt/hello
sync
(cd /mnt && sha256sum ballast hello) > /tmp/sums
mkdir -p /mnt/w1 /mnt/w2
onlineguest writer -dir /mnt/w1 -log /dev/mapper/la -seed 1 > /tmp/w1 2>&1 &
w1=$!
sleep 2
CRYPTSHIFT_TEST_WAIT_AFTER=5 CRYPTSHIFT_TEST_WAIT_FILE=/tmp/wait $CONV > /tmp/conv1 2>&1 &
g=$!
n=0; while [ ! -e /tmp/wait ] && [ $n -lt 3000 ]; do sleep 0.1; n=$((n + 1)); done
# The guard and its worker die together: nothing heals NAME but recover.
kill -9 $g
for p in /proc/[0-9]*; do
	if tr '\0' '\n' < $p/environ 2>/dev/null | grep -qx CRYPTSHIFT_ONLINE_WORKER=1; then kill -9 ${p#/proc/}; fi
done
wait $g
show m OUT1 /tmp/conv1
echo "TABLE-KILLED $(dmsetup table lc | wc -l)"
stepq m recover-live /tmp/rl cryptshift recover --activate lc --key-file /etc/vm/cp1 $D
show m OUT /tmp/rl
kill -TERM $w1
wait $w1
cat /tmp/w1
step m umount1 umount /mnt
step m remove dmsetup remove lc
stepq m midopen /tmp/mid cryptsetup open --key-file /etc/vm/cp0 $D lcx
show m MID /tmp/mid
stepq m status /tmp/st cryptshift status $D
show m STATUS /tmp/st
stepq m recover-new /tmp/rn cryptshift recover --activate lc --key-file /etc/vm/cp0 $D
show m OUT /tmp/rn
echo "DMUUID $(dmsetup info -c --noheadings -o uuid lc)"
dmsetup mknodes
step m mount2 mount -t ext4 /dev/mapper/lc /mnt
step m check1 onlineguest check -dir /mnt/w1 -log /dev/mapper/la -seed 1
onlineguest writer -dir /mnt/w2 -log /dev/mapper/lb -seed 2 > /tmp/w2 2>&1 &
w2=$!
sleep 2
# A worker killed holding a window, then one killed between NAME's switch
# to the new key and the final commit: its guard heals both.
stepq m kill-holding /tmp/kh env CRYPTSHIFT_TEST_KILL_HOLDING=8 $CONV
show m OUTKH /tmp/kh
stepq m kill-final /tmp/kf env CRYPTSHIFT_TEST_KILL_BEFORE_FINAL=1 $CONV
show m OUTKF /tmp/kf
echo "TABLE-T2 $(dmsetup table lc | wc -l)"
stepq m midopen2 /tmp/mid2 cryptsetup open --test-passphrase --key-file /etc/vm/cp0 $D
stepq m status2 /tmp/st2 cryptshift status $D
show m STATUS2 /tmp/st2
stepq m convert /tmp/conv2 $CONV
show m OUT2 /tmp/conv2
echo "TARGETS $(dmsetup table lc | wc -l)"
kill -TERM $w2
wait $w2
cat /tmp/w2
step m umount2 umount /mnt
stepq m fsck-live /tmp/fsck e2fsck -fn /dev/mapper/lc || show m FSCK /tmp/fsck
step m close cryptsetup close lc
for k in 0 1; do
	step m open$k cryptsetup open --key-file /etc/vm/cp$k $D lc
	stepq m fsck$k /tmp/fsck e2fsck -fn /dev/mapper/lc || show m FSCK /tmp/fsck
	step m mount$k mount -t ext4 -o ro /dev/mapper/lc /mnt
	step m sums$k sh -c "cd /mnt && sha256sum -c /tmp/sums"
	step m checkw1-$k onlineguest check -dir /mnt/w1 -log /dev/mapper/la -seed 1
	step m checkw2-$k onlineguest check -dir /mnt/w2 -log /dev/mapper/lb -seed 2
	umount /mnt
	step m close$k cryptsetup close lc
done
echo "UUID $(cryptsetup luksUUID $D)"
echo "VK1 $(vk)"
cryptsetup luksDump $D > /tmp/dump
echo "LEFTOVER $(grep -ci cryptshift /tmp/dump)"
show m DUMP /tmp/dump
echo LUKS-ONLINE-DONE
`

// TestOnlineLUKS2CLI is issue 10's online LUKS2 conversion, in one boot: a
// LUKS2 volume stock cryptsetup made on the host (an argon2id and a pbkdf2
// keyslot) and opened in the guest (its table names the key in the kernel
// keyring), ext4 mounted with known files and an fsyncing writer, converted
// by `cryptshift convert --online` to a new volume key. Refused first, each
// with its exit code and nothing changed: a NAME that does not map DEVICE
// (4), a wrong passphrase (3), a NAME whose table has another cipher than
// the header (6). The conversion is killed with its guard after window 5;
// `recover --activate` brings the live NAME to the recorded progress; stock
// open refuses the volume mid-way; `recover --activate` re-creates NAME
// after it was removed; the same convert command finishes. Then: every
// acknowledged write and the known files are there, e2fsck -fn is clean,
// stock close and open with each passphrase work, the volume key differs,
// the UUID is the same and luksDump shows nothing of cryptshift.
func TestOnlineLUKS2CLI(t *testing.T) {
	Require(t)
	start := time.Now()
	dir := t.TempDir()
	img := filepath.Join(dir, "luks.img")
	// Default LUKS2 layout: data at 16 MiB, then 16 MiB of data.
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	files, _, _ := cliKeys()
	var pf [2]string
	for i := range pf {
		pf[i] = filepath.Join(dir, fmt.Sprintf("cp%d", i))
		pass := []byte(fmt.Sprintf("online passphrase %d", i))
		if err := os.WriteFile(pf[i], pass, 0o600); err != nil {
			t.Fatal(err)
		}
		files[fmt.Sprintf("/etc/vm/cp%d", i)] = pass
	}
	files["/etc/vm/bad"] = []byte("not a passphrase")
	cs := func(args ...string) string {
		out, err := exec.Command("cryptsetup", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("cryptsetup %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cs("luksFormat", "--batch-mode", "--type", "luks2", "--sector-size", "512", "--pbkdf", "argon2id", "--pbkdf-memory", "32",
		"--pbkdf-force-iterations", "4", img, pf[0])
	cs("luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", pf[0], img, pf[1])
	uuid := strings.TrimSpace(cs("luksUUID", img))
	// DSECT in lib.sh is 16 MiB: the data segment.
	aux := cliSparse(t, "aux.img", 24<<20)
	res := Run(t, Config{Image: luksOnlineImage, Disks: []string{img, aux}, Files: files, Script: luksOnlineScript, Timeout: 20 * time.Minute})
	if !strings.Contains(res.Console, "LUKS-ONLINE-DONE") {
		t.Fatalf("the script did not finish\n%s", res.Tail(consoleTail))
	}
	get := func(tag string) string {
		m := regexp.MustCompile(`(?m)^` + tag + ` ?(.*)$`).FindStringSubmatch(res.Console)
		if m == nil {
			t.Errorf("no %s line", tag)
			return ""
		}
		return strings.TrimSpace(m[1])
	}
	got := rcs(res.Console)
	if k := get("KEYFIELD"); !strings.HasPrefix(k, ":64:logon:cryptsetup:"+uuid) {
		t.Errorf("stock open's table key field %q: want a keyring reference (the case this test is about)", k)
	}
	wantRC(t, got, "r", "open", 0)
	wantRC(t, got, "r", "not-device", 4)
	wantRC(t, got, "r", "wrong-pass", 3)
	wantRC(t, got, "r", "cipher", 6)
	if v := get("UNTOUCHED"); v != "yes" {
		t.Errorf("a refused convert changed the device or NAME's table")
	}
	for _, s := range []string{"mkfs", "mount", "recover-live", "umount1", "remove", "status", "recover-new", "mount2", "check1",
		"convert", "umount2", "fsck-live", "close", "open0", "fsck0", "mount0", "sums0", "checkw1-0", "checkw2-0", "close0",
		"open1", "fsck1", "mount1", "sums1", "checkw1-1", "checkw2-1", "close1"} {
		wantRC(t, got, "m", s, 0)
	}
	if c := got["m"]["midopen"]; len(c) != 1 || c[0] == 0 || !strings.Contains(strings.Join(taggedLines(res.Console, "MID", "m"), "\n"), "Unmet LUKS2 requirements") {
		t.Errorf("stock cryptsetup open mid-way: exit %v, %q; want a refusal for the requirement", c, taggedLines(res.Console, "MID", "m"))
	}
	if v := get("DMUUID"); v != "CRYPT-LUKS2-"+strings.ReplaceAll(uuid, "-", "")+"-lc" {
		t.Errorf("recover --activate gave NAME the device-mapper UUID %q", v)
	}
	if v := get("TARGETS"); v != "1" {
		t.Errorf("NAME has %s targets at the end, want 1", v)
	}
	if v := get("UUID"); v != uuid {
		t.Errorf("UUID after the conversion %q, was %q", v, uuid)
	}
	vk0, vk1 := get("VK0"), get("VK1")
	if !strings.HasPrefix(vk0, "MKdump:") || len(vk0) < 64 || vk0 == vk1 || !strings.HasPrefix(vk1, "MKdump:") {
		t.Errorf("volume key dumps before %q and after %q: want two different keys", vk0, vk1)
	}
	if v := get("LEFTOVER"); v != "0" {
		t.Errorf("luksDump still mentions cryptshift %s times:\n%s", v, strings.Join(taggedLines(res.Console, "DUMP", "m"), "\n"))
	}
	if n := len(regexp.MustCompile(`(?m)^CHECK-OK records=[1-9]`).FindAllString(res.Console, -1)); n != 5 {
		t.Errorf("%d of 5 writer-log checks passed with a non-empty log", n)
	}
	for _, k := range []string{"kill-holding", "kill-final"} {
		out := strings.Join(taggedLines(res.Console, map[string]string{"kill-holding": "OUTKH", "kill-final": "OUTKF"}[k], "m"), "\n")
		if c := got["m"][k]; len(c) != 1 || c[0] == 0 || !strings.Contains(out, "run the same command to resume") {
			t.Errorf("%s: exit %v; want the guard to recover the killed worker:\n%s", k, c, out)
		}
		t.Logf("%s:\n%s", k, out)
	}
	if out := strings.Join(taggedLines(res.Console, "OUTKF", "m"), "\n"); !strings.Contains(out, "16 of 16 windows") {
		t.Errorf("kill-final: the guard's recovery does not report a complete conversion:\n%s", out)
	}
	if v := get("TABLE-T2"); v != "1" {
		t.Errorf("NAME has %s targets between the switch and the final commit, want 1", v)
	}
	if st := strings.Join(taggedLines(res.Console, "STATUS2", "m"), "\n"); !strings.Contains(st, "in progress") {
		t.Errorf("status between the switch and the final commit:\n%s", st)
	}
	wantRC(t, got, "m", "midopen2", 0) // --test-passphrase: the header reads, the requirement only stops activation
	// The kill must have left a conversion in the middle for recover to
	// bring up: both recoveries report the recorded progress.
	rec := strings.Join(taggedLines(res.Console, "OUT", "m"), "\n")
	if ms := regexp.MustCompile(`serves the LUKS2 volume with the recorded progress \((\d+) of 16 windows`).FindAllStringSubmatch(rec, -1); len(ms) != 2 || ms[0][1] == "0" || ms[0][1] == "16" || ms[0][1] != ms[1][1] {
		t.Errorf("recover --activate (live, then re-created) did not both report the same mid-way progress:\n%s", rec)
	}
	if st := strings.Join(taggedLines(res.Console, "STATUS", "m"), "\n"); !strings.Contains(st, "in progress") {
		t.Errorf("status mid-way:\n%s", st)
	}
	t.Logf("recover --activate:\n%s", rec)
	t.Logf("table after the kill: %s targets", get("TABLE-KILLED"))
	if t.Failed() {
		for _, tag := range []string{"OUT", "OUT1", "OUT2", "STATUS", "FSCK"} {
			for _, c := range []string{"r", "m"} {
				if l := taggedLines(res.Console, tag, c); len(l) > 0 {
					t.Logf("%s %s:\n%s", tag, c, strings.Join(l, "\n"))
				}
			}
		}
		t.Logf("console tail:\n%s", res.Tail(consoleTail))
	}
	for _, l := range taggedLines(res.Console, "OUT2", "m") {
		if strings.Contains(l, "waited at most") {
			t.Logf("cli: %s", l)
		}
	}
	t.Logf("online LUKS2 conversion: VM %v, test %v", res.Duration.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
