#!/usr/bin/env bash
# Times, in one run on one machine, cryptsetup's offline LUKS2 reencryption,
# cryptshift's offline conversion of an equivalent plain dm-crypt image, and
# an in-place O_DIRECT dd copy of the same range right before each of them,
# and prints every time as a ratio to its copy, with peak RSS.
#
#   sudo scripts/bench-vs-cryptsetup.sh [SIZE]     (SIZE default 2G)
#
# Environment: DIR (where the images go; default $TMPDIR or /tmp: put it on
# the disk you care about), REPEAT (default 1: rounds of the whole table;
# with more than one, a table of the medians over the rounds follows).
# Needs root (to drop the page cache before every timed run), cryptsetup,
# GNU time and Go; installs the Debian packages it lacks.
#
# The machine is assumed shared and noisy: only the ratios to the copy timed
# just before each run mean much, never the seconds alone.
set -euo pipefail

SIZE=${1:-2G}
REPEAT=${REPEAT:-1}
DIR=${DIR:-${TMPDIR:-/tmp}}
root=$(cd "$(dirname "$0")/.." && pwd)

if [ "$(id -u)" != 0 ]; then
	echo "bench-vs-cryptsetup: run as root: every timed run starts with a dropped page cache" >&2
	exit 2
fi
need_pkg() { # command package
	command -v "$1" >/dev/null 2>&1 && return
	echo "installing $2 for $1" >&2
	apt-get install -y -q "$2" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "$2" >/dev/null; }
}
need_pkg cryptsetup cryptsetup-bin
need_pkg /usr/bin/time time
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "bench-vs-cryptsetup: Go is needed to build cryptshift" >&2; exit 2; }

bytes=$(numfmt --from=iec "$SIZE")
MiB=$((1 << 20))
if [ $((bytes % (4 * MiB))) != 0 ] || [ "$bytes" -lt $((64 * MiB)) ]; then
	echo "bench-vs-cryptsetup: SIZE must be a multiple of 4M and at least 64M" >&2
	exit 2
fi
work=$(mktemp -d "$DIR/cryptshift-vs-cryptsetup.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$root" && go build -o "$work/cryptshift" ./cmd/cryptshift)
cs=$work/cryptshift

luks_hdr=$((16 * MiB)) # cryptsetup's default LUKS2 header with 4 KiB sectors
# cryptshift's default offline window, read from engine.DefaultWindow so
# that it follows the code. cryptshift is run without --window, so it uses
# this; the script needs it for the room shift's gap (one window) takes
# beyond the data, and as the dd copy's block size (see ddcopy).
window=$(sed -n 's/^[[:space:]]*DefaultWindow = \([0-9][0-9]*\) << 20.*/\1/p' "$root/engine/engine.go")
[ -n "$window" ] || { echo "bench-vs-cryptsetup: cannot read DefaultWindow from engine/engine.go" >&2; exit 2; }
window=$((window * MiB))
meta=$((32 * MiB))     # cryptshift's default metadata area
data=$((bytes - luks_hdr))
# A fast PBKDF: the new keyslot's key derivation (argon2id by default takes
# up to 1 GiB and seconds) is not what is being compared.
pbkdf=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)
luks_fmt=(--type luks2 --cipher aes-xts-plain64 --key-size 512 --sector-size 4096)

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# fill FILE BYTES: non-sparse text, so that reads hit the disk and plaintext
# passes cryptshift's plausibility check.
fill() {
	# yes dies of SIGPIPE when head has enough, which pipefail would report.
	{ yes "cryptshift vs cryptsetup benchmark: plausible plaintext, line after line" || true; } | head -c "$2" >"$1"
}

# ddcopy FILE OFFSET BYTES: the baseline, read and rewrite the range in
# place with O_DIRECT, one cryptshift window (8 MiB by default) at a time,
# flushed once at the end. The block size is cryptshift's window, as in the
# copy of `cryptshift bench --convert`, so that cryptshift is not measured
# against a copy in smaller, slower blocks than it uses itself; the same
# copy precedes every row, cryptsetup's too, so all rows share one baseline.
ddcopy() {
	drop
	local t0 t1
	t0=$(date +%s.%N)
	dd if="$1" of="$1" bs="$window" iflag=direct,skip_bytes,count_bytes oflag=direct,seek_bytes \
		skip="$2" seek="$2" count="$3" conv=notrunc,fdatasync status=none
	t1=$(date +%s.%N)
	copy_s=$(echo "$t1 - $t0" | bc -l)
}

