#!/usr/bin/env bash
# Compares the engine and sector-cipher Go benchmarks of two revisions,
# benchstat style, on one machine in one run.
#
#   scripts/bench-compare.sh [OLD [NEW]]
#
# OLD defaults to HEAD~1, NEW to the working tree (uncommitted changes
# included); either may be any git revision, or "." for the working tree.
# A revision other than the working tree is checked out with
# `git worktree add` in a temporary directory, which is removed at the end.
#
# Environment:
#   COUNT      runs per revision (default 6: benchstat wants at least 6 for
#              a 95% confidence interval)
#   BENCH      -bench regexp (default .)
#   BENCHTIME  -benchtime (default: go test's 1s)
#   PKGS       packages (default "./engine ./sectorcipher")
#   TAGS       build tags for both sides, e.g. purego
#
# Each package's test binary is built once per revision, then the two are
# run alternately, one -count=1 run each, in the order old,new then new,old
# on the next round, so that a change of load during the run falls on both
# sides alike. On a shared, noisy machine that is what makes the comparison
# mean anything: never compare figures from two separate runs of this
# script. With the default settings a run takes 10 to 15 minutes.
#
# Prints benchstat's comparison; installs benchstat with `go install` when
# it is missing, and if that fails prints the raw results instead and says so.
set -euo pipefail

OLD=${1:-HEAD~1}
NEW=${2:-.}
COUNT=${COUNT:-6}
BENCH=${BENCH:-.}
BENCHTIME=${BENCHTIME:-}
PKGS=${PKGS:-./engine ./sectorcipher}
TAGS=${TAGS:-}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "bench-compare: Go is needed" >&2; exit 2; }
case $COUNT in '' | *[!0-9]* | 0)
	echo "bench-compare: COUNT=$COUNT: want a positive number" >&2
	exit 2
	;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/cryptshift-bench-compare.XXXXXX")
trees=()
cleanup() {
	for t in ${trees[@]+"${trees[@]}"}; do
		git -C "$root" worktree remove --force "$t" >/dev/null 2>&1 || true
	done
	git -C "$root" worktree prune >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# tree SIDE REV: sets SIDE_dir to the directory holding REV's source.
tree() {
	local dir=$work/tree-$1
	if [ "$2" = . ]; then
		dir=$root
	else
		git -C "$root" rev-parse --verify --quiet "$2^{commit}" >/dev/null ||
			{ echo "bench-compare: $2 is not a revision" >&2; exit 2; }
		git -C "$root" worktree add --detach --quiet "$dir" "$2" >&2
		trees+=("$dir")
	fi
	printf -v "${1}_dir" '%s' "$dir"
}

# label REV: how a side is named in benchstat's table.
label() {
	if [ "$1" = . ]; then
		echo "worktree"
	else
		local short
		short=$(git -C "$root" rev-parse --short "$1")
		case $short in "$1"*) echo "$1" ;; *) echo "$1@$short" ;; esac | tr -c 'A-Za-z0-9@._~^\n-' _
	fi
}

tree old "$OLD"
tree new "$NEW"
old_label=$(label "$OLD")
new_label=$(label "$NEW")
[ "$old_label" != "$new_label" ] || new_label="$new_label(new)"

# Build every package's test binary for both sides first: compiling is not
# part of any timing, and a build failure stops the run before it starts.
tagflag=()
[ -z "$TAGS" ] || tagflag=(-tags "$TAGS")
pkgs=()
for pkg in $PKGS; do
	name=$(basename "$pkg")
	for side in old new; do
		dir=${side}_dir
		if [ ! -d "${!dir}/$pkg" ]; then
			echo "bench-compare: $pkg does not exist on the $side side; skipping it" >&2
			continue 2
		fi
		(cd "${!dir}" && go test -c "${tagflag[@]}" -o "$work/$side-$name.test" "$pkg")
	done
	pkgs+=("$pkg")
done
[ ${#pkgs[@]} -gt 0 ] || { echo "bench-compare: no package to run" >&2; exit 2; }

flags=(-test.run '^$' -test.bench "$BENCH" -test.count 1)
[ -z "$BENCHTIME" ] || flags+=(-test.benchtime "$BENCHTIME")
: >"$work/old.txt"
: >"$work/new.txt"
# runone SIDE PKG: one run of PKG's benchmarks on SIDE, from the package's
# own directory (as go test does), appended to SIDE's results.
runone() {
	local dir=${1}_dir name
	name=$(basename "$2")
	(cd "${!dir}/$2" && "$work/$1-$name.test" "${flags[@]}") >>"$work/$1.txt" ||
		{ echo "bench-compare: $1 ($OLD / $NEW) $2 failed; its output:" >&2; tail -n 20 "$work/$1.txt" >&2; exit 1; }
}
echo "bench-compare: $old_label against $new_label, ${pkgs[*]}, $COUNT alternating runs each; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq 1 "$COUNT"); do
	echo "round $round of $COUNT" >&2
	for pkg in "${pkgs[@]}"; do
		if [ $((round % 2)) = 1 ]; then
			runone old "$pkg"
			runone new "$pkg"
		else
			runone new "$pkg"
			runone old "$pkg"
		fi
	done
done

echo "$old_label against $new_label; $COUNT alternating runs each; $(date -u +%Y-%m-%dT%H:%M:%SZ); load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
bs=$(command -v benchstat || true)
gobin=$(go env GOBIN)
gobin=${gobin:-$(go env GOPATH)/bin}
[ -n "$bs" ] || [ ! -x "$gobin/benchstat" ] || bs=$gobin/benchstat
if [ -z "$bs" ]; then
	echo "bench-compare: installing benchstat (golang.org/x/perf/cmd/benchstat)" >&2
	if go install golang.org/x/perf/cmd/benchstat@latest >&2; then
		bs=$gobin/benchstat
	fi
fi
if [ -n "$bs" ] && [ -x "$bs" ]; then
	cp "$work/old.txt" "$work/$old_label"
	cp "$work/new.txt" "$work/$new_label"
	(cd "$work" && "$bs" "$old_label" "$new_label")
else
	echo "NOTE: benchstat is not installed and could not be installed, so these are the raw results, not a comparison."
	echo "== $old_label =="
	grep -E '^(Benchmark|goos|goarch|pkg|cpu)' "$work/old.txt"
	echo "== $new_label =="
	grep -E '^(Benchmark|goos|goarch|pkg|cpu)' "$work/new.txt"
fi
