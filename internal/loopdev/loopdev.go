// Package loopdev attaches loop devices over memory: scratch block devices
// that a device-mapper table can sit on without touching any disk.
package loopdev

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Memory is a loop device over a memfd of a fixed size. The memfd starts
// sparse: only what is written takes memory, and Discard gives it back.
type Memory struct {
	mem *os.File
	dev *os.File
	// Devno is the loop device's "major:minor", as a dm table names it.
	Devno string
	// Path is its device node.
	Path string
}

// attachTries bounds the race with other users of /dev/loop-control: a
// free device found by LOOP_CTL_GET_FREE can be taken before we bind it.
const attachTries = 8

// NewMemory creates a sparse memfd of size bytes and binds a free loop
// device to it. The device detaches by itself once the last user (this
// process and any dm table over it) lets go (LO_FLAGS_AUTOCLEAR), so a
// crash leaves nothing behind but an unused number.
func NewMemory(name string, size int64) (*Memory, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("loopdev: memfd_create: %w", err)
	}
	mem := os.NewFile(uintptr(fd), "memfd:"+name)
	if err := mem.Truncate(size); err != nil {
		mem.Close()
		return nil, fmt.Errorf("loopdev: size the memfd: %w", err)
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		mem.Close()
		return nil, fmt.Errorf("loopdev: %w (is the loop module loaded?)", err)
	}
	defer ctl.Close()
	var lastErr error
	for range attachTries {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			mem.Close()
			return nil, fmt.Errorf("loopdev: LOOP_CTL_GET_FREE: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			mem.Close()
			return nil, fmt.Errorf("loopdev: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(mem.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		if err := unix.IoctlLoopConfigure(int(dev.Fd()), &cfg); err != nil {
			dev.Close()
			if errors.Is(err, unix.EBUSY) {
				lastErr = err
				continue // taken meanwhile: ask for another
			}
			mem.Close()
			return nil, fmt.Errorf("loopdev: LOOP_CONFIGURE %s: %w", path, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(dev.Fd()), &st); err != nil {
			m := &Memory{mem: mem, dev: dev}
			m.Close()
			return nil, fmt.Errorf("loopdev: stat %s: %w", path, err)
		}
		return &Memory{mem: mem, dev: dev, Path: path,
			Devno: fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))}, nil
	}
	mem.Close()
	return nil, fmt.Errorf("loopdev: no free loop device after %d tries: %w", attachTries, lastErr)
}

// ReadAt reads the memory behind the device: what writes through it (and
// through any table over it) stored, once they have returned.
func (m *Memory) ReadAt(p []byte, off int64) (int, error) { return m.mem.ReadAt(p, off) }

// Discard frees the memory of [off, off+n).
func (m *Memory) Discard(off, n int64) error {
	if err := unix.Fallocate(int(m.mem.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
		return fmt.Errorf("loopdev: free scratch memory: %w", err)
	}
	return nil
}

// Close unbinds the device (at once, or when the last table over it goes)
// and frees the memory.
func (m *Memory) Close() error {
	var errs []error
	if m.dev != nil {
		// With a table still over it the kernel only marks it to detach
		// on last close (AUTOCLEAR already says so); ENXIO: gone already.
		if err := unix.IoctlSetInt(int(m.dev.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
			errs = append(errs, fmt.Errorf("loopdev: LOOP_CLR_FD %s: %w", m.Path, err))
		}
		errs = append(errs, m.dev.Close())
		m.dev = nil
	}
	if m.mem != nil {
		errs = append(errs, m.mem.Close())
		m.mem = nil
	}
	return errors.Join(errs...)
}

// WriteAt stores p in the memory behind the device, for reads through it.
func (m *Memory) WriteAt(p []byte, off int64) (int, error) { return m.mem.WriteAt(p, off) }