# timed CMD...: run after a dropped cache; sets run_s, cpu_s (user + system:
# near or above run_s on these 2 cores means the run is bound by CPU, not
# by the disk) and rss_kib.
timed() {
	drop
	local t0 t1
	t0=$(date +%s.%N)
	if ! /usr/bin/time -f '%U %S %M' -o "$work/rss" "$@" >"$work/out" 2>&1; then
		echo "bench-vs-cryptsetup: failed: $*" >&2
		cat "$work/out" >&2
		exit 1
	fi
	t1=$(date +%s.%N)
	run_s=$(echo "$t1 - $t0" | bc -l)
	read -r user_s sys_s rss_kib < <(tail -n 1 "$work/rss")
	cpu_s=$(echo "$user_s + $sys_s" | bc -l)
}

rows=()
row() { # tool mode
	rows+=("$(printf '%-11s %-22s %9.2f %9.2f %7.2f %7.2f %10.1f' "$1" "$2" "$run_s" "$copy_s" \
		"$(echo "$run_s / $copy_s" | bc -l)" "$cpu_s" "$(echo "$rss_kib / 1024" | bc -l)")")
}

# Offline LUKS2 reencryption needs no device-mapper (it works on the image
# file through the kernel crypto API), but check rather than assume.
cs_ok=1
head -c 64 /dev/urandom >"$work/luks.key"
truncate -s 64M "$work/probe.img"
if ! cryptsetup luksFormat -q "${luks_fmt[@]}" "${pbkdf[@]}" --key-file "$work/luks.key" "$work/probe.img" >"$work/probe.out" 2>&1 ||
	! cryptsetup reencrypt -q --force-offline-reencrypt --resilience checksum "${pbkdf[@]}" \
		--key-file "$work/luks.key" "$work/probe.img" >>"$work/probe.out" 2>&1; then
	cs_ok=0
	echo "NOTE: cryptsetup reencrypt does not work on an image file on this host; the cryptsetup rows are" \
		"left out (running them inside the tests/vm guest is not done here). cryptsetup said:"
	sed 's/^/    /' "$work/probe.out"
fi
rm -f "$work/probe.img"

