package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/internal/secret"
)

// hardenProcess is set by main: the process that runs a command reading
// keys protects them (protectKeys). run, which the in-process tests call,
// leaves the test binary as it is: locking all of a test binary's memory,
// race detector shadow included, is not what those tests are about (the
// end-to-end tests check the built binary).
var hardenProcess bool

// protectKeys is the Before of every command that reads keys (convert,
// recover, verify; the online guard and worker are convert): before the
// first key is read, the process stops being dumpable (no core file, no
// ptrace or /proc/PID/mem for other processes of the user) and locks its
// memory so no key is written to swap. A failed lock is fatal for
// convert --online, which needs it not to stall on its own window
// (docs/DESIGN.md, "Running from the device being converted"), and a
// warning elsewhere ("Key hygiene" says why).
func protectKeys(c *cli.Context) error {
	if !hardenProcess {
		return nil
	}
	if err := secret.NoCoreDumps(); err != nil {
		return fmt.Errorf("%w: keep keys out of core dumps: %w", errclass.Device, err)
	}
	if err := dm.LockMemory(); err != nil {
		if c.Command.Name == "convert" && c.String("online") != "" {
			return fmt.Errorf("%w: lock memory (needed so the tool cannot stall on the window it holds): %w", errclass.Device, err)
		}
		if swapOn("/proc/swaps") {
			fmt.Fprintf(c.App.ErrWriter, "cryptshift: warning: cannot lock memory (%v): keys may be written to swap; raise the memlock limit (ulimit -l, LimitMEMLOCK=) or use encrypted swap\n", err)
		}
	}
	return nil
}

// swapOn reports whether any swap area is active (a line after the
// header of /proc/swaps); unreadable counts as on. Without swap an
// unlocked key cannot reach a disk, so there is nothing to warn about.
func swapOn(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return true
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return len(lines) > 1
}
