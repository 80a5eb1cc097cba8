package dm

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// LockMemory locks every page of the process, present and future, in RAM.
// Online, the tool may be converting the filesystem it runs from: a page
// fault that reads the binary or swap from a held window would wait for
// the window the same process is to release, forever.
func LockMemory() error {
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE); err != nil {
		return fmt.Errorf("dm: lock memory (mlockall): %w", err)
	}
	return nil
}

// UnlockMemory undoes LockMemory.
func UnlockMemory() error {
	if err := unix.Munlockall(); err != nil {
		return fmt.Errorf("dm: unlock memory: %w", err)
	}
	return nil
}
