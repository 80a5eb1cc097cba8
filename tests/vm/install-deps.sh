#!/bin/sh
# Installs what the real-kernel tests in tests/vm need on a Debian machine:
# qemu (software emulation is enough), a Debian kernel with its modules, a static
# busybox for the initramfs, the interop tools copied into the guest, xz
# (the luks tests unpack the shared LUKS images), xfsprogs, btrfs-progs and
# fio for the other-filesystem and heavy-load scenarios
# (TestOnlineCLIFilesystemsAndLoad), lintian, zsh and fish for the package
# and completion checks, dracut-core for the dracut module's boot test and
# ansible-core for the Ansible role's test.
# dracut-core, not dracut: the dracut package conflicts with initramfs-tools
# and would remove it (and with it this machine's own initramfs updates);
# dracut-core only brings the generator, which the tests call by hand.
# Idempotent: it only calls apt-get when something is missing.
set -eu

packages="qemu-system-x86 linux-image-amd64 busybox-static cryptsetup-bin dmsetup e2fsprogs kmod cpio util-linux xz-utils xfsprogs btrfs-progs fio lintian zsh fish dracut-core ansible-core"

missing=""
for p in $packages; do
	# dpkg-query prints "install ok installed" only for a fully configured package.
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	"install ok installed") ;;
	*) missing="$missing $p" ;;
	esac
done

if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "tests/vm/install-deps.sh: missing packages:$missing; run this script as root" >&2
		exit 1
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "tests/vm/install-deps.sh: missing packages:$missing and no apt-get (not Debian?)" >&2
		exit 1
	fi
	echo "tests/vm/install-deps.sh: installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get update -q; then
		echo "tests/vm/install-deps.sh: apt-get update failed" >&2
		exit 1
	fi
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	if ! apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends $missing; then
		echo "tests/vm/install-deps.sh: apt-get install failed for:$missing" >&2
		exit 1
	fi
fi

# The packages can be installed and still leave the harness without a bootable
# kernel (e.g. a container where /boot was pruned), so check what the harness uses.
fail=0
for tool in qemu-system-x86_64 busybox cryptsetup dmsetup e2fsck mkfs.ext4 blkid modprobe mkfs.xfs xfs_repair mkfs.btrfs btrfs fio fstrim; do
	if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ] && [ ! -x "/sbin/$tool" ]; then
		echo "tests/vm/install-deps.sh: $tool not found after install" >&2
		fail=1
	fi
done
found_kernel=""
for k in /boot/vmlinuz-*; do
	[ -e "$k" ] || continue
	kver=${k#/boot/vmlinuz-}
	if [ -d "/lib/modules/$kver" ]; then
		found_kernel=$kver
	fi
done
if [ -z "$found_kernel" ]; then
	echo "tests/vm/install-deps.sh: no /boot/vmlinuz-<kver> with /lib/modules/<kver>" >&2
	fail=1
fi
if [ "$fail" != 0 ]; then
	exit 1
fi
echo "tests/vm/install-deps.sh: ok (kernel $found_kernel)"
