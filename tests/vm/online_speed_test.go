package vm

import (
	"flag"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var vmSpeedMiB = flag.Int("vm.speed-mib", 32, "TestOnlineCryptoEngineSpeed: MiB converted per run")

// TestOnlineCryptoEngineSpeed measures, in the guest, which crypto engine
// an online conversion is faster with: cryptshift's userspace ciphers or
// the kernel's dm-crypt (--crypto kernel), for resilience shift and none.
// Runs alternate (userspace then kernel, then kernel then userspace) in one
// boot, each on a fresh metadata area, and the result is the median of
// the per-pair ratios kernel/userspace: the guest is emulated (TCG), so
// only ratios measured side by side mean anything, and they are printed,
// not asserted (only that every run completed: TestOnlineCLI checks what the
// kernel path writes). An in-place O_DIRECT copy of the same range, timed in
// each round, is the floor both are also compared with.
func TestOnlineCryptoEngineSpeed(t *testing.T) {
	size := int64(*vmSpeedMiB) << 20
	const window = 4 << 20 // the online default
	const rounds = 3
	modes := []string{"shift", "none"}
	files, _, _ := cliKeys()
	disk := cliSparse(t, "speed.img", size+window)
	meta := cliSparse(t, "meta.img", 8<<20)
	var b strings.Builder
	fmt.Fprintf(&b, `. /etc/vm/lib.sh
SECT=%d
nproc 2>/dev/null | sed 's/^/CPUS /'
grep -m1 -o -w -E 'avx512f|vaes|aes' /proc/cpuinfo | sort -u | tr '\n' ' ' | sed 's/^/CPUFLAGS /'; echo
grep -E '^(driver|name)' /proc/crypto | paste - - | grep -i xts | head -3 | sed 's/^/KCRYPTO /'
# Old data: random ciphertext under key A (the content does not matter to
# the timing; --force skips the plausibility check it would fail).
dd if=/dev/urandom of=/dev/vda bs=1M count=%d conv=fsync 2>/dev/null
run() { # MODE ENGINE ROUND
	dd if=/dev/zero of=/dev/vdb bs=1M count=8 conv=fsync 2>/dev/null
	$PLAIN --key-file /etc/vm/keyA --size $SECT /dev/vda sp
	dmsetup mknodes
	sync; echo 3 > /proc/sys/vm/drop_caches
	t0=$(cut -d' ' -f1 /proc/uptime)
	cryptshift convert --online sp --metadata /dev/vdb --new-key-file /etc/vm/keyB --resilience $1 --force --crypto $2 --progress none /dev/vda > /tmp/out 2>&1
	rc=$?
	t1=$(cut -d' ' -f1 /proc/uptime)
	echo "SPEED $1 $2 $3 $rc $t0 $t1"
	[ $rc = 0 ] || sed 's/^/OUT /' /tmp/out
	# The data moved up a window in shift mode: move NAME's view back
	# down for the next run by starting over from byte 0 (random data
	# again as far as the next run's old key is concerned).
	dmsetup remove sp
}
copyrun() { # ROUND: the floor, an in-place O_DIRECT copy of the same range
	sync; echo 3 > /proc/sys/vm/drop_caches
	t0=$(cut -d' ' -f1 /proc/uptime)
	dd if=/dev/vda of=/dev/vda bs=4M count=%d iflag=direct oflag=direct conv=notrunc,fsync 2>/dev/null
	rc=$?
	t1=$(cut -d' ' -f1 /proc/uptime)
	echo "SPEED copy copy $1 $rc $t0 $t1"
}
`, size/512, size>>20, size/window)
	for r := 0; r < rounds; r++ {
		fmt.Fprintf(&b, "copyrun %d\n", r)
		for _, m := range modes {
			first, second := "userspace", "kernel"
			if r%2 == 1 {
				first, second = second, first
			}
			fmt.Fprintf(&b, "run %s %s %d\nrun %s %s %d\n", m, first, r, m, second, r)
		}
	}
	b.WriteString("echo SPEED-DONE\n")
	res := Run(t, Config{Image: cliImage, Disks: []string{disk, meta}, Files: files, Script: b.String(), Timeout: 15 * time.Minute})
	if !strings.Contains(res.Console, "SPEED-DONE") {
		t.Fatalf("the script did not finish\n%s", res.Tail(consoleTail))
	}
	for _, l := range regexp.MustCompile(`(?m)^(CPUS|CPUFLAGS|KCRYPTO) .*$`).FindAllString(res.Console, -1) {
		t.Logf("guest: %s", l)
	}
	secs := map[string]float64{} // mode engine round -> seconds
	for _, m := range regexp.MustCompile(`(?m)^SPEED (\S+) (\S+) (\d+) (\d+) ([\d.]+) ([\d.]+)$`).FindAllStringSubmatch(res.Console, -1) {
		if m[4] != "0" {
			t.Errorf("%s with %s crypto, round %s: convert exited %s\n%s", m[1], m[2], m[3], m[4], res.Tail(consoleTail))
			continue
		}
		t0, _ := strconv.ParseFloat(m[5], 64)
		t1, _ := strconv.ParseFloat(m[6], 64)
		secs[m[1]+" "+m[2]+" "+m[3]] = t1 - t0
	}
	if t.Failed() {
		return
	}
	if len(secs) != rounds*(2*len(modes)+1) {
		t.Fatalf("%d timed runs, want %d\n%s", len(secs), rounds*(2*len(modes)+1), res.Tail(consoleTail))
	}
	for _, m := range modes {
		var ratios []float64
		var pairs []string
		var overCopy [2][]float64 // userspace, kernel: time over the copy's
		for r := 0; r < rounds; r++ {
			u, k := secs[fmt.Sprintf("%s userspace %d", m, r)], secs[fmt.Sprintf("%s kernel %d", m, r)]
			if u <= 0 || k <= 0 {
				t.Fatalf("%s round %d: no timing (userspace %v s, kernel %v s)", m, r, u, k)
			}
			ratios = append(ratios, k/u)
			pairs = append(pairs, fmt.Sprintf("%.2f s / %.2f s", k, u))
			c := secs[fmt.Sprintf("copy copy %d", r)]
			if c <= 0 {
				t.Fatalf("round %d: no timing of the copy", r)
			}
			overCopy[0] = append(overCopy[0], u/c)
			overCopy[1] = append(overCopy[1], k/c)
		}
		sorted := slices.Clone(ratios)
		slices.Sort(sorted)
		med := func(x []float64) float64 { x = slices.Clone(x); slices.Sort(x); return x[len(x)/2] }
		msg := fmt.Sprintf("%s, %d MiB, 4 MiB windows: time with kernel crypto / with userspace crypto = %.2f (median of %d pairs: %s); over an in-place O_DIRECT copy: userspace %.2f, kernel %.2f",
			m, size>>20, sorted[len(sorted)/2], rounds, strings.Join(pairs, ", "), med(overCopy[0]), med(overCopy[1]))
		t.Log(msg)
		fmt.Printf("vm crypto engine speed: %s\n", msg)
	}
}
