package vm

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/testkit"
)

// TestOnlineKillActivateResume kills the guest in the middle of an online
// conversion (key A to key B under a mounted, busy ext4), boots again,
// recovers and activates the device with online.Activate (new key over
// the done windows, old over the rest), and checks that the filesystem and
// every fsync the writer logged before the kill survived; then resumes the
// conversion online under a new writer and checks everything once more,
// finally through a fresh `cryptsetup open` with key B.
func TestOnlineKillActivateResume(t *testing.T) {
	seed := testkit.VMSeed(t)
	t.Logf("seed %d (the kill's window and delay derive from it; rerun with CRYPTSHIFT_VM_SEED)", seed)
	replayOnFailure(t, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	// The kill comes a short seeded delay after a seeded window of the
	// first three quarters: the 16 or more windows still to go take far
	// longer than the delay, so the kill always finds the conversion in
	// progress, wherever in it.
	killAt := 16 + rng.IntN(32)
	delay := RandomDelay(rng, 0, 300*time.Millisecond)
	keys := rand.New(rand.NewPCG(21, 22))
	keyA, keyB := randBytes(keys, 64), randBytes(keys, 64)
	files := map[string][]byte{"/etc/vm/keyA": keyA, "/etc/vm/keyB": keyB, "/etc/vm/newkey.hex": []byte(hex.EncodeToString(keyB))}
	data := newDisk(t, "data.img", onlineDataSize, nil)
	logDisk := newDisk(t, "log.img", 8<<20, nil)
	meta := newDisk(t, "meta.img", 8<<20, nil)
	disks := []string{data, logDisk, meta}
	const plain = "cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512"
	// The ballast checksum goes to the log disk, far past the writer's
	// records, so the second boot can check it.
	const sumAt = "bs=512 seek=12288"

	first := Run(t, Config{
		Image: onlineImage, Disks: disks, Files: files, Timeout: 4 * time.Minute,
		KillOn: fmt.Sprintf("PROGRESS %d/64", killAt), KillAfter: delay,
		Script: `set -e
` + plain + ` --key-file /etc/vm/keyA /dev/vda data
mkfs.ext4 -q -F /dev/mapper/data
mount -t ext4 /dev/mapper/data /mnt
mkdir /mnt/w
dd if=/dev/urandom of=/mnt/ballast bs=1M count=20 conv=fsync 2>/dev/null
sha256sum /mnt/ballast | dd of=/dev/vdb ` + sumAt + ` conv=fsync 2>/dev/null
onlineguest writer -dir /mnt/w -log /dev/vdb -seed 5 &
sleep 2
onlineguest convert -name data -old-key /etc/vm/keyA -new-key /etc/vm/keyB -meta /dev/vdc -window 1048576
echo CONVERSION-WAS-NOT-KILLED
`,
	})
	if strings.Contains(first.Console, "ONLINE-OK") {
		t.Fatalf("the conversion finished before the kill (delay %v)\n%s", delay, first.Tail(consoleTail))
	}
	t.Logf("killed %v after window %d of 64", delay, killAt)

	second := Run(t, Config{
		Image: onlineImage, Disks: disks, Files: files, Timeout: 4 * time.Minute,
		Script: `set -e
onlineguest activate -name data -dev /dev/vda -old-key /etc/vm/keyA -new-key /etc/vm/keyB -meta /dev/vdc
dmsetup mknodes
dd if=/dev/vdb ` + strings.Replace(sumAt, "seek", "skip", 1) + ` count=1 2>/dev/null | head -n 1 >/tmp/ballast.sum
# Mounting replays the ext4 journal the crash left.
mount -t ext4 /dev/mapper/data /mnt
onlineguest check -crashed -dir /mnt/w -log /dev/vdb -seed 5
sha256sum -c /tmp/ballast.sum >/dev/null && echo BALLAST-AFTER-CRASH-OK
umount /mnt
e2fsck -fn /dev/mapper/data >/tmp/fsck.log 2>&1 && echo E2FSCK-AFTER-CRASH-CLEAN || { cat /tmp/fsck.log; exit 1; }
mount -t ext4 /dev/mapper/data /mnt
onlineguest writer -dir /mnt/w -log /dev/vdb -seed 6 &
writer=$!
sleep 1
onlineguest convert -resume -name data -old-key /etc/vm/keyA -new-key /etc/vm/keyB -meta /dev/vdc -window 1048576
kill -TERM $writer
wait $writer
umount /mnt
e2fsck -fn /dev/mapper/data >/tmp/fsck.log 2>&1 && echo E2FSCK-LIVE-CLEAN || { cat /tmp/fsck.log; exit 1; }
dmsetup table --showkeys data | grep -q "$(cat /etc/vm/newkey.hex)" && echo SHOWKEYS-HAS-NEW-KEY
dmsetup remove data
` + plain + ` --key-file /etc/vm/keyB /dev/vda fresh
e2fsck -fn /dev/mapper/fresh >/tmp/fsck.log 2>&1 && echo E2FSCK-REOPENED-CLEAN || { cat /tmp/fsck.log; exit 1; }
mount -t ext4 /dev/mapper/fresh /mnt
onlineguest check -dir /mnt/w -log /dev/vdb -seed 6
sha256sum -c /tmp/ballast.sum >/dev/null && echo BALLAST-OK
umount /mnt
cryptsetup close fresh
`,
	})
	m := regexp.MustCompile(`ACTIVATED data with (\d+) targets`).FindStringSubmatch(second.Console)
	if m == nil {
		t.Fatalf("no activation\n%s", second.Tail(consoleTail))
	}
	if m[1] != "2" {
		t.Errorf("activated with %s targets; a conversion killed midway should give 2 (new, then old)", m[1])
	}
	if n := strings.Count(second.Console, "CHECK-OK"); n != 2 {
		t.Errorf("%d of 2 file checks passed\n%s", n, second.Tail(consoleTail))
	}
	for _, want := range []string{"RECOVERED", "BALLAST-AFTER-CRASH-OK", "E2FSCK-AFTER-CRASH-CLEAN", "RESUMING over 2 targets",
		"ONLINE-OK", "FINAL-TABLE-OK", "NO-LEFTOVER-DEVICES", "E2FSCK-LIVE-CLEAN", "SHOWKEYS-HAS-NEW-KEY",
		"E2FSCK-REOPENED-CLEAN", "BALLAST-OK"} {
		if !strings.Contains(second.Console, want) {
			t.Errorf("guest did not report %s\n%s", want, second.Tail(consoleTail))
		}
	}
	for _, l := range regexp.MustCompile(`(?m)^(RECOVERED|ACTIVATED|CHECK-OK|CHECK-SKIPPED|ONLINE-STAT|WRITER-STAT|CONVERTED) .*$`).FindAllString(second.Console, -1) {
		t.Log(l)
	}
}
