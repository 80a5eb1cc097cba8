package online

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeSysfs builds the part of /sys/dev/block and /sys/class/block that
// stackedOn reads: devs maps a name to its "major:minor", holders a name
// to the names stacked on it, parts a disk to its partitions.
func fakeSysfs(t *testing.T, devs map[string]string, holders, parts map[string][]string) string {
	t.Helper()
	root := t.TempDir()
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, no := range devs {
		write(filepath.Join(root, "class", "block", name, "dev"), no)
		if err := os.MkdirAll(filepath.Join(root, "dev", "block", no, "holders"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, hs := range holders {
		for _, h := range hs {
			write(filepath.Join(root, "dev", "block", devs[name], "holders", h), "")
		}
	}
	for disk, ps := range parts {
		for _, p := range ps {
			base := filepath.Join(root, "dev", "block", devs[disk], p)
			write(filepath.Join(base, "dev"), devs[p])
			write(filepath.Join(base, "partition"), "1")
		}
	}
	return root
}

func TestMetadataPlaceOnTheStack(t *testing.T) {
	// sdb (8:16) is DEVICE, with a partition sdb1 (8:17); data (253:0) is
	// NAME over it; LVM on NAME gives vg-lv (253:2), with a partition-like
	// child; a linear of another region of sdb beside NAME (253:6) does not
	// pass through the hold; sda (8:0) with sda1 (8:1) is unrelated, and so
	// is a mapping on sda1 (253:5).
	devs := map[string]string{"sdb": "8:16", "sdb1": "8:17", "dm-0": "253:0", "dm-2": "253:2", "dm-2p1": "259:3",
		"dm-6": "253:6", "sda": "8:0", "sda1": "8:1", "dm-5": "253:5"}
	holders := map[string][]string{"sdb": {"dm-0", "dm-6"}, "dm-0": {"dm-2"}, "sda1": {"dm-5"}}
	parts := map[string][]string{"dm-2": {"dm-2p1"}, "sda": {"sda1"}, "sdb": {"sdb1"}}
	sys := fakeSysfs(t, devs, holders, parts)
	stack := stackedOn(sys, []string{"253:0"}, true)
	for d, why := range stackedOn(sys, []string{"8:16"}, false) {
		stack[d] = why
	}
	for _, dev := range []string{"8:16", "8:17", "253:0", "253:2", "259:3"} {
		if onStack(dev, stack) == "" {
			t.Errorf("metadata on %s accepted, but it is on the stack", dev)
		}
	}
	for _, dev := range []string{"8:0", "8:1", "253:5", "253:6", "0:45"} {
		if why := onStack(dev, stack); why != "" {
			t.Errorf("metadata on %s refused (%s), but it is elsewhere", dev, why)
		}
	}
	// A cycle in a broken sysfs must not hang the walk.
	sys = fakeSysfs(t, map[string]string{"a": "1:1", "b": "1:2"}, map[string][]string{"a": {"b"}, "b": {"a"}}, nil)
	if len(stackedOn(sys, []string{"1:1"}, true)) != 2 {
		t.Fatal("cycle not walked once")
	}
}

func TestMountSource(t *testing.T) {
	mi := "22 1 0:21 / /proc rw,nosuid - proc proc rw\n" +
		"30 1 0:35 / / rw,relatime shared:1 - btrfs /dev/mapper/data rw,subvol=/\n" +
		"31 30 253:2 / /srv rw master:4 - xfs /dev/mapper/vg-lv rw\n"
	for dev, want := range map[string]string{"0:35": "/dev/mapper/data", "253:2": "/dev/mapper/vg-lv", "0:21": "proc", "0:99": ""} {
		if got := mountSource(strings.NewReader(mi), dev); got != want {
			t.Errorf("source of %s: %q, want %q", dev, got, want)
		}
	}
}

func TestMetadataDevice(t *testing.T) {
	dir := t.TempDir()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	// Without a mountinfo to resolve it, an anonymous device number
	// (tmpfs, btrfs) is the answer too.
	want := devString(uint64(st.Dev))
	f := filepath.Join(dir, "meta")
	// Not created yet: the directory's filesystem.
	if got, err := metadataDevice(f, "/nonexistent"); err != nil || got != want {
		t.Fatalf("missing file: %s, %v; want %s", got, err, want)
	}
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := metadataDevice(f, "/nonexistent"); err != nil || got != want {
		t.Fatalf("file: %s, %v; want %s", got, err, want)
	}
}
