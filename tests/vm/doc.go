// Package vm boots a real Linux kernel under qemu (software emulation, no KVM
// needed) so tests can exercise device-mapper, dm-crypt and crash behaviour the
// host kernel cannot provide.
//
// A test describes one boot with a Config: raw disk images (seen by the guest
// as /dev/vda, /dev/vdb, ...), a busybox sh script, per-boot files, and
// optionally when to kill qemu. Run (or Boot, without a testing.TB) returns the
// script's exit status, the serial console and timings:
//
//	res := vm.Run(t, vm.Config{
//		Image:  vm.Image{GoPackages: []string{"./cmd/cryptshift"}},
//		Disks:  []string{img},
//		Files:  map[string][]byte{"/etc/vm/key": key},
//		Script: "set -e\ncryptshift ... /dev/vda\n",
//	})
//
// The guest initramfs is written in pure Go (newc cpio): static busybox with
// its applets, the kernel modules of Image.Modules in modprobe's dependency
// order, static Go binaries built from Image.GoPackages (in /usr/local/bin),
// and host tools from Image.Tools with their shared libraries (in
// /usr/local/sbin). It is built once per Image per test process; each boot
// appends a small archive with its script. The kernel is booted from an
// uncompressed vmlinux extracted once into the user cache directory when it has
// a PVH entry point, which saves seconds of emulated decompression per boot.
//
// The guest shell is busybox's, which runs its own applet before searching
// PATH: where a host tool and an applet share a name (losetup, mke2fs), call
// the tool by its full path, /usr/local/sbin/NAME, to get the real one.
//
// Inside the guest there is no udev: after creating a device-mapper device with
// dmsetup, run "dmsetup mknodes" to get /dev/mapper/NAME (cryptsetup makes its
// own nodes), or use /dev/dm-N.
//
// Crash tests set Config.KillOn (a console substring) and/or Config.KillAfter
// (a delay, from RandomDelay for a seeded pseudo-random moment); qemu gets
// SIGKILL, which leaves in the disk images every write the guest saw
// acknowledged, as an OS crash would. Boot again with the same Disks to
// inspect or recover.
//
// A crash state an assertion needs is forced, never left to the delay: the
// guest prints the kill marker once the state is reached, and holds it there
// (a suspended device-mapper device the conversion's next write blocks on, a
// SIGSTOPped process), so that a failed assertion means cryptshift is wrong,
// not that the kill came early or late. The seed places everything else.
// A failing seeded test prints a "vm replay:" line with the command that
// replays it; scripts/test.sh repeats those lines at the end of a failed run.
//
// When qemu, the kernel or busybox-static is missing, Run fails the test with a
// message naming tests/vm/install-deps.sh; it never skips.
package vm
