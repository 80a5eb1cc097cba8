package vm

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// neighbourCase is one interference with an online conversion: what a
// neighbour does to NAME or the device under it while cryptshift waits
// between two windows, and what the admin does to put it back.
type neighbourCase struct {
	name, mode string
	// mounted: the filesystem stays mounted through the conversion
	// (cryptsetup close and dmsetup remove need NAME unused).
	mounted bool
	// act is what the neighbour runs; undo what the admin runs once
	// cryptshift has stopped. $C is the case (and NAME), $DEV the device
	// under NAME, $DISK the disk under that, $DEVSECT $DEV's size.
	act, undo string
	// said must appear in cryptshift's error.
	said string
}

var neighbourCases = []neighbourCase{
	{"suspend", "journal", true, "dmsetup suspend $C", "dmsetup resume $C", "is suspended"},
	{"reload", "checksum", true, "dmsetup table --showkeys $C | dmsetup reload $C", "dmsetup clear $C",
		"has an inactive table cryptshift did not load"},
	{"grow", "checksum", true,
		`dmsetup reload $DEV --table "0 $((DEVSECT + 2048)) linear $DISK 0" && dmsetup resume $DEV`,
		`dmsetup reload $DEV --table "0 $DEVSECT linear $DISK 0" && dmsetup resume $DEV`,
		"which now has"},
	{"close", "journal", false, "dmsetup remove $C",
		"cryptshift recover --activate $C --metadata /dev/mapper/m$C --old-key-file /etc/vm/keyA --new-key-file /etc/vm/keyB $DEV",
		"was removed"},
}

// neighbourScript runs case c on disk: an ext4 on NAME (plain, key A) over
// DEVICE (a dm-linear over the disk, so that it can grow), a conversion to
// key B stopped after window 3 by the test hook, the neighbour's act, the
// admin's undo, then the same command again to the end and the checks.
func neighbourScript(c neighbourCase, disk, aux string, slot int) string {
	conv := fmt.Sprintf("cryptshift convert --online %[1]s --metadata /dev/mapper/m%[1]s --window 1M --progress plain --resilience %[2]s --new-key-file /etc/vm/keyB /dev/mapper/d%[1]s",
		c.name, c.mode)
	umountEarly := ""
	if !c.mounted {
		umountEarly = "umount /mnt"
	}
	umountLate := "umount /mnt"
	if !c.mounted {
		umountLate = ":"
	}
	return fmt.Sprintf(`
export C=%[1]s DEV=/dev/mapper/d%[1]s DISK=%[2]s DEVSECT=$((DSECT + 2048))
slots %[1]s %[3]s %[4]d
dmsetup create d%[1]s --table "0 $DEVSECT linear %[2]s 0"
dmsetup mknodes
$PLAIN --key-file /etc/vm/keyA --size $DSECT $DEV %[1]s
dmsetup mknodes
step %[1]s mkfs mkfs.ext4 -q -F /dev/mapper/%[1]s
step %[1]s mount mount -t ext4 /dev/mapper/%[1]s /mnt
dd if=/dev/urandom of=/mnt/ballast bs=1M count=6 conv=fsync 2>/dev/null
sha256sum /mnt/ballast > /tmp/ballast.%[1]s
%[5]s
rm -f /tmp/wait.%[1]s
CRYPTSHIFT_TEST_WAIT_AFTER=3 CRYPTSHIFT_TEST_WAIT_FILE=/tmp/wait.%[1]s %[6]s > /tmp/conv1.%[1]s 2>&1 &
cpid=$!
i=0; while [ ! -e /tmp/wait.%[1]s ] && [ $i -lt 120 ] && kill -0 $cpid 2>/dev/null; do sleep 1; i=$((i+1)); done
[ -e /tmp/wait.%[1]s ]; echo "RC %[1]s paused $?"
step %[1]s act sh -c '%[7]s'
rm -f /tmp/wait.%[1]s
wait $cpid; echo "RC %[1]s stopped $?"
show %[1]s FIRST /tmp/conv1.%[1]s
step %[1]s undo sh -c '%[8]s'
stepq %[1]s convert /tmp/conv2.%[1]s %[6]s
show %[1]s OUT /tmp/conv2.%[1]s
%[9]s
stepq %[1]s fsck-live /tmp/fsck.%[1]s e2fsck -fn /dev/mapper/%[1]s || show %[1]s FSCK /tmp/fsck.%[1]s
step %[1]s showkeys sh -c "dmsetup table --showkeys %[1]s | grep -q $(cat /etc/vm/keyB.hex)"
step %[1]s remove dmsetup remove %[1]s
step %[1]s reopen $PLAIN --key-file /etc/vm/keyB --size $DSECT $DEV %[1]sf
stepq %[1]s fsck-reopened /tmp/fsck.%[1]s e2fsck -fn /dev/mapper/%[1]sf || show %[1]s FSCK /tmp/fsck.%[1]s
step %[1]s mount-reopened mount -t ext4 /dev/mapper/%[1]sf /mnt
step %[1]s ballast sha256sum -c /tmp/ballast.%[1]s
umount /mnt
cryptsetup close %[1]sf
`, c.name, disk, aux, slot, umountEarly, conv,
		strings.ReplaceAll(c.act, "'", `'"'"'`), strings.ReplaceAll(c.undo, "'", `'"'"'`),
		umountLate)
}

