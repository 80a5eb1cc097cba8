package vm

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/tests/vm/internal/record"
)

// TestKillKeepsSyncedWrites kills qemu while the guest writes and fdatasyncs
// records in a loop, at a seeded pseudo-random moment after a given record was
// acknowledged, then boots again on the same image: every record the guest saw
// synced must be there, both to the host and to the second guest.
func TestKillKeepsSyncedWrites(t *testing.T) {
	seed := testkit.VMSeed(t)
	t.Logf("seed %d (the kill delay and the record contents derive from it; rerun with CRYPTSHIFT_VM_SEED)", seed)
	replayOnFailure(t, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	const killAt = 30
	delay := RandomDelay(rng, 0, 500*time.Millisecond)
	disk := newDisk(t, "disk.img", 8<<20, nil)

	first := Run(t, Config{
		Image:     testImage,
		Disks:     []string{disk},
		Script:    fmt.Sprintf("syncwriter -hold -dev /dev/vda -seed %d", seed),
		KillOn:    fmt.Sprintf("SYNCED %d", killAt),
		KillAfter: delay,
	})
	synced := lastSynced(first.Console)
	if synced < killAt {
		t.Fatalf("guest was killed before it reported record %d synced (last: %d)\n%s", killAt, synced, first.Tail(consoleTail))
	}
	t.Logf("killed %v after record %d synced; last record reported synced: %d", delay, killAt, synced)

	onHost := record.Prefix(readDisk(t, disk), seed)
	if onHost < uint64(synced)+1 {
		t.Fatalf("host sees %d intact records, but the guest had synced records 0..%d", onHost, synced)
	}

	second := Run(t, Config{
		Image:  testImage,
		Disks:  []string{disk},
		Script: fmt.Sprintf("syncwriter -verify -dev /dev/vda -seed %d", seed),
	})
	m := regexp.MustCompile(`(?m)^VERIFIED (\d+)$`).FindStringSubmatch(second.Console)
	if m == nil {
		t.Fatalf("second guest printed no VERIFIED line\n%s", second.Tail(consoleTail))
	}
	inGuest, _ := strconv.ParseUint(m[1], 10, 64)
	if inGuest != onHost {
		t.Fatalf("second guest verified %d records, host %d", inGuest, onHost)
	}
}

// lastSynced returns the highest record number the guest reported synced, -1 if none.
func lastSynced(console string) int {
	last := -1
	for _, m := range regexp.MustCompile(`(?m)^SYNCED (\d+)$`).FindAllStringSubmatch(console, -1) {
		if n, err := strconv.Atoi(m[1]); err == nil && n > last {
			last = n
		}
	}
	return last
}
