package vm

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// flakeyFailFrom is the first window whose range fails writes. A flush
// goes to every target of the table, and dm-flakey fails it too, so the
// conversion's first flush after the swap fails whatever window it is on:
// the fault hits mid-conversion, at the window in progress.
const flakeyFailFrom = 12

// TestOnlineCLIWriteError is issue 5, scenario 4: the data disk is seen
// through a dm device ("lower") whose table is swapped, mid-conversion, to
// one failing every write from window flakeyFailFrom on (dm-flakey
// error_writes). The online conversion must stop with exit 7 and a clear
// message; while the fault lasts, every chunk of NAME that reads back must
// hold what NAME held before the conversion (no window served with a wrong
// key), the held window must fail rather than return garbage, and files
// outside it must still read correctly. Once the fault clears, `recover
// --activate NAME` and the resumed conversion finish with the data intact.
func TestOnlineCLIWriteError(t *testing.T) {
	start := time.Now()
	files, _, _ := cliKeys()
	failSect := flakeyFailFrom * cliWindow / 512
	script := `. /etc/vm/lib.sh
total=$(blockdev --getsz /dev/vda)
dmsetup create lower --table "0 $total linear /dev/vda 0"
dmsetup create fm --table "0 8192 linear /dev/vdb 8192"
dmsetup mknodes
$PLAIN --key-file /etc/vm/keyA --size $DSECT /dev/mapper/lower data
# 4 KiB blocks, few inodes and no journal keep all of the filesystem's
# metadata in the first window, which is converted before the fault: a
# metadata read error would make ext4 record it in its superblock (even
# mounted read-only), changing window 0 behind the test's back.
step f mkfs mkfs.ext4 -q -F -b 4096 -N 64 -O ^has_journal /dev/mapper/data
step f mount mount -t ext4 /dev/mapper/data /mnt
# Files spread over the whole filesystem.
i=0
while [ $i -lt 12 ]; do dd if=/dev/urandom of=/mnt/f$i bs=1M count=1 2>/dev/null; i=$((i + 1)); done
(cd /mnt && sha256sum f* > /tmp/files.sum)
step f umount umount /mnt
dd if=/dev/mapper/data of=/tmp/ref bs=1M 2>/dev/null
step f mount-ro mount -t ext4 -o ro /dev/mapper/data /mnt
cryptshift convert --online data --new-key-file /etc/vm/keyB --metadata /dev/mapper/fm --window 1M --progress plain /dev/mapper/lower > /tmp/conv 2>&1 &
cpid=$!
done=0
while [ "$done" -lt 1 ]; do
	sleep 0.2
	done=$(cryptshift status --json --metadata /dev/mapper/fm /dev/mapper/lower 2>/dev/null | grep windows_done | tr -dc 0-9)
	[ -n "$done" ] || done=0
done
echo "FAULT-AT windows_done=$done"
printf '0 ` + strconv.Itoa(failSect) + ` linear /dev/vda 0\n` + strconv.Itoa(failSect) + ` %d flakey /dev/vda ` + strconv.Itoa(failSect) + ` 0 1 1 error_writes\n' $((total - ` + strconv.Itoa(failSect) + `)) | dmsetup load lower
step f fault sh -c "dmsetup suspend lower && dmsetup resume lower"
dmsetup table lower | sed 's/^/LOWER /'
wait $cpid
echo "RC f convert $?"
show f OUT /tmp/conv
dmsetup table data | sed 's/^/TABLE /'
echo 3 > /proc/sys/vm/drop_caches
stepq f chunks-fault /tmp/chunks timeout 120 cliguest chunks -dev /dev/mapper/data -ref /tmp/ref
cat /tmp/chunks
# A file that reads must read right; one in the held window must fail.
ok=0 bad=0 unread=0
while read -r sum f; do
	if cat /mnt/$f > /tmp/one 2>/dev/null; then
		if [ "$(sha256sum < /tmp/one | cut -d' ' -f1)" = "$sum" ]; then ok=$((ok + 1)); else bad=$((bad + 1)); echo "FILE-WRONG $f"; fi
	else
		unread=$((unread + 1))
	fi
done < /tmp/files.sum
echo "FILES-OK $ok"
echo "FILES-MISMATCH $bad"
echo "FILES-UNREADABLE $unread"
step f umount-ro umount /mnt
echo "0 $total linear /dev/vda 0" | dmsetup load lower
step f clear sh -c "dmsetup suspend lower && dmsetup resume lower"
step f recover cryptshift recover --activate data --old-key-file /etc/vm/keyA --new-key-file /etc/vm/keyB --metadata /dev/mapper/fm /dev/mapper/lower
stepq f resume /tmp/conv2 cryptshift convert --online data --new-key-file /etc/vm/keyB --metadata /dev/mapper/fm --window 1M --progress plain /dev/mapper/lower
show f OUT2 /tmp/conv2
stepq f chunks-after /tmp/chunks cliguest chunks -dev /dev/mapper/data -ref /tmp/ref
sed 's/^/AFTER /' /tmp/chunks
stepq f fsck /tmp/fsck e2fsck -fn /dev/mapper/data
step f mount-final mount -t ext4 -o ro /dev/mapper/data /mnt
(cd /mnt && step f files sha256sum -c /tmp/files.sum)
umount /mnt
echo "TARGETS f $(dmsetup table data | wc -l)"
step f showkeys sh -c "dmsetup table --showkeys data | grep -q $(cat /etc/vm/keyB.hex)"
echo FLAKEY-DONE
`
	res := Run(t, Config{
		Image:  cliImage,
		Disks:  []string{cliSparse(t, "data.img", cliDiskSize), cliSparse(t, "aux.img", cliSlotSize)},
		Files:  files,
		Script: script,
	})
	if !strings.Contains(res.Console, "FLAKEY-DONE") {
		t.Fatalf("the script did not finish\n%s", res.Tail(consoleTail))
	}
	got := rcs(res.Console)
	for _, s := range []string{"mkfs", "mount", "umount", "mount-ro", "fault", "chunks-fault", "umount-ro", "clear",
		"recover", "resume", "chunks-after", "fsck", "mount-final", "files", "showkeys"} {
		wantRC(t, got, "f", s, 0)
	}
	out := strings.Join(taggedLines(res.Console, "OUT", "f"), "\n")
	t.Logf("convert under the fault:\n%s", out)
	t.Logf("%s", strings.Join(regexp.MustCompile(`(?m)^(FAULT-AT|LOWER|TABLE|CHUNKS|FILES-OK|FILES-MISMATCH|FILES-UNREADABLE|FILE-WRONG|AFTER CHUNKS) .*$`).FindAllString(res.Console, -1), "\n"))
	if wantRC(t, got, "f", "convert", 7) {
		last := out[strings.LastIndex(out, "\n")+1:]
		if !strings.HasPrefix(last, "cryptshift: ") || !strings.Contains(strings.ToLower(last), "i/o") && !strings.Contains(strings.ToLower(last), "input/output") {
			t.Errorf("the conversion did not end with a one-line I/O error message: %q", last)
		}
	}
	// While the fault lasts: the held window fails, every other chunk reads
	// back exactly what NAME served before (chunks exits non-zero on any
	// chunk that reads back other data).
	held := regexp.MustCompile(`ABORT: window (\d+) `).FindStringSubmatch(out)
	if held == nil {
		t.Errorf("the conversion did not report which window it aborted on")
	} else if m := regexp.MustCompile(`(?m)^CHUNKS total=(\d+) failed=\[([^\]]*)\] wrong=\[([^\]]*)\]$`).FindStringSubmatch(res.Console); m == nil {
		t.Errorf("no chunk report under the fault")
	} else if m[2] != held[1] || m[3] != "" {
		t.Errorf("under the fault, chunks failed=[%s] wrong=[%s]; want only the held window %s failing and none wrong", m[2], m[3], held[1])
	} else {
		t.Logf("under the fault, window %s fails I/O and the other chunks of %s read back as before", held[1], m[1])
	}
	if m := regexp.MustCompile(`(?m)^FILES-MISMATCH (\d+)$`).FindStringSubmatch(res.Console); m == nil || m[1] != "0" {
		t.Errorf("a file read back other data under the fault: %v", m)
	}
	if m := regexp.MustCompile(`(?m)^FILES-OK (\d+)$`).FindStringSubmatch(res.Console); m == nil || m[1] == "0" {
		t.Errorf("no file outside the held window read back correctly under the fault: %v", m)
	} else {
		t.Logf("under the fault, %s of 12 files read back correctly", m[1])
	}
	if m := regexp.MustCompile(`(?m)^AFTER CHUNKS total=\d+ failed=\[([^\]]*)\] wrong=\[([^\]]*)\]$`).FindStringSubmatch(res.Console); m == nil || m[1] != "" || m[2] != "" {
		t.Errorf("after recovery and the resumed conversion, NAME does not serve what it served before: %v", m)
	}
	if m := regexp.MustCompile(`(?m)^TARGETS f (\d+)$`).FindStringSubmatch(res.Console); m == nil || m[1] != "1" {
		t.Errorf("the live table does not have exactly one target at the end: %v", m)
	}
	t.Logf("write error scenario: VM %v, test %v", res.Duration.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
