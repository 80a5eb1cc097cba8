package vm

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// replayOnFailure makes a failing seeded test print, at its end, the one
// command that replays it, as a line of its own starting with "vm replay:".
// scripts/test.sh repeats those lines after the log's tail, so CI's summary
// carries them even when the seed was logged thousands of lines earlier.
func replayOnFailure(t *testing.T, seed uint64) {
	t.Cleanup(func() {
		if t.Failed() {
			fmt.Printf("vm replay: CRYPTSHIFT_VM_SEED=%d go test -count=1 -v ./tests/vm -run '%s'\n", seed, runPattern(t.Name()))
		}
	})
}

// runPattern is the -run pattern that selects exactly the test named name
// (subtests included: each level is matched on its own).
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

func TestRunPattern(t *testing.T) {
	for name, want := range map[string]string{
		"TestCrashInterop":          "^TestCrashInterop$",
		"TestOnlineCLIKill/issue17": "^TestOnlineCLIKill$/^issue17$",
		"TestX/a+b":                 `^TestX$/^a\+b$`,
	} {
		if got := runPattern(name); got != want {
			t.Errorf("runPattern(%q) = %q, want %q", name, got, want)
		}
	}
}
