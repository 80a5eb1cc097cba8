package vm

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/testkit"
)

var vmReplayStates = flag.Int("vm.replay-states", 200, "TestOnlineCLILogWrites: crash states (a flush, then a seeded subset of the writes after it, some torn) built from the recorded conversion and checked")

// Layout of the logged data disk, in 512-byte sectors: NAME's data, the
// writer's fsync log, the conversion's metadata. All three sit under the
// log-writes target, so every replayed state has them as of the same
// instant.
const (
	lwDataSect  = cliDataSize / 512
	lwLogSect   = lwDataSect
	lwMetaSect  = lwDataSect + 8192
	lwTotalSect = lwDataSect + 2*8192
	lwLogDisk   = 192 << 20
)

// TestOnlineCLILogWrites is issue 5, scenario 3, and issue 14, item 2: a
// volatile disk cache lost on the real kernel. One online conversion (key
// A to key B, journal) with the writer fsyncing files runs on a stack
// whose bottom is dm-log-writes, which records every write, flush and FUA.
// From the log the host builds crash states as CrashMonkey does
// (lwstates.go): everything up to a barrier, then a seeded subset of the
// writes after it, some torn at sector granularity. In a few more boots
// the guest builds each state on a snapshot of the starting image moved
// forward to its barrier (lwcheck_test.go), and each must recover with
// `recover --activate`, mount, keep every fsync the writer saw
// acknowledged (its log is in the state too), pass e2fsck and `cryptshift
// verify --online`.
func TestOnlineCLILogWrites(t *testing.T) {
	start := time.Now()
	files, _, _ := cliKeys()
	dataImg := cliSparse(t, "data.img", lwTotalSect*512)
	base := cliSparse(t, "base.img", lwTotalSect*512) // the data disk before logging started: zeros
	logImg := cliSparse(t, "log.img", lwLogDisk)
	rec := Run(t, Config{
		Image: cliImage, Disks: []string{dataImg, logImg}, Files: files, Timeout: 10 * time.Minute, ConsoleFile: cliConsole("logwrites-record"),
		Script: fmt.Sprintf(`. /etc/vm/lib.sh
step r lw dmsetup create lw --table "0 %[1]d log-writes /dev/vda /dev/vdb"
dmsetup mknodes
dmsetup create lwl --table "0 8192 linear /dev/mapper/lw %[2]d"
dmsetup create lwm --table "0 8192 linear /dev/mapper/lw %[3]d"
# --shared: the slices above already hold lw.
step r open $PLAIN --shared --key-file /etc/vm/keyA --size $DSECT /dev/mapper/lw data || exit 1
dmsetup mknodes
step r mkfs mkfs.ext4 -q -F -E nodiscard /dev/mapper/data || exit 1
step r mount mount -t ext4 /dev/mapper/data /mnt || exit 1
mkdir /mnt/w
onlineguest writer -dir /mnt/w -log /dev/mapper/lwl -seed 9 > /tmp/writer 2>&1 &
wpid=$!
sleep 2
dmsetup message lw 0 mark convert-start
stepq r convert /tmp/conv cryptshift convert --online data --new-key-file /etc/vm/keyB --metadata /dev/mapper/lwm --window 1M --progress plain /dev/mapper/lw
dmsetup message lw 0 mark convert-end
show r OUT /tmp/conv
kill -TERM $wpid
wait $wpid
cat /tmp/writer
step r umount umount /mnt
dmsetup remove data lwl lwm
dmsetup status lw | sed 's/^/LWSTATUS /'
# Removing the target writes the final super with the entry count.
step r remove-lw dmsetup remove lw
`, lwTotalSect, lwLogSect, lwMetaSect),
	})
	got := rcs(rec.Console)
	for _, s := range []string{"lw", "open", "mkfs", "mount", "convert", "umount", "remove-lw"} {
		if !wantRC(t, got, "r", s, 0) {
			t.Fatalf("recording failed\n%s", rec.Tail(consoleTail))
		}
	}
	stallLines(t, rec.Console, "r")
	if m := regexp.MustCompile(`(?m)^LWSTATUS .*$`).FindString(rec.Console); m != "" {
		t.Log(m)
		if strings.Contains(m, "logging_disabled") {
			t.Fatalf("dm-log-writes stopped logging (log device full?): %s", m)
		}
	}

	f, err := os.Open(logImg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := ParseWriteLog(f)
	if err != nil {
		t.Fatal(err)
	}
	from, to := l.Mark("convert-start"), l.Mark("convert-end")
	if from < 0 || to < 0 {
		t.Fatalf("marks convert-start %d, convert-end %d not both in the log of %d entries", from, to, len(l.Entries))
	}
	epochs, err := l.Epochs(from, to)
	if err != nil {
		t.Fatalf("the log does not have the shape the crash states rely on: %v", err)
	}
	if len(l.Flushes(from, to)) == 0 {
		t.Fatalf("no flush during the conversion: the log proves nothing")
	}
	seed := testkit.VMSeed(t)
	replayOnFailure(t, seed)
	states := l.ChooseCrashStates(rand.New(rand.NewPCG(seed, 0x63726173)), epochs, *vmReplayStates)
	if len(states) < *vmReplayStates {
		t.Fatalf("the log has %d epochs, %d with writes; only %d distinct crash states of %d drawn", len(epochs), busyEpochs(epochs), len(states), *vmReplayStates)
	}
	torn, kept, of := 0, 0, 0
	for _, st := range states {
		torn += st.Torn
		kept += len(st.Writes)
		of += st.Of
	}
	t.Logf("log: %d entries, %d barriers during the conversion (entries %d..%d), %d with writes after them; seed %d chose %d crash states keeping %d of their %d writes, %d of them torn",
		len(l.Entries), len(epochs), from, to, busyEpochs(epochs), seed, len(states), kept, of, torn)
	checked := checkCrashStates(t, l, base, logImg, states, files)
	replayedCrashStates.Add(int64(checked))
	t.Logf("crash states: %d of %d recovered and checked; VM %v, test %v", checked, len(states),
		rec.Duration.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