// TestOnlineHostileNeighbours is issue 14, item 5, on the real kernel: a
// neighbour suspends NAME, leaves an inactive table on it, grows the
// device under it, or removes it, while cryptshift is between two windows
// of an online conversion. cryptshift must stop before its next table
// change with exit 4 and a message saying what changed and that nothing is
// lost; once the admin puts it back, the same command (after `recover
// --activate` for a removed NAME) finishes, and the filesystem is clean
// with every byte of its file, under the new key. All cases in one boot.
func TestOnlineHostileNeighbours(t *testing.T) {
	files, _, _ := cliKeys()
	var disks []string
	var script strings.Builder
	script.WriteString(". /etc/vm/lib.sh\n")
	aux := guestDisk(len(neighbourCases))
	for i, c := range neighbourCases {
		disks = append(disks, cliSparse(t, c.name+".img", cliDiskSize+2<<20))
		script.WriteString(neighbourScript(c, guestDisk(i), aux, i))
	}
	disks = append(disks, cliSparse(t, "aux.img", int64(len(neighbourCases))*cliSlotSize))
	script.WriteString("echo NEIGHBOUR-CASES-DONE\n")
	res := Run(t, Config{Image: cliImage, Disks: disks, Files: files, Script: script.String(), Timeout: 10 * time.Minute,
		ConsoleFile: cliConsole("neighbours")})
	if !strings.Contains(res.Console, "NEIGHBOUR-CASES-DONE") {
		t.Fatalf("the script did not finish\n%s", res.Tail(consoleTail))
	}
	got := rcs(res.Console)
	for _, c := range neighbourCases {
		ok := wantRC(t, got, c.name, "paused", 0)
		ok = wantRC(t, got, c.name, "act", 0) && ok
		ok = wantRC(t, got, c.name, "stopped", 4) && ok
		first := strings.Join(taggedLines(res.Console, "FIRST", c.name), "\n")
		for _, w := range []string{c.said, "changed by someone else", "nothing is lost"} {
			if !strings.Contains(first, w) {
				t.Errorf("%s: the stopped conversion did not say %q:\n%s", c.name, w, first)
				ok = false
			}
		}
		for _, s := range []string{"undo", "convert", "fsck-live", "showkeys", "remove", "reopen", "fsck-reopened", "mount-reopened", "ballast"} {
			ok = wantRC(t, got, c.name, s, 0) && ok
		}
		if !ok {
			t.Logf("%s: second convert:\n%s", c.name, strings.Join(taggedLines(res.Console, "OUT", c.name), "\n"))
			t.Logf("%s: fsck:\n%s", c.name, strings.Join(taggedLines(res.Console, "FSCK", c.name), "\n"))
		}
	}
}
