package vm

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
)

// replayedCrashStates counts the lost-cache crash states built from
// dm-log-writes recordings that recovered and passed every check.
var replayedCrashStates atomic.Int64

// TestMain prints the suite's totals after every test ran, as lines of
// their own that scripts/test.sh shows in CI's summary: power cuts dealt
// (counted by Boot when a kill came while a guest still ran) and crash
// states replayed and checked.
func TestMain(m *testing.M) {
	code := m.Run()
	fmt.Printf("vm power cuts: %d\n", PowerCuts())
	fmt.Printf("vm replayed crash states: %d\n", replayedCrashStates.Load())
	os.Exit(code)
}
