package online

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/errclass"
)

// checkMetadataPlace refuses a --metadata file or device that lives on
// NAME or anything stacked on it (a partition, an LVM volume or another
// mapping on top of NAME), or on DEVICE or a partition of it: once a window
// is held, a metadata write that has to go through the held window waits
// for the release that waits for the write. Another mapping over DEVICE
// beside NAME (a linear of a region outside the data, as the log-writes
// test records the metadata with) does not pass through the hold, so it is
// allowed. Run before anything is opened for writing.
func checkMetadataPlace(meta, name, devno string) error {
	if meta == "" {
		return nil
	}
	inf, err := dm.Info(name)
	if err != nil {
		return fmt.Errorf("%w: %w", errclass.Device, err)
	}
	var roots []string
	if inf.Exists {
		roots = append(roots, fmt.Sprintf("%d:%d", inf.Major, inf.Minor))
	}
	at, err := metadataDevice(meta, "/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("%w: --metadata %s: %w", errclass.Device, meta, err)
	}
	stack := stackedOn("/sys", roots, true)
	for d, why := range stackedOn("/sys", []string{devno}, false) {
		stack[d] = why
	}
	if why := onStack(at, stack); why != "" {
		return fmt.Errorf("%w: --metadata %s lives on %s, %s: its writes would wait on the window the conversion holds (a deadlock); put it on another device", errclass.Usage, meta, at, why)
	}
	return nil
}

// onStack says why dev is one of the devices of stack, or "".
func onStack(dev string, stack map[string]string) string {
	return stack[dev]
}

// stackedOn returns roots and every block device stacked on them, found
// through sysfs (partitions, and with holders set, device-mapper and md on
// top), each with how it relates to the roots. Unreadable entries are
// skipped: a device that cannot be listed has nothing stacked that sysfs
// shows.
func stackedOn(sysfs string, roots []string, holders bool) map[string]string {
	seen := map[string]string{}
	queue := []string{}
	for _, r := range roots {
		if _, ok := seen[r]; !ok {
			seen[r] = "which is being converted"
			queue = append(queue, r)
		}
	}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		base := filepath.Join(sysfs, "dev", "block", d)
		var next []string
		if hs, err := os.ReadDir(filepath.Join(base, "holders")); holders && err == nil {
			for _, h := range hs {
				next = append(next, filepath.Join(sysfs, "class", "block", h.Name(), "dev"))
			}
		}
		if es, err := os.ReadDir(base); err == nil {
			for _, e := range es {
				if _, err := os.Stat(filepath.Join(base, e.Name(), "partition")); err == nil {
					next = append(next, filepath.Join(base, e.Name(), "dev"))
				}
			}
		}
		for _, p := range next {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			n := strings.TrimSpace(string(b))
			if _, ok := seen[n]; !ok {
				seen[n] = "which is stacked on the device being converted"
				queue = append(queue, n)
			}
		}
	}
	return seen
}

// metadataDevice is the block device ("major:minor") that holds meta: the
// device itself, or the filesystem's device for a file (the directory's,
// for a file not created yet). Filesystems with anonymous device numbers
// (btrfs, overlay; major 0) are looked up by their mount source in
// mountinfo.
func metadataDevice(meta, mountinfo string) (string, error) {
	var st unix.Stat_t
	err := unix.Stat(meta, &st)
	if errors.Is(err, unix.ENOENT) {
		err = unix.Stat(filepath.Dir(meta), &st)
	}
	if err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		return devString(uint64(st.Rdev)), nil
	}
	dev := devString(uint64(st.Dev))
	if unix.Major(uint64(st.Dev)) != 0 {
		return dev, nil
	}
	f, err := os.Open(mountinfo)
	if err != nil {
		return dev, nil
	}
	defer f.Close()
	src := mountSource(f, dev)
	if !strings.HasPrefix(src, "/dev/") || unix.Stat(src, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return dev, nil // tmpfs and the like: on no block device
	}
	return devString(uint64(st.Rdev)), nil
}

// mountSource finds the mount source of the filesystem with device number
// dev in a mountinfo listing (proc(5): field 3 is major:minor, the source
// follows the fstype after the " - " separator).
func mountSource(r io.Reader, dev string) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 3 || fs[2] != dev {
			continue
		}
		for i, f := range fs {
			if f == "-" && i+2 < len(fs) {
				return fs[i+2]
			}
		}
	}
	return ""
}

func devString(d uint64) string { return fmt.Sprintf("%d:%d", unix.Major(d), unix.Minor(d)) }
