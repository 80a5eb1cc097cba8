package secret

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// NoCoreDumps makes the process undumpable (PR_SET_DUMPABLE 0: no core
// file, and /proc/PID/mem and ptrace are closed to other processes of the
// same user) and sets RLIMIT_CORE to 0, which children inherit, as a
// second lock for a process that becomes dumpable again (an exec of a
// readable binary resets the flag). Call it before the first key is read.
func NoCoreDumps() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl PR_SET_DUMPABLE: %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("setrlimit RLIMIT_CORE: %w", err)
	}
	return nil
}

// Dumpable reports the process's PR_GET_DUMPABLE flag.
func Dumpable() (bool, error) {
	v, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		return false, err
	}
	return v != 0, nil
}
