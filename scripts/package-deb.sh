#!/usr/bin/env bash
# Builds dist/out/cryptshift_<version>_<arch>.deb with dpkg-deb, offline:
# a static binary with the version from git, the systemd unit, the
# initramfs-tools hook and boot script, the dracut module, the Ansible
# role, the generated manual pages and
# completions (dist/man, dist/completions), the docs and the maintainer
# scripts in dist/debian. Prints the path of the package.
#
# Environment: VERSION overrides `git describe --tags --always --dirty`
# (for a build outside a git checkout; a tag-like VERSION such as v1.2.0 or
# 1.2.0 is taken as a release); MAINTAINER the control field;
# ARCH the Debian architecture (default: this machine's).
set -euo pipefail
cd "$(dirname "$0")/.."

describe=${VERSION:-$(git describe --tags --always --dirty)}
arch=${ARCH:-$(dpkg --print-architecture)}
# The project names no maintainer address yet: the last commit's author
# stands in until MAINTAINER is given.
maintainer=${MAINTAINER:-$(git log -1 --format='%an <%ae>')}

case "$arch" in
amd64) goarch=amd64 ;;
arm64) goarch=arm64 ;;
i386) goarch=386 ;;
ppc64el) goarch=ppc64le ;;
s390x) goarch=s390x ;;
riscv64) goarch=riscv64 ;;
*) echo "package-deb.sh: no Go architecture known for Debian's $arch" >&2; exit 1 ;;
esac

# A Debian version must start with a digit and, for a native package, hold
# no hyphen. v1.2.0-3-gabc1234-dirty becomes 1.2.0+3.gabc1234.dirty; a tree
# without a tag (describe prints only the commit) becomes 0~gabc1234, which
# sorts before any release.
debversion() {
	local d=$1 tagged=
	if [[ -n ${VERSION:-} ]]; then
		if [[ $d =~ ^v?[0-9]+\. ]]; then tagged=1; fi
	elif git describe --tags >/dev/null 2>&1; then
		tagged=1
	fi
	if [[ -n $tagged ]]; then
		d=${d#v}
		d=${d/-/+}
		echo "${d//-/.}"
	else
		echo "0~g${d//-/.}"
	fi
}
version=$(debversion "$describe")

out=dist/out
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
pkg=$root/pkg
mkdir -p "$pkg/DEBIAN" "$pkg/usr/sbin" "$pkg/lib/systemd/system" \
	"$pkg/usr/share/initramfs-tools/hooks" "$pkg/usr/share/initramfs-tools/scripts/local-top" \
	"$pkg/usr/lib/dracut/modules.d/90cryptshift" \
	"$pkg/usr/share/ansible/roles" "$pkg/usr/share/doc/cryptshift/examples" \
	"$pkg/usr/share/man/man8" "$pkg/usr/share/bash-completion/completions" \
	"$pkg/usr/share/zsh/vendor-completions" "$pkg/usr/share/fish/vendor_completions.d" \
	"$pkg/usr/share/doc/cryptshift" "$pkg/usr/share/lintian/overrides"

# Static (no cgo), reproducible (-trimpath, no VCS stamp: the version is
# injected), stripped.
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.version=$describe" -o "$pkg/usr/sbin/cryptshift" ./cmd/cryptshift

# The unit and the hook name /usr/local/sbin for a hand-installed binary;
# the package's lives in /usr/sbin.
sed 's|/usr/local/sbin/cryptshift|/usr/sbin/cryptshift|g' dist/systemd/cryptshift-recover.service \
	>"$pkg/lib/systemd/system/cryptshift-recover.service"
install -m 0755 dist/initramfs-tools/hooks/cryptshift "$pkg/usr/share/initramfs-tools/hooks/cryptshift"
install -m 0755 dist/initramfs-tools/scripts/local-top/cryptshift "$pkg/usr/share/initramfs-tools/scripts/local-top/cryptshift"
# dracut reads its modules from /usr/lib/dracut/modules.d; the scripts it
# sources or runs keep their modes, the unit is data.
for f in dist/dracut/90cryptshift/*; do
	mode=0644
	[ -x "$f" ] && mode=0755
	install -m "$mode" "$f" "$pkg/usr/lib/dracut/modules.d/90cryptshift/$(basename "$f")"
done
# The Ansible role where ansible-core looks by default
# (/usr/share/ansible/roles), data only; the play that uses it, an example.
cp -r dist/ansible/roles/cryptshift "$pkg/usr/share/ansible/roles/cryptshift"
find "$pkg/usr/share/ansible/roles/cryptshift" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +
install -m 0644 dist/ansible/rotate.yml "$pkg/usr/share/doc/cryptshift/examples/rotate.yml"
for m in dist/man/*.8; do
	gzip -9n <"$m" >"$pkg/usr/share/man/man8/$(basename "$m").gz"
done
cp dist/completions/cryptshift.bash "$pkg/usr/share/bash-completion/completions/cryptshift"
cp dist/completions/_cryptshift "$pkg/usr/share/zsh/vendor-completions/_cryptshift"
cp dist/completions/cryptshift.fish "$pkg/usr/share/fish/vendor_completions.d/cryptshift.fish"
cp README.md docs/DESIGN.md docs/FORMAT.md docs/ONLINE.md docs/PERFORMANCE.md docs/FLEET.md "$pkg/usr/share/doc/cryptshift/"

date=$(git log -1 --date=rfc2822 --format=%cd 2>/dev/null || date -R)
{
	printf 'cryptshift (%s) unstable; urgency=medium\n\n' "$version"
	printf '  * Built from %s.\n\n' "$describe"
	printf ' -- %s  %s\n' "$maintainer" "$date"
} | gzip -9n >"$pkg/usr/share/doc/cryptshift/changelog.gz"
bash scripts/deb-copyright.sh "$goarch" >"$pkg/usr/share/doc/cryptshift/copyright"
# Go links everything statically by design: there is no shared library to
# depend on, which is why the package has no Depends.
echo "cryptshift: statically-linked-binary [usr/sbin/cryptshift]" >"$pkg/usr/share/lintian/overrides/cryptshift"

install -m 0755 dist/debian/postinst dist/debian/prerm dist/debian/postrm "$pkg/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<CONTROL
Package: cryptshift
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Section: admin
Priority: optional
Suggests: cryptsetup-bin, initramfs-tools
Homepage: https://github.com/cryptshift/cryptshift
Description: re-encrypt a block device in place, crash-safe
 cryptshift converts a device from one dm-crypt mapping (or plaintext) to
 another: a new key, a new cipher, encrypting a plaintext device or
 decrypting one. It works window by window, records its progress on the
 device, pauses on request, resumes, and recovers after a crash or power
 cut. Online, it converts a device while its filesystem stays mounted.
 .
 The package includes a systemd unit, an initramfs-tools hook and a dracut
 module that finish interrupted conversions at boot, before the devices
 are opened, and an Ansible role that rolls conversions over a fleet.
CONTROL
(cd "$pkg" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)

# The same commit gives the same package: file times are the commit's.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
find "$pkg" -exec touch -h -d "@$epoch" {} +
export SOURCE_DATE_EPOCH=$epoch

mkdir -p "$out"
deb=$out/cryptshift_${version}_${arch}.deb
# --root-owner-group: files owned by root without fakeroot.
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
