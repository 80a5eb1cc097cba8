#!/usr/bin/env bash
# CI check of the Debian package: builds it (scripts/package-deb.sh),
# requires lintian to report no errors, installs it with dpkg into a
# throw-away root, runs the installed binary, and removes and purges it
# there. The maintainer scripts run too, with the commands that would
# change this machine (deb-systemd-helper, systemctl, update-initramfs)
# replaced by stubs that record their calls, which are then checked:
# the unit is enabled and never started, the initramfs is rebuilt on
# install and on removal.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test-deb.sh: $*" >&2; exit 1; }
command -v lintian >/dev/null || fail "lintian is not installed (tests/vm/install-deps.sh installs it)"

deb=$(bash scripts/package-deb.sh)
want="cryptshift version ${VERSION:-$(git describe --tags --always --dirty)}"

# --fail-on error: warnings and pedantic tags are printed, not fatal.
lintian --fail-on error --tag-display-limit 0 "$deb" || fail "lintian reports errors for $deb"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
admin=$root/var/lib/dpkg
mkdir -p "$admin/info" "$admin/updates" "$admin/triggers" "$tmp/bin"
: >"$admin/status"
: >"$admin/available"
calls=$tmp/calls
: >"$calls"
for c in deb-systemd-helper deb-systemd-invoke systemctl update-initramfs; do
	printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$c" "$calls" >"$tmp/bin/$c"
	chmod +x "$tmp/bin/$c"
done
stubbed() { PATH="$tmp/bin:$PATH" "$@"; }
# The throw-away root has no shell to chroot into: the maintainer scripts
# run here, with DPKG_ROOT naming the root (they honour it).
dpkgr() { stubbed dpkg --root="$root" --admindir="$admin" --force-script-chrootless --log=/dev/null "$@"; }

dpkgr -i "$deb" >/dev/null
status=$(dpkg-query --admindir="$admin" -W -f='${Status}' cryptshift)
[ "$status" = "install ok installed" ] || fail "after install: status $status"

got=$("$root/usr/sbin/cryptshift" --version)
[ "$got" = "$want" ] || fail "installed cryptshift --version prints '$got', want '$want'"
file "$root/usr/sbin/cryptshift" | grep -q 'statically linked' || fail "the binary is not static"
exec=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$root/lib/systemd/system/cryptshift-recover.service")
[ -x "$root$exec" ] || fail "the unit runs $exec, which the package does not install"
for page in cryptshift cryptshift-convert cryptshift-recover; do
	zcat "$root/usr/share/man/man8/$page.8.gz" | grep -q '^\.SH EXIT STATUS' || fail "$page(8) has no EXIT STATUS"
done
for f in module-setup.sh cryptshift-recover.sh parse-cryptshift.sh; do
	[ -x "$root/usr/lib/dracut/modules.d/90cryptshift/$f" ] || fail "the dracut module's $f is missing or not executable"
done
[ -f "$root/usr/lib/dracut/modules.d/90cryptshift/cryptshift-recover.service" ] || fail "the dracut module's unit is missing"
for f in tasks/main.yml tasks/device.yml tasks/run-systemd.yml tasks/run-async.yml defaults/main.yml vars/main.yml; do
	[ -f "$root/usr/share/ansible/roles/cryptshift/$f" ] || fail "the Ansible role's $f is missing"
done
[ -f "$root/usr/share/doc/cryptshift/examples/rotate.yml" ] || fail "the example play is missing"
grep -q "deb-systemd-helper enable cryptshift-recover.service" "$calls" || fail "postinst did not enable the unit: $(cat "$calls")"

# The same scripts on a real root (no DPKG_ROOT): the initramfs is rebuilt.
: >"$calls"
stubbed env -u DPKG_ROOT sh "$admin/info/cryptshift.postinst" configure
grep -qx "update-initramfs -u" "$calls" || fail "postinst configure did not run update-initramfs -u: $(cat "$calls")"
: >"$calls.all"
cat "$calls" >>"$calls.all"
: >"$calls"
stubbed env -u DPKG_ROOT sh "$admin/info/cryptshift.postrm" remove
grep -qx "update-initramfs -u" "$calls" || fail "postrm remove did not run update-initramfs -u: $(cat "$calls")"
grep -qx "deb-systemd-helper mask cryptshift-recover.service" "$calls" || fail "postrm remove did not mask the unit: $(cat "$calls")"
cat "$calls" >>"$calls.all"
: >"$calls"

dpkgr -r cryptshift >/dev/null
[ ! -e "$root/usr/sbin/cryptshift" ] || fail "dpkg -r left /usr/sbin/cryptshift"
dpkgr -P cryptshift >/dev/null
grep -q "deb-systemd-helper purge cryptshift-recover.service" "$calls" || fail "postrm purge did not purge the unit's state: $(cat "$calls")"
cat "$calls" >>"$calls.all"
if grep -E '(deb-systemd-invoke|systemctl).* (start|restart)' "$calls.all"; then
	fail "a maintainer script starts the unit"
fi
left=$(find "$root" -path "$admin" -prune -o -type f -print)
[ -z "$left" ] || fail "purge left files: $left"
echo "test-deb.sh: ok: $deb ($got)"
