package dm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	devmapper "github.com/anatol/devmapper.go"
	"golang.org/x/sys/unix"
)

// SuspendFlags select how a suspend treats I/O and the filesystem.
type SuspendFlags uint32

const (
	// NoFlush: do not wait for I/O the target would requeue; with it, a
	// table swap of a device in use never stalls on a device below.
	NoFlush SuspendFlags = unix.DM_NOFLUSH_FLAG
	// SkipLockfs: do not freeze the filesystem on the device. Freezing
	// would write it out and block every writer for the whole suspend,
	// and a filesystem the tool itself runs from could deadlock.
	SkipLockfs SuspendFlags = unix.DM_SKIP_LOCKFS_FLAG
)

// Create creates name with uuid, loads table and resumes it. On failure
// after the device was created, it is removed again.
func Create(name, uuid string, table []Target) error {
	if err := CheckTable(table); err != nil {
		return err
	}
	if err := devmapper.Create(name, uuid); err != nil {
		return fmt.Errorf("dm: create %s: %w", name, err)
	}
	if err := loadTable(name, table, false); err != nil {
		_ = devmapper.Remove(name)
		return err
	}
	// Our own resume, not the library's: it carries the udev flags of
	// private devices (resumeCookie).
	if err := ResumeFlags(name, 0); err != nil {
		_ = devmapper.Remove(name)
		return err
	}
	return nil
}

// Load loads table as name's inactive table; the next resume makes it live.
func Load(name string, table []Target) error {
	return loadTable(name, table, false)
}

// Suspend suspends name: I/O in flight completes and new I/O queues.
func Suspend(name string, flags SuspendFlags) error {
	if err := suspendResume(name, unix.DM_SUSPEND_FLAG|uint32(flags)); err != nil {
		return fmt.Errorf("dm: suspend %s: %w", name, err)
	}
	return nil
}

// Resume resumes name, swapping in its inactive table if one is loaded.
func Resume(name string) error {
	if err := devmapper.Resume(name); err != nil {
		return fmt.Errorf("dm: resume %s: %w", name, err)
	}
	return nil
}

// ResumeFlags resumes like Resume. If name is not suspended but has an
// inactive table, the kernel suspends it first for the swap, with flags:
// passing NoFlush|SkipLockfs keeps that implicit suspend from freezing the
// filesystem.
func ResumeFlags(name string, flags SuspendFlags) error {
	if err := suspendResume(name, uint32(flags)); err != nil {
		return fmt.Errorf("dm: resume %s: %w", name, err)
	}
	return nil
}

// Remove removes name; it fails with EBUSY while the device is open.
func Remove(name string) error {
	if err := devmapper.Remove(name); err != nil {
		return fmt.Errorf("dm: remove %s: %w", name, err)
	}
	return nil
}

// DevInfo is the state of a device-mapper device.
type DevInfo struct {
	Exists       bool
	Name, UUID   string
	Suspended    bool
	OpenCount    int
	Major, Minor uint32
	TargetCount  int
	LiveTable    bool
	Inactive     bool // an inactive table is loaded
}

// Info returns name's state; a device that does not exist is reported with
// Exists false and no error.
func Info(name string) (DevInfo, error) {
	di, err := devmapper.InfoByName(name)
	if errors.Is(err, unix.ENXIO) {
		return DevInfo{Name: name}, nil
	}
	if err != nil {
		return DevInfo{}, fmt.Errorf("dm: info %s: %w", name, err)
	}
	return DevInfo{
		Exists: true, Name: di.Name, UUID: di.UUID,
		Suspended:   di.Flags&unix.DM_SUSPEND_FLAG != 0,
		OpenCount:   int(di.OpenCount),
		Major:       unix.Major(di.DevNo),
		Minor:       unix.Minor(di.DevNo),
		TargetCount: int(di.TargetsNum),
		LiveTable:   di.Flags&unix.DM_ACTIVE_PRESENT_FLAG != 0,
		Inactive:    di.Flags&unix.DM_INACTIVE_PRESENT_FLAG != 0,
	}, nil
}

