package dm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ioctls devmapper.go does not offer: loading arbitrary targets (error,
// crypt with options it does not model) with DM_SECURE_DATA_FLAG, suspend
// and resume with DM_NOFLUSH_FLAG/DM_SKIP_LOCKFS_FLAG, and DM_TABLE_STATUS.
// The layout is the kernel's include/uapi/linux/dm-ioctl.h.

const controlPath = "/dev/mapper/control"

// ioctlVersion is the interface version we speak; 4.0.0 is enough for
// everything here and the kernel accepts any minor above what it asks.
var ioctlVersion = [3]uint32{4, 0, 0}

func hdr(buf []byte) *unix.DmIoctl {
	return (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
}

func newBuf(name string, size int) ([]byte, error) {
	if len(name) >= unix.DM_NAME_LEN || name == "" {
		return nil, fmt.Errorf("dm: invalid device name %q", name)
	}
	size = (size + 7) &^ 7
	buf := make([]byte, size)
	h := hdr(buf)
	h.Version = ioctlVersion
	h.Data_size = uint32(size)
	h.Data_start = unix.SizeofDmIoctl
	copy(h.Name[:], name)
	return buf, nil
}

func doIoctl(cmd uintptr, buf []byte) error {
	f, err := os.OpenFile(controlPath, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("dm: open %s: %w", controlPath, err)
	}
	defer f.Close()
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), cmd, uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// wipe zeroes a buffer that carried key material.
func wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// loadTable loads ts as name's inactive table.
func loadTable(name string, ts []Target, readOnly bool) error {
	if err := CheckTable(ts); err != nil {
		return err
	}
	size := unix.SizeofDmIoctl
	for _, t := range ts {
		size += unix.SizeofDmTargetSpec + (len(t.Params)+1+7)&^7
	}
	buf, err := newBuf(name, size)
	if err != nil {
		return err
	}
	// Tables carry keys: the kernel wipes its copy of the buffer when this
	// flag is set, and we wipe ours.
	defer wipe(buf)
	h := hdr(buf)
	h.Target_count = uint32(len(ts))
	h.Flags = unix.DM_SECURE_DATA_FLAG
	if readOnly {
		h.Flags |= unix.DM_READONLY_FLAG
	}
	off := unix.SizeofDmIoctl
	for _, t := range ts {
		spec := (*unix.DmTargetSpec)(unsafe.Pointer(&buf[off]))
		n := unix.SizeofDmTargetSpec + (len(t.Params)+1+7)&^7
		spec.Sector_start = t.Start
		spec.Length = t.Length
		spec.Next = uint32(n) // on load: relative to this spec
		copy(spec.Target_type[:], t.Type)
		copy(buf[off+unix.SizeofDmTargetSpec:], t.Params)
		off += n
	}
	if err := doIoctl(unix.DM_TABLE_LOAD, buf); err != nil {
		return fmt.Errorf("dm: load table of %s: %w", name, err)
	}
	return nil
}

// suspendResume issues DM_DEV_SUSPEND; without DM_SUSPEND_FLAG it resumes,
// swapping in the inactive table if one is loaded.
func suspendResume(name string, flags uint32) error {
	buf, err := newBuf(name, unix.SizeofDmIoctl)
	if err != nil {
		return err
	}
	hdr(buf).Flags = flags
	if flags&unix.DM_SUSPEND_FLAG == 0 {
		hdr(buf).Event_nr = resumeCookie(name)
	}
	return doIoctl(unix.DM_DEV_SUSPEND, buf)
}

// udev flags device-mapper passes through a resume's uevent (DM_COOKIE,
// upper 16 bits; the lower 16 would name a udev sync semaphore, and none
// is used), as libdevmapper defines them.
const (
	udevDisableSubsystemRules = 0x0002
	udevDisableDiskRules      = 0x0004
	udevDisableOtherRules     = 0x0008
	udevFlagsShift            = 16
)

// PrivatePrefix starts the names of cryptshift's private devices (package
// online names them).
const PrivatePrefix = "cryptshift-"

// resumeCookie is the DM_COOKIE of a resume of name. cryptshift's private
// devices (hold and kernel crypto) serve the same filesystem as NAME, or a
// window of it: udev must not probe them, so /dev/disk/by-uuid and the
// like keep pointing at NAME and nothing mounts or assembles them. Their
// /dev/mapper node is still made by the general device-mapper rules.
func resumeCookie(name string) uint32 {
	if !strings.HasPrefix(name, PrivatePrefix) {
		return 0
	}
	return (udevDisableSubsystemRules | udevDisableDiskRules | udevDisableOtherRules) << udevFlagsShift
}

// tableStatus returns name's live (or, with inactive, inactive) table with
// keys: the kernel prints crypt keys in full to root; only dmsetup masks
// them, in userspace, unless --showkeys is given.
func tableStatus(name string, inactive bool) ([]Target, error) {
	size := 16 << 10
	for {
		buf, err := newBuf(name, size)
		if err != nil {
			return nil, err
		}
		h := hdr(buf)
		h.Flags = unix.DM_STATUS_TABLE_FLAG | unix.DM_SECURE_DATA_FLAG
		if inactive {
			h.Flags |= unix.DM_QUERY_INACTIVE_TABLE_FLAG
		}
		if err := doIoctl(unix.DM_TABLE_STATUS, buf); err != nil {
			wipe(buf)
			return nil, fmt.Errorf("dm: table of %s: %w", name, err)
		}
		if h.Flags&unix.DM_BUFFER_FULL_FLAG != 0 {
			wipe(buf)
			if size >= 16<<20 {
				return nil, fmt.Errorf("dm: table of %s does not fit in %d bytes", name, size)
			}
			size *= 4
			continue
		}
		ts, err := parseStatus(buf)
		wipe(buf)
		if err != nil {
			return nil, fmt.Errorf("dm: table of %s: %w", name, err)
		}
		return ts, nil
	}
}

// parseStatus decodes the target specs of a DM_TABLE_STATUS reply. There,
// unlike on load, each spec's next is an offset from the first spec.
func parseStatus(buf []byte) ([]Target, error) {
	h := hdr(buf)
	start := int(h.Data_start)
	end := int(h.Data_size)
	if end > len(buf) || start > end {
		return nil, errors.New("reply sizes out of range")
	}
	area := buf[start:end]
	var out []Target
	off := 0
	for i := uint32(0); i < h.Target_count; i++ {
		if off+unix.SizeofDmTargetSpec > len(area) {
			return nil, errors.New("reply truncated")
		}
		spec := (*unix.DmTargetSpec)(unsafe.Pointer(&area[off]))
		p := area[off+unix.SizeofDmTargetSpec:]
		limit := len(p)
		if spec.Next != 0 && int(spec.Next) > off+unix.SizeofDmTargetSpec && int(spec.Next)-off-unix.SizeofDmTargetSpec < limit {
			limit = int(spec.Next) - off - unix.SizeofDmTargetSpec
		}
		p = p[:limit]
		if j := bytes.IndexByte(p, 0); j >= 0 {
			p = p[:j]
		}
		typ := spec.Target_type[:]
		if j := bytes.IndexByte(typ, 0); j >= 0 {
			typ = typ[:j]
		}
		out = append(out, Target{Start: spec.Sector_start, Length: spec.Length, Type: string(typ), Params: string(p)})
		if i+1 < h.Target_count && int(spec.Next) <= off {
			return nil, errors.New("reply target offsets do not advance")
		}
		off = int(spec.Next)
	}
	return out, nil
}