echo "bench-vs-cryptsetup: $SIZE images in $work, $REPEAT round(s); building them..." >&2
for round in $(seq 1 "$REPEAT"); do
	if [ "$cs_ok" = 1 ]; then
		# LUKS2 re-encryption to a new volume key, data area [16M, SIZE).
		fill "$work/luks.img" "$bytes"
		cryptsetup luksFormat -q "${luks_fmt[@]}" "${pbkdf[@]}" --key-file "$work/luks.key" "$work/luks.img"
		for mode in checksum journal none; do
			echo "round $round: cryptsetup reencrypt --resilience $mode" >&2
			ddcopy "$work/luks.img" "$luks_hdr" "$data"
			timed cryptsetup reencrypt -q --force-offline-reencrypt --resilience "$mode" "${pbkdf[@]}" \
				--key-file "$work/luks.key" "$work/luks.img"
			row cryptsetup "reencrypt $mode"
		done
		rm -f "$work/luks.img"
		# datashift only exists for encrypting a plaintext device in place.
		echo "round $round: cryptsetup reencrypt --encrypt --resilience datashift" >&2
		fill "$work/plain.img" "$bytes"
		ddcopy "$work/plain.img" 0 $((bytes - 2 * luks_hdr))
		timed cryptsetup reencrypt -q --encrypt --force-offline-reencrypt "${luks_fmt[@]}" \
			--reduce-device-size $((2 * luks_hdr)) --resilience datashift "${pbkdf[@]}" \
			--key-file "$work/luks.key" "$work/plain.img"
		row cryptsetup "encrypt datashift"
		rm -f "$work/plain.img"
	fi

	# cryptshift: a plain dm-crypt image with the same data size, cipher and
	# sector size, metadata at its end and room for shift's gap. First made
	# encrypted (untimed), then converted to a new key per mode, each
	# conversion starting from the previous one's key and data offset.
	fill "$work/cs.img" "$data"
	truncate -s $((data + window + meta)) "$work/cs.img"
	head -c 64 /dev/urandom >"$work/k0"
	"$cs" convert --progress none --old-cipher none --new-cipher aes-xts-plain64 --new-key-file "$work/k0" --new-sector-size 4096 \
		--data-size "$data" --resilience none --force "$work/cs.img" >/dev/null
	k=0
	for mode in journal checksum shift; do
		echo "round $round: cryptshift convert --resilience $mode" >&2
		off=$("$cs" status --json "$work/cs.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["new"]["data_offset"])')
		head -c 64 /dev/urandom >"$work/k$((k + 1))"
		ddcopy "$work/cs.img" "$off" "$data"
		timed "$cs" convert --progress none --old-cipher aes-xts-plain64 --old-key-file "$work/k$k" --new-key-file "$work/k$((k + 1))" \
			--old-sector-size 4096 --new-sector-size 4096 --data-offset "$off" --data-size "$data" \
			--resilience "$mode" "$work/cs.img"
		row cryptshift "convert $mode"
		k=$((k + 1))
	done
	rm -f "$work/cs.img"
	# Plaintext to encrypted, the job cryptsetup's datashift does.
	echo "round $round: cryptshift convert --old-cipher none --resilience shift" >&2
	fill "$work/cs.img" $((bytes - 2 * luks_hdr))
	truncate -s $((bytes - 2 * luks_hdr + window + meta)) "$work/cs.img"
	ddcopy "$work/cs.img" 0 $((bytes - 2 * luks_hdr))
	timed "$cs" convert --progress none --old-cipher none --new-cipher aes-xts-plain64 --new-key-file "$work/k0" --new-sector-size 4096 \
		--data-size $((bytes - 2 * luks_hdr)) --resilience shift "$work/cs.img"
	row cryptshift "encrypt shift"
	rm -f "$work/cs.img"
done

echo
echo "Offline re-encryption of $SIZE, aes-xts-plain64, 512-bit keys, 4096-byte sectors; $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); Linux $(uname -r); $(cryptsetup --version)"
echo "Each run follows an in-place O_DIRECT dd copy of the same range, bs $((window / MiB))M, one fdatasync (its 'copy s'); page cache dropped before both."
echo "cryptshift runs with its default ($((window / MiB)) MiB) window, opens image files with O_DIRECT (buffered where the filesystem refuses it) and flushes every window."
printf '%-11s %-22s %9s %9s %7s %7s %10s\n' tool run "run s" "copy s" ratio "cpu s" "peak MiB"
printf '%s\n' "${rows[@]}"
if [ "$REPEAT" -gt 1 ]; then
	# One line per tool and run: the median over the rounds of its ratio and
	# CPU seconds, the largest peak RSS, and every round's ratio.
	echo
	echo "Median over the $REPEAT rounds:"
	printf '%s\n' "${rows[@]}" | awk '
	function median(s,    a, n, i, j, t) {
		n = split(s, a, " ")
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
		return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
	}
	{
		key = sprintf("%-11s %-22s", $1, $2 " " $3)
		if (!(key in seen)) { seen[key] = 1; order[++k] = key }
		ratio[key] = ratio[key] " " $6; cpu[key] = cpu[key] " " $7; rss[key] = ($8 > rss[key] ? $8 : rss[key])
		all[key] = all[key] (all[key] == "" ? "" : ", ") $6
	}
	END {
		printf "%-11s %-22s %7s %7s %10s  %s\n", "tool", "run", "ratio", "cpu s", "peak MiB", "ratio of each round"
		for (i = 1; i <= k; i++) printf "%s %7.2f %7.2f %10.1f  %s\n", order[i], median(ratio[order[i]]), median(cpu[order[i]]), rss[order[i]], all[order[i]]
	}
	'
fi
[ "$cs_ok" = 1 ] || echo "NOTE: no cryptsetup rows: cryptsetup reencrypt does not work on image files on this host (see above)."
