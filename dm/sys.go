package dm

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// sysControl is the kernel's device-mapper.
type sysControl struct{}

func (sysControl) create(name, uuid string, table []Target) error { return Create(name, uuid, table) }
func (sysControl) load(name string, table []Target) error         { return Load(name, table) }
func (sysControl) suspend(name string, f SuspendFlags) error      { return Suspend(name, f) }
func (sysControl) resume(name string, f SuspendFlags) error       { return ResumeFlags(name, f) }
func (sysControl) remove(name string) error                       { return Remove(name) }
func (sysControl) info(name string) (DevInfo, error)              { return Info(name) }
func (sysControl) table(name string) ([]Target, error)            { return Table(name) }

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
