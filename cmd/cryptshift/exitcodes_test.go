package main

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
)

func TestExitCode(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("something unexpected"), 1},
		{usageErr("--window: bad"), 2},
		{fmt.Errorf("resume: %w: the new key does not match", engine.ErrWrongKey), 3},
		{fmt.Errorf("%w: device too small", engine.ErrDevice), 4},
		{fmt.Errorf("open: %w", blockdev.ErrInUse), 4},
		{fmt.Errorf("open: %w", blockdev.ErrNotFound), 4},
		{fmt.Errorf("open: %w", blockdev.ErrPermission), 4},
		{fmt.Errorf("open: %w", blockdev.ErrNotBlockOrFile), 4},
		{fmt.Errorf("%w: header authentication failed", engine.ErrHeader), 5},
		{fmt.Errorf("%w: --window 1 (recorded 2)", engine.ErrConflict), 6},
		{fmt.Errorf("write: %w: %w", engine.ErrIO, syscall.EIO), 7},
		// An engine class wins over a blockdev class it wraps: a failure
		// on an open device is I/O, not "device unusable".
		{fmt.Errorf("write: %w: %w", engine.ErrIO, blockdev.ErrPermission), 7},
		{reported{fmt.Errorf("%w after 3 of 8 windows", engine.ErrPaused)}, 8},
		{&engine.DamageError{Window: 2, Reason: "torn"}, 9},
		{fmt.Errorf("%w: resilience none", engine.ErrRefused), 10},
	}
	for _, c := range cases {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// The codes are a contract: each class has its own, and the help lists
// every one of them.
func TestExitCodesDistinctAndDocumented(t *testing.T) {
	seen := map[int]error{}
	help := exitCodeHelp()
	for _, e := range exitTable {
		if e.what == "" {
			continue
		}
		if prev, dup := seen[e.code]; dup {
			t.Errorf("exit code %d used for both %v and %v", e.code, prev, e.class)
		}
		seen[e.code] = e.class
	}
	for code := 0; code <= 10; code++ {
		if !strings.Contains(help, fmt.Sprintf("\n   %2d  ", code)) {
			t.Errorf("exit code %d missing from the help epilogue:\n%s", code, help)
		}
	}
}

func TestErrorLineIsOneLine(t *testing.T) {
	got := errorLine(fmt.Errorf("verify: %w", errors.New("first\nsecond  third\n")))
	if want := "cryptshift: verify: first; second third"; got != want {
		t.Fatalf("errorLine = %q, want %q", got, want)
	}
}
