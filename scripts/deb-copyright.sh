#!/usr/bin/env bash
# Prints the Debian copyright file of the cryptshift package: the project's
# own notice, then the license of every Go module linked into the binary
# (and of Go's standard library), read from the module cache, so that what
# is shipped and what is credited cannot differ. Argument: GOARCH.
set -euo pipefail
cd "$(dirname "$0")/.."
goarch=${1:-$(go env GOARCH)}

license_of() {
	local f
	for f in LICENSE LICENSE.txt LICENSE.md COPYING; do
		[ -f "$1/$f" ] || continue
		# Debian policy: a license in /usr/share/common-licenses is
		# referred to, not copied.
		if head -5 "$1/$f" | grep -q 'Apache License' && head -5 "$1/$f" | grep -q 'Version 2.0'; then
			echo "Licensed under the Apache License, Version 2.0. On Debian systems, its"
			echo "full text is in /usr/share/common-licenses/Apache-2.0."
		else
			cat "$1/$f"
		fi
		if [ -f "$1/NOTICE" ]; then
			printf '\nNOTICE:\n'
			cat "$1/NOTICE"
		fi
		return
	done
	echo "no license file found in $1" >&2
	return 1
}

cat <<'HEAD'
cryptshift: re-encrypt a block device in place, crash-safe
Source: https://github.com/cryptshift/cryptshift

Copyright: the cryptshift authors. The source repository carries no license
file yet; until it does, see the repository for the terms under which this
build was made available.

The binary /usr/sbin/cryptshift is statically linked with the Go standard
library and the modules below; each one's license follows its name.
HEAD
printf '\n-- Go standard library (%s) --\n\n' "$(go env GOVERSION)"
license_of "$(go env GOROOT)"
GOOS=linux GOARCH=$goarch CGO_ENABLED=0 go list -deps \
	-f '{{with .Module}}{{if .Version}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/cryptshift |
	sort -u | while read -r path ver dir; do
	printf '\n-- %s %s --\n\n' "$path" "$ver"
	license_of "$dir"
done
