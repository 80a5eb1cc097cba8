package vm

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// guardCase is one online conversion whose worker process is SIGKILLed
// right after it holds window kill (the test hook of cmd/cryptshift).
type guardCase struct {
	name, mode, crypto string
	kill               int
}

// TestOnlineGuardRecoversAKilledWorker: `convert --online` runs the
// conversion in a child process and stays behind it; when the child is
// killed with a window held (application I/O to it waiting), the guard
// must recover the window and bring NAME to the recorded table at once,
// so the I/O goes on without anyone running `recover --activate`. Cases:
// a journal window in the middle; shift with --crypto kernel (descending,
// private dm-crypt devices left behind); checksum's last window, whose old
// key is then only in the hold device's table. Each: a mounted read-only
// ext4 with a reader timing random O_DIRECT reads over NAME during the
// kill, then every chunk of NAME must read back what it held before, no
// device of cryptshift's may be left, the same command must resume and
// finish, and the result must check out with key B.
func TestOnlineGuardRecoversAKilledWorker(t *testing.T) {
	start := time.Now()
	cases := []guardCase{
		{"gjournal", "journal", "userspace", 3},
		{"gshift", "shift", "kernel", 13},
		{"gchecksum", "checksum", "userspace", cliDataSize/cliWindow - 1},
	}
	files, _, _ := cliKeys()
	var disks []string
	var script strings.Builder
	script.WriteString(". /etc/vm/lib.sh\n")
	aux := guestDisk(len(cases))
	for i, c := range cases {
		disks = append(disks, cliSparse(t, c.name+".img", cliDiskSize))
		newOff := 0
		if c.mode == "shift" {
			newOff = cliWindow / 512
		}
		args := fmt.Sprintf("--online %[1]s --new-key-file /etc/vm/keyB --metadata /dev/mapper/m%[1]s --window 1M --resilience %[2]s --crypto %[3]s --progress plain %[4]s",
			c.name, c.mode, c.crypto, guestDisk(i))
		fmt.Fprintf(&script, `
slots %[1]s %[2]s %[3]d
$PLAIN --key-file /etc/vm/keyA --size $DSECT %[4]s %[1]s
dmsetup mknodes
step %[1]s mkfs mkfs.ext4 -q -F /dev/mapper/%[1]s
step %[1]s mount mount -t ext4 /dev/mapper/%[1]s /mnt
i=0
while [ $i -lt 10 ]; do dd if=/dev/urandom of=/mnt/f$i bs=1M count=1 2>/dev/null; i=$((i + 1)); done
(cd /mnt && sha256sum f* > /tmp/files.%[1]s)
step %[1]s umount umount /mnt
dd if=/dev/mapper/%[1]s of=/tmp/ref.%[1]s bs=1M 2>/dev/null
step %[1]s mount-ro mount -t ext4 -o ro /dev/mapper/%[1]s /mnt
cliguest reader -dev /dev/mapper/%[1]s -tag %[1]s > /tmp/reader.%[1]s 2>&1 &
rpid=$!
sleep 1
stepq %[1]s convert /tmp/conv.%[1]s env CRYPTSHIFT_TEST_KILL_HOLDING=%[5]d cryptshift convert %[6]s
show %[1]s OUT /tmp/conv.%[1]s
echo "LEFT %[1]s $(dmsetup ls | grep -c cryptshift-)"
echo "SUSPENDED %[1]s $(dmsetup info %[1]s | grep -c SUSPENDED)"
stepq %[1]s chunks /tmp/chunks.%[1]s timeout 120 cliguest chunks -dev /dev/mapper/%[1]s -ref /tmp/ref.%[1]s
show %[1]s CH /tmp/chunks.%[1]s
kill -TERM $rpid
wait $rpid
cat /tmp/reader.%[1]s
(cd /mnt && stepq %[1]s files /tmp/sum.%[1]s sha256sum -c /tmp/files.%[1]s)
step %[1]s umount-ro umount /mnt
stepq %[1]s resume /tmp/conv2.%[1]s cryptshift convert %[6]s
show %[1]s OUT2 /tmp/conv2.%[1]s
stepq %[1]s fsck /tmp/fsck.%[1]s e2fsck -fn /dev/mapper/%[1]s || show %[1]s FSCK /tmp/fsck.%[1]s
echo "TARGETS %[1]s $(dmsetup table %[1]s | wc -l)"
step %[1]s showkeys sh -c "dmsetup table --showkeys %[1]s | grep -q $(cat /etc/vm/keyB.hex)"
step %[1]s remove dmsetup remove %[1]s
step %[1]s reopen $PLAIN --key-file /etc/vm/keyB --size $DSECT --offset %[7]d %[4]s %[1]sf
step %[1]s mount-final mount -t ext4 -o ro /dev/mapper/%[1]sf /mnt
(cd /mnt && stepq %[1]s files-final /tmp/sum.%[1]s sha256sum -c /tmp/files.%[1]s)
umount /mnt
cryptsetup close %[1]sf
`, c.name, aux, i, guestDisk(i), c.kill, args, newOff)
	}
	disks = append(disks, cliSparse(t, "aux.img", int64(len(cases))*cliSlotSize))
	script.WriteString("echo GUARD-DONE\n")
	res := Run(t, Config{Image: cliImage, Disks: disks, Files: files, Script: script.String(), Timeout: 10 * time.Minute})
	if !strings.Contains(res.Console, "GUARD-DONE") {
		t.Fatalf("the script did not finish (I/O left waiting on a held window?)\n%s", res.Tail(consoleTail))
	}
	got := rcs(res.Console)
	for _, c := range cases {
		for _, s := range []string{"mkfs", "mount", "umount", "mount-ro", "chunks", "files", "umount-ro", "resume", "fsck",
			"showkeys", "remove", "reopen", "mount-final", "files-final"} {
			wantRC(t, got, c.name, s, 0)
		}
		out := strings.Join(taggedLines(res.Console, "OUT", c.name), "\n")
		if wantRC(t, got, c.name, "convert", 1) {
			for _, want := range []string{"the conversion process was killed (killed)", "is recovered and serves the data with the recorded progress", "run the same command to resume"} {
				if !strings.Contains(out, want) {
					t.Errorf("%s: the guard's output lacks %q:\n%s", c.name, want, out)
				}
			}
		} else {
			t.Logf("%s: convert output:\n%s", c.name, out)
		}
		for what, re := range map[string]string{
			"cryptshift devices left after the guard's recovery": `(?m)^LEFT ` + c.name + ` (\d+)$`,
			"NAME left suspended":                                `(?m)^SUSPENDED ` + c.name + ` (\d+)$`,
		} {
			if m := regexp.MustCompile(re).FindStringSubmatch(res.Console); m == nil || m[1] != "0" {
				t.Errorf("%s: %s: %v", c.name, what, m)
			}
		}
		if m := regexp.MustCompile(`(?m)^CH ` + c.name + ` CHUNKS total=\d+ failed=\[([^\]]*)\] wrong=\[([^\]]*)\]$`).FindStringSubmatch(res.Console); m == nil || m[1] != "" || m[2] != "" {
			t.Errorf("%s: after the guard's recovery, chunks of NAME failed or differ: %v", c.name, m)
		}
		if m := regexp.MustCompile(`(?m)^READER-STAT ` + c.name + ` (.*) failed=(\d+)$`).FindStringSubmatch(res.Console); m == nil || m[2] != "0" {
			t.Errorf("%s: the application reader failed reads across the kill: %v", c.name, m)
		} else {
			t.Logf("%s: application reader across the kill and the guard's recovery: %s", c.name, m[1])
		}
		if m := regexp.MustCompile(`(?m)^TARGETS ` + c.name + ` (\d+)$`).FindStringSubmatch(res.Console); m == nil || m[1] != "1" {
			t.Errorf("%s: the live table does not have exactly one target at the end: %v", c.name, m)
		}
		if t.Failed() {
			t.Logf("%s: resume output:\n%s", c.name, strings.Join(taggedLines(res.Console, "OUT2", c.name), "\n"))
		}
	}
	t.Logf("%d killed online workers recovered by the guard: VM %v, test %v", len(cases), res.Duration.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
