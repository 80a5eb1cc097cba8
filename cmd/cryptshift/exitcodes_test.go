package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
)

// The class table itself is tested in errclass; here, what the CLI adds:
// a guarded worker's exit status passes through, and blockdev's sentinels
// are device errors.
func TestExitCode(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{reported{exitCodeError(7)}, 7},
		{fmt.Errorf("open: %w", blockdev.ErrInUse), 4},
		{fmt.Errorf("open: %w", blockdev.ErrNotFound), 4},
		{fmt.Errorf("open: %w", blockdev.ErrPermission), 4},
		{fmt.Errorf("open: %w", blockdev.ErrNotBlockOrFile), 4},
		{errclass.IOf("write", blockdev.ErrPermission), 7},
		{reported{fmt.Errorf("%w after 3 of 8 windows", errclass.Paused)}, 8},
		{usageErr("--window: bad"), 2},
	}
	for _, c := range cases {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func TestErrorLineIsOneLine(t *testing.T) {
	got := errorLine(fmt.Errorf("verify: %w", errors.New("first\nsecond  third\n")))
	if want := "cryptshift: verify: first; second third"; got != want {
		t.Fatalf("errorLine = %q, want %q", got, want)
	}
}