// Table returns name's live table, crypt keys included.
func Table(name string) ([]Target, error) {
	return tableStatus(name, false)
}

// InactiveTable returns the table loaded but not yet resumed, if any.
func InactiveTable(name string) ([]Target, error) {
	return tableStatus(name, true)
}

// List returns the names of all device-mapper devices.
func List() ([]string, error) {
	items, err := devmapper.List()
	if err != nil {
		return nil, fmt.Errorf("dm: list: %w", err)
	}
	var out []string
	for _, it := range items {
		if it.Name != "" {
			out = append(out, it.Name)
		}
	}
	return out, nil
}

// mapperDir is where DevicePath creates nodes; tests may point it elsewhere.
var mapperDir = "/dev/mapper"

// DevicePath returns a block device node for name. Without udev nothing
// creates /dev/mapper/NAME, but devtmpfs creates /dev/dm-N: that is used
// when it is the right device, otherwise /dev/mapper/NAME is created (or
// fixed) from the device number.
func DevicePath(name string) (string, error) {
	inf, err := Info(name)
	if err != nil {
		return "", err
	}
	if !inf.Exists {
		return "", fmt.Errorf("dm: no device %s", name)
	}
	dev := unix.Mkdev(inf.Major, inf.Minor)
	for _, p := range []string{filepath.Join(mapperDir, name), "/dev/dm-" + strconv.FormatUint(uint64(inf.Minor), 10)} {
		if isBlockDev(p, dev) {
			return p, nil
		}
	}
	p := filepath.Join(mapperDir, name)
	if err := os.MkdirAll(mapperDir, 0o755); err != nil {
		return "", fmt.Errorf("dm: %w", err)
	}
	// A stale node of another device may sit there (a name reused after a
	// crash): replace it rather than hand out the wrong device.
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("dm: replace %s: %w", p, err)
	}
	if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(dev)); err != nil {
		return "", fmt.Errorf("dm: mknod %s: %w", p, err)
	}
	return p, nil
}

func isBlockDev(p string, dev uint64) bool {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFBLK && uint64(st.Rdev) == dev
}

// BlockDevicePath finds a node for a block device given as "major:minor"
// (as tables print it) or as a path. devtmpfs names it in
// /sys/dev/block/M:m/uevent; failing that, a node is made in dir.
func BlockDevicePath(dev, dir string) (string, error) {
	if strings.HasPrefix(dev, "/") {
		return dev, nil
	}
	maj, min, err := parseDevNo(dev)
	if err != nil {
		return "", err
	}
	want := unix.Mkdev(maj, min)
	if b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", maj, min)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if n, ok := strings.CutPrefix(line, "DEVNAME="); ok {
				p := "/dev/" + n
				if isBlockDev(p, want) {
					return p, nil
				}
			}
		}
	}
	if dir == "" {
		return "", fmt.Errorf("dm: no node for block device %s", dev)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("dm: %w", err)
	}
	p := filepath.Join(dir, fmt.Sprintf("blk-%d-%d", maj, min))
	if isBlockDev(p, want) {
		return p, nil
	}
	_ = os.Remove(p)
	if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(want)); err != nil {
		return "", fmt.Errorf("dm: mknod %s: %w", p, err)
	}
	return p, nil
}

func parseDevNo(s string) (uint32, uint32, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("dm: device %q is neither major:minor nor a path", s)
	}
	maj, err1 := strconv.ParseUint(a, 10, 32)
	min, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("dm: device %q is neither major:minor nor a path", s)
	}
	return uint32(maj), uint32(min), nil
}

// DevNo returns "major:minor" of a block device node, the form a table
// needs to refer to it independently of paths.
func DevNo(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", fmt.Errorf("dm: %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("dm: %s is not a block device", path)
	}
	return fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))), nil
}
