package dm

import (
	"testing"
	"unsafe"

	"github.com/cryptshift/cryptshift/internal/testkit"
	"golang.org/x/sys/unix"
)

// statusReply builds a DM_TABLE_STATUS reply as the kernel lays it out:
// specs after the header, each next counted from the first spec.
func statusReply(ts []Target) []byte {
	buf := make([]byte, 4096)
	h := hdr(buf)
	h.Data_start = unix.SizeofDmIoctl
	h.Data_size = uint32(len(buf))
	h.Target_count = uint32(len(ts))
	off := 0
	area := buf[unix.SizeofDmIoctl:]
	for _, t := range ts {
		spec := (*unix.DmTargetSpec)(unsafe.Pointer(&area[off]))
		spec.Sector_start, spec.Length = t.Start, t.Length
		copy(spec.Target_type[:], t.Type)
		copy(area[off+unix.SizeofDmTargetSpec:], t.Params)
		off += unix.SizeofDmTargetSpec + (len(t.Params)+1+7)&^7
		spec.Next = uint32(off)
	}
	return buf
}

func TestParseStatus(t *testing.T) {
	want := []Target{
		{0, 2048, "crypt", "aes-xts-plain64 " + hexKey(testkit.Key(64, 1)) + " 0 8:16 0 1 allow_discards"},
		{2048, 8, "linear", "253:3 0"},
		{2056, 100, "error", ""},
	}
	got, err := parseStatus(statusReply(want))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d targets", len(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("target %d: got %+v want %+v", i, got[i], want[i])
		}
	}
	bad := statusReply(want)
	hdr(bad).Data_size = 1 << 20
	if _, err := parseStatus(bad); err == nil {
		t.Fatal("reply larger than its buffer accepted")
	}
	loop := statusReply(want)
	(*unix.DmTargetSpec)(unsafe.Pointer(&loop[unix.SizeofDmIoctl])).Next = 0
	if _, err := parseStatus(loop); err == nil {
		t.Fatal("reply whose offsets do not advance accepted")
	}
}

// Private devices' resumes tell udev to leave them alone; the served
// device's resumes (NAME, the user's) carry no flags.
func TestResumeCookieOnlyForPrivateDevices(t *testing.T) {
	for _, n := range []string{PrivatePrefix + "0a1b2c3d-hold0", PrivatePrefix + "0a1b2c3d-crypt-new"} {
		c := resumeCookie(n)
		if c>>udevFlagsShift&udevDisableDiskRules == 0 || c>>udevFlagsShift&udevDisableOtherRules == 0 || c&0xffff != 0 {
			t.Errorf("%s: cookie %#x does not disable the disk and other udev rules (or names a semaphore)", n, c)
		}
	}
	for _, n := range []string{"data", "cryptdata", "luks-1234"} {
		if c := resumeCookie(n); c != 0 {
			t.Errorf("%s: cookie %#x on a device that is not cryptshift's", n, c)
		}
	}
}
