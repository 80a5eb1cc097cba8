package errclass

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
)

// deviceKind stands for a lower package's sentinel that is a kind of
// Device (blockdev's are).
type deviceKind string

func (e deviceKind) Error() string { return string(e) }
func (e deviceKind) Unwrap() error { return Device }

func TestCode(t *testing.T) {
	inUse := deviceKind("in use")
	cases := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("something unexpected"), 1},
		{fmt.Errorf("%w: --window: bad", Usage), 2},
		{fmt.Errorf("resume: %w: the new key does not match", WrongKey), 3},
		{fmt.Errorf("%w: device too small", Device), 4},
		{fmt.Errorf("open: %w", inUse), 4},
		{fmt.Errorf("%w: header authentication failed", Header), 5},
		{fmt.Errorf("%w: --window 1 (recorded 2)", Conflict), 6},
		{IOf("write", syscall.EIO), 7},
		// The outermost class wins over one it wraps: a failure on an open
		// device is I/O, not "device unusable".
		{IOf("write", inUse), 7},
		{fmt.Errorf("%w: open metadata: %w", Device, IOf("read", syscall.EIO)), 4},
		{fmt.Errorf("%w after 3 of 8 windows", Paused), 8},
		{fmt.Errorf("recover: %w", Damaged), 9},
		{fmt.Errorf("%w: resilience none", Refused), 10},
	}
	for _, c := range cases {
		if got := Code(c.err); got != c.want {
			t.Errorf("Code(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// The codes are a contract: each class has its own, and the help lists
// every one of them.
func TestCodesDistinctAndDocumented(t *testing.T) {
	seen := map[int]error{}
	for _, e := range Table {
		if prev, dup := seen[e.Code]; dup {
			t.Errorf("exit code %d used for both %v and %v", e.Code, prev, e.Class)
		}
		seen[e.Code] = e.Class
	}
	help := Help()
	for code := 0; code <= 10; code++ {
		if !strings.Contains(help, fmt.Sprintf("\n   %2d  ", code)) {
			t.Errorf("exit code %d missing from the help epilogue:\n%s", code, help)
		}
	}
}
