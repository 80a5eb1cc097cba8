package vm

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/testkit"
)

// crashSeeds are the seeds of one run of TestCrashInterop: three from
// CRYPTSHIFT_VM_SEED (base, base+1, base+2) when it is set, else from the clock.
func crashSeeds(t *testing.T) []uint64 {
	t.Helper()
	base := testkit.VMSeed(t)
	return []uint64{base, base + 1, base + 2}
}

// crashOutcome classifies the state a kill left a case in, from the status
// printed before recovery.
func crashOutcome(r *caseReport) string {
	if r == nil || len(r.rc["prestatus"]) == 0 {
		return "unknown"
	}
	if r.rc["prestatus"][0] != 0 {
		return "no header"
	}
	return "header"
}

// TestCrashInterop is issue 4, scenario 3: the conversions of scenario 2 in
// journal, checksum and shift mode, three side by side in one guest, with
// qemu killed from the host at a seeded pseudo-random moment after they
// start. Booted again on the same disks, `cryptshift recover` (twice: it must
// be idempotent) and the same `cryptshift convert` must finish each of them,
// `verify --data` must find the digests right, and cryptsetup must open a
// clean filesystem whose files hash as written.
//
// Boots are chained to save emulated boot time: boot k recovers and checks
// the disks seed k-1 left, then prepares the disks of seed k and is killed
// while converting them; the last boot only recovers and checks.
func TestCrashInterop(t *testing.T) {
	start := time.Now()
	seeds := crashSeeds(t)
	t.Logf("seeds %v (rerun with CRYPTSHIFT_VM_SEED=%d)", seeds, seeds[0])
	replayOnFailure(t, seeds[0])
	// 64 KiB windows make each 8 MiB conversion a hundred and twenty-eight
	// steps, several seconds in the guest, so a kill lands among them.
	const window = 64 << 10
	// The kill comes this long after the conversions start; guests on a
	// loaded host convert at varying speeds, so some kills land before the
	// first header or after the end, and those states must recover too.
	const maxDelay = 12 * time.Second
	// Left to the delay alone, whether a kill ever lands in the middle of
	// a conversion of each mode is luck. So in seed run i the case of mode
	// i starts first and is stopped (SIGSTOP) once it reports a seeded
	// window done, at most half of them: it is in progress, whatever the
	// delay, when the kill comes. The other two start then, and the kill
	// comes the seeded delay after them.
	const windows = interopFSSize / window
	xts := "aes-xts-plain64"
	payload := interopPayload(3)

	type seedRun struct {
		seed    uint64
		delay   time.Duration
		cases   []*interopCase
		stopped int // the case stopped in progress
		stopAt  int // after this many windows
	}
	runs := make([]*seedRun, len(seeds))
	for i, seed := range seeds {
		rng := rand.New(rand.NewPCG(seed, 0x6b696c6c))
		r := &seedRun{seed: seed, delay: RandomDelay(rng, 0, maxDelay)}
		for _, mode := range []string{"journal", "checksum", "shift"} {
			c := &interopCase{name: fmt.Sprintf("%s%d", mode, i), oldCipher: xts, oldKeyLen: 64,
				newCipher: xts, newKeyLen: 64, mode: mode, window: window}
			c.keys(rng)
			c.diskPath = sparseDisk(t, c.name+".img")
			r.cases = append(r.cases, c)
		}
		r.stopped, r.stopAt = i%len(r.cases), 1+rng.IntN(windows/2)
		runs[i] = r
	}

	var vmTime time.Duration
	kills, passed, total := 0, 0, 0
	outcomes := map[string]int{}
	prevConsole := "" // of the boot that was killed with prev's conversions
	for k := 0; k <= len(runs); k++ {
		var prev, cur *seedRun
		if k > 0 {
			prev = runs[k-1]
		}
		if k < len(runs) {
			cur = runs[k]
		}
		files := map[string][]byte{}
		payloadFiles(payload, files)
		var disks []string
		var script strings.Builder
		script.WriteString(interopPrelude + crashStop)
		if prev != nil {
			for _, c := range prev.cases {
				c.dev = guestDisk(len(disks))
				disks = append(disks, c.diskPath)
				c.files(files)
				fmt.Fprintf(&script, "( %s ) > /tmp/log.%s 2>&1 &\n", resumeLines(c), c.name)
			}
			script.WriteString("wait\n")
			for _, c := range prev.cases {
				fmt.Fprintf(&script, "cat /tmp/log.%s\n", c.name)
			}
		}
		cfg := Config{Image: interopImage, Files: files, Timeout: 5 * time.Minute}
		if cur != nil {
			for _, c := range cur.cases {
				c.dev = guestDisk(len(disks))
				disks = append(disks, c.diskPath)
				c.files(files)
				fmt.Fprintf(&script, "( %s ) > /tmp/log.%s 2>&1 &\n", c.prepLine(), c.name)
			}
			script.WriteString("wait\n")
			for _, c := range cur.cases {
				fmt.Fprintf(&script, "cat /tmp/log.%s\n", c.name)
			}
			sc := cur.cases[cur.stopped]
			fmt.Fprintf(&script, "cryptshift convert %s > /dev/null 2> /tmp/prog.%s &\ncrash_stop %s %d $!\n",
				sc.convertArgsWith("json --progress-interval 0"), sc.name, sc.name, cur.stopAt)
			script.WriteString("echo CRASH-CONVERT-START\n")
			for i, c := range cur.cases {
				if i != cur.stopped {
					fmt.Fprintf(&script, "cryptshift convert %s > /dev/null 2>&1 &\n", c.convertArgs())
				}
			}
			// Held so that the kill always comes from the host: a guest that
			// finished first would power off cleanly and test no crash.
			script.WriteString("wait\necho CONVERSIONS-FINISHED\nsleep 100000\n")
			cfg.KillOn = "CRASH-CONVERT-START"
			cfg.KillAfter = cur.delay
		} else {
			script.WriteString("echo CRASH-CHECKS-DONE\n")
		}
		cfg.Disks = disks
		cfg.Script = script.String()

		res := Run(t, cfg)
		vmTime += res.Duration
		if res.Killed {
			kills++
		}
		reps, err := parseReports(res.Console)
		if err != nil {
			t.Fatal(err)
		}
		if prev != nil {
			if cur == nil && !strings.Contains(res.Console, "CRASH-CHECKS-DONE") {
				t.Fatalf("the last boot did not finish its checks\n%s", res.Tail(consoleTail))
			}
			for _, c := range prev.cases {
				total++
				r := reps[c.name]
				out := crashOutcome(r)
				outcomes[out]++
				if checkResumed(t, c, r, payload) {
					passed++
				}
				if c == prev.cases[prev.stopped] {
					checkStopped(t, c, r, prevConsole)
				}
				pre := ""
				if r != nil {
					pre = summarizePre(r.pre)
				}
				t.Logf("seed %d, %s: kill %v after the start left %s%s", prev.seed, c.name, prev.delay.Round(time.Millisecond), out, pre)
			}
		}
		if cur != nil {
			for _, c := range cur.cases {
				r := reps[c.name]
				for _, s := range []string{"open-old", "mkfs", "mount-old", "fill", "umount-old", "close-old"} {
					if r == nil || len(r.rc[s]) != 1 || r.rc[s][0] != 0 {
						t.Fatalf("seed %d, %s: preparing the filesystem failed at %s\n%s", cur.seed, c.name, s, res.Tail(consoleTail))
					}
				}
			}
			if strings.Contains(res.Console, "CONVERSIONS-FINISHED") {
				t.Logf("seed %d: all conversions finished before the kill (%v)", cur.seed, cur.delay.Round(time.Millisecond))
			}
			t.Logf("seed %d: %s stopped after window %d of %d, the others killed %v after their start",
				cur.seed, cur.cases[cur.stopped].name, cur.stopAt, windows, cur.delay.Round(time.Millisecond))
		}
		prevConsole = res.Console
	}
	t.Logf("seeds %v: %d of %d interrupted conversions recovered and checked; %d boots, VM kills %d; outcomes %v; VM time %v, test %v",
		seeds, passed, total, len(runs)+1, kills, outcomes, vmTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	fmt.Printf("vm crash summary: seeds %v, scenarios passed %d/%d, VM kills %d, VM time %v\n",
		seeds, passed, total, kills, vmTime.Round(time.Millisecond))
}

// resumeLines is what a user does after the crash: look at the status,
// recover (twice, to show a second run is harmless), run the same convert
// again, audit the data, then the checks of scenario 2.
func resumeLines(c *interopCase) string {
	n := c.name
	return strings.Join([]string{
		fmt.Sprintf("cryptshift status --json %s > /tmp/pre.%s 2>&1; echo \"RC %s prestatus $?\"", c.dev, n, n),
		fmt.Sprintf("echo \"PRESTATUS %s $(tr -d '\\n' < /tmp/pre.%s)\"", n, n),
		fmt.Sprintf("step %s recover cryptshift recover %s", n, c.recoverArgs()),
		fmt.Sprintf("step %s recover2 cryptshift recover %s", n, c.recoverArgs()),
		c.convertLine(),
		fmt.Sprintf("step %s verify cryptshift verify --data %s", n, c.recoverArgs()),
		c.checkLine(),
	}, "\n")
}

// checkResumed asserts on one case after the crash: recovery succeeded, or,
// when the kill came before the conversion wrote its first header, reported
// exactly that; the resumed conversion, the audit and every check of
// scenario 2 passed.
func checkResumed(t *testing.T, c *interopCase, r *caseReport, payload map[string][]byte) bool {
	t.Helper()
	if r == nil {
		t.Errorf("%s: the guest reported nothing", c.name)
		return false
	}
	ok := true
	wantRecover := 0
	if crashOutcome(r) == "no header" {
		// A kill before the first header commit completed: the data area
		// was never written (that commit precedes any data write), so
		// recover must say there is nothing to recover, and nothing else.
		wantRecover = 5
		if !strings.Contains(strings.Join(r.out, "\n"), "no cryptshift header found") {
			t.Errorf("%s: status failed before recovery, and recover did not report a missing header", c.name)
			ok = false
		}
	}
	for _, s := range []string{"recover", "recover2"} {
		if rcs := r.rc[s]; len(rcs) != 1 || rcs[0] != wantRecover {
			t.Errorf("%s: %s exited %v, want %d", c.name, s, rcs, wantRecover)
			ok = false
		}
	}
	if !checkConverted(t, c, r, payload, "convert", "verify") {
		ok = false
	}
	if !ok {
		t.Logf("%s: state before recovery: %s", c.name, r.pre)
	}
	return ok
}

// summarizePre turns the status printed before recovery into a few words.
func summarizePre(pre string) string {
	var st statusJSON
	if err := json.Unmarshal([]byte(pre), &st); err != nil {
		return ""
	}
	s := fmt.Sprintf(" (%s, %d of %d windows", st.State, st.WindowsDone, st.WindowsTotal)
	if st.OpenWindow != nil {
		s += fmt.Sprintf(", window %d in flight", *st.OpenWindow)
	}
	return s + ")"
}

// crashStop is the guest function that stops the case TestCrashInterop
// keeps in progress.
const crashStop = `crash_stop() { # CASE N PID: stop PID once its progress says N windows are done
	while :; do
		d=$(grep -o '"windows_done":[0-9]*' /tmp/prog.$1 2>/dev/null | tail -n 1 | tr -dc 0-9)
		if [ -n "$d" ] && [ "$d" -ge $2 ]; then kill -STOP $3; echo "CRASH-STOPPED $1 $d"; return; fi
		kill -0 $3 2>/dev/null || { echo "CRASH-STOP-MISSED $1"; return; }
		sleep 0.1
	done
}
`

// checkStopped asserts on the case that was stopped in progress before the
// kill: cryptshift had reported windows done, so the status before
// recovery must show a conversion in progress.
func checkStopped(t *testing.T, c *interopCase, r *caseReport, killed string) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^CRASH-STOPPED ` + c.name + ` (\d+)$`).FindStringSubmatch(killed)
	if m == nil {
		t.Errorf("%s: the conversion exited before the window it was to be stopped at", c.name)
		return
	}
	var st statusJSON
	if r == nil || crashOutcome(r) != "header" || json.Unmarshal([]byte(r.pre), &st) != nil || st.State == "complete" {
		pre := ""
		if r != nil {
			pre = r.pre
		}
		t.Errorf("%s: stopped after cryptshift reported %s windows done, yet the status after the kill is not a conversion in progress: %s", c.name, m[1], pre)
	}
}
