package vm

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// lwImage is the guest that checks crash states: the CLI image plus the
// copier that builds each state and dm-snapshot to build it on.
var lwImage = Image{
	GoPackages: append(append([]string(nil), cliImage.GoPackages...), "./tests/vm/internal/lwapply"),
	GoTags:     cliImage.GoTags,
	Modules:    append(append([]string(nil), DefaultModules...), "dm-snapshot"),
}

// lwStatesPerBoot bounds the crash states one boot checks, so a boot's
// timeout stays meaningful and a failure costs at most one boot's work.
const lwStatesPerBoot = 70

// lwStateLib checks one crash state. The starting image (the worker's
// own copy) is moved forward (lwapply) to the state's barrier; a transient
// snapshot of it (its exceptions in memory, the worker's COW disk only
// their store) takes the writes the state keeps and everything recovery
// and the checks write, and is thrown away after, so the next state starts
// from the image again. DEVICE is the whole snapshot, as the recording's
// DEVICE was the whole logged disk (the header records its size), through
// a linear of its own; the writer's log and the metadata are slices of the
// snapshot beside it, so `recover` opens DEVICE exclusively as it wants to. Each worker W has its own devices (names ending in W), so two
// run side by side on the guest's two CPUs.
var lwStateLib = `
TOT=` + strconv.Itoa(lwTotalSect) + `
LOGS=` + strconv.Itoa(lwLogSect) + `
METAS=` + strconv.Itoa(lwMetaSect) + `
KEYS="--old-key-file /etc/vm/keyA --new-key-file /etc/vm/keyB"
now() { cut -d' ' -f1 /proc/uptime; }
lw_state() { # TAG ADVANCE(0|1) WORKER IMAGE COW
	r=$1 w=$3 img=$4 cow=$5 t0=$(now)
	n=data$w mnt=/mnt/$w
	mkdir -p $mnt
	if [ $2 = 1 ]; then
		stepq $r advance /tmp/adv$w lwapply -src /dev/vda -dst $img -plan /etc/vm/lw/adv.$r || show $r OUT /tmp/adv$w
	fi
	dmsetup create snap$w --table "0 $TOT snapshot $img $cow N 8" && dmsetup mknodes snap$w
	echo "RC $r snap $?"
	stepq $r apply /tmp/apply$w lwapply -src /dev/vda -dst /dev/mapper/snap$w -plan /etc/vm/lw/st.$r || show $r OUT /tmp/apply$w
	dmsetup create dv$w --table "0 $TOT linear /dev/mapper/snap$w 0"
	dmsetup create lg$w --table "0 8192 linear /dev/mapper/snap$w $LOGS"
	dmsetup create mt$w --table "0 8192 linear /dev/mapper/snap$w $METAS"
	dmsetup mknodes
	t1=$(now)
	stepq $r recover /tmp/rec$w cryptshift recover --activate $n $KEYS --metadata /dev/mapper/mt$w /dev/mapper/dv$w
	show $r REC /tmp/rec$w
	hdr=1
	if ! dmsetup info $n > /dev/null 2>&1 && grep -q "resource busy" /tmp/rec$w; then
		# The EBUSY bug TestOnlineCLILogWrites reports: activate as the
		# CLI should have, so that the state is still checked.
		echo "WORKAROUND $r"
		onlineguest activate -name $n -dev /dev/mapper/dv$w -old-key /etc/vm/keyA -new-key /etc/vm/keyB -meta /dev/mapper/mt$w
	fi
	if ! dmsetup info $n > /dev/null 2>&1 && grep -q "no cryptshift header" /tmp/rec$w; then
		echo "NOHEADER $r"
		hdr=0
		$PLAIN --key-file /etc/vm/keyA --size $DSECT /dev/mapper/dv$w $n
	fi
	dmsetup mknodes
	t2=$(now)
	step $r mount mount -t ext4 /dev/mapper/$n $mnt
	stepq $r check /tmp/check$w onlineguest check -crashed -dir $mnt/w -log /dev/mapper/lg$w -seed 9
	show $r CHECK /tmp/check$w
	step $r umount umount $mnt
	t3=$(now)
	stepq $r fsck /tmp/fsck$w e2fsck -fn /dev/mapper/$n || show $r FSCK /tmp/fsck$w
	t4=$(now)
	if [ $hdr = 1 ]; then
		stepq $r verify /tmp/v$w cryptshift verify --online $n $KEYS --metadata /dev/mapper/mt$w /dev/mapper/dv$w || show $r VERIFY /tmp/v$w
	fi
	t5=$(now)
	umount $mnt 2> /dev/null
	dmsetup remove $n
	dmsetup remove dv$w lg$w mt$w
	dmsetup remove snap$w
	# Guest seconds: build, recover, mount+check, fsck, verify, teardown
	# (for tuning; nothing is asserted on them).
	echo "LWTIME $r $t0 $t1 $t2 $t3 $t4 $t5 $(now)"
}
`

// lwWorkers is how many states the guest checks side by side.
const lwWorkers = 2

func busyEpochs(eps []Epoch) int {
	n := 0
	for _, ep := range eps {
		if len(ep.Writes) > 0 {
			n++
		}
	}
	return n
}

// checkCrashStates builds and checks states (sorted by prefix) in as few
// boots as lwStatesPerBoot allows, and returns how many passed every check.
func checkCrashStates(t *testing.T, l *WriteLog, base, logImg string, states []CrashState, keyFiles map[string][]byte) int {
	t.Helper()
	// Per worker w: the starting image, moved forward from state to
	// state and from boot to boot, and the snapshots' exception store;
	// vda is the log.
	var disks = []string{logImg}
	for w := 0; w < lwWorkers; w++ {
		prefix := cliSparse(t, fmt.Sprintf("prefix%d.img", w), lwTotalSect*512)
		if err := copyInto(base, prefix); err != nil {
			t.Fatal(err)
		}
		disks = append(disks, prefix, cliSparse(t, fmt.Sprintf("cow%d.img", w), 64<<20))
	}
	// The header copies sit at the end of the metadata device; a state
	// holding no byte of them has no conversion to recover, one whose
	// prefix holds a header (written and flushed whole) must recover.
	hdrOff := int64(lwMetaSect+8192)*512 - 2*4096
	at := make([]int, lwWorkers) // the entry each worker's image has been moved forward to
	for w := range at {
		at[w] = -1
	}
	passed := 0
	var busy []string
	for first := 0; first < len(states); first += lwStatesPerBoot {
		chunk := states[first:min(first+lwStatesPerBoot, len(states))]
		files := map[string][]byte{"/etc/vm/lwstate.sh": []byte(lwStateLib)}
		for k, v := range keyFiles {
			files[k] = v
		}
		var script strings.Builder
		script.WriteString(". /etc/vm/lib.sh\n. /etc/vm/lwstate.sh\n")
		// States are sorted by prefix; worker w takes every lwWorkers-th,
		// so each moves its image forward only.
		work := make([]strings.Builder, lwWorkers)
		for i, st := range chunk {
			r := fmt.Sprintf("s%03d", first+i)
			w := (first + i) % lwWorkers
			adv := 0
			if st.Prefix > at[w] {
				files["/etc/vm/lw/adv."+r] = l.PrefixPlan(at[w], st.Prefix).Bytes()
				at[w], adv = st.Prefix, 1
			}
			files["/etc/vm/lw/st."+r] = l.StatePlan(st).Bytes()
			// Each state's report goes to the console in one write, so
			// the two workers' lines never mix and a timeout still shows
			// every state checked before it.
			fmt.Fprintf(&work[w], "lw_state %s %d %d %s %s > /tmp/st.%s 2>&1; cat /tmp/st.%s\n", r, adv, w, guestDisk(1+2*w), guestDisk(2+2*w), r, r)
		}
		for w := range work {
			fmt.Fprintf(&script, "(\n%s) &\n", work[w].String())
		}
		script.WriteString("wait\n")
		script.WriteString("echo CRASH-STATES-DONE\n")
		res := Run(t, Config{Image: lwImage, Disks: disks, Files: files, Script: script.String(),
			Timeout:     10*time.Minute + time.Duration(len(chunk))*30*time.Second,
			ConsoleFile: cliConsole(fmt.Sprintf("logwrites-states%03d", first))})
		if !strings.Contains(res.Console, "CRASH-STATES-DONE") {
			t.Fatalf("the checks did not finish\n%s", res.Tail(consoleTail))
		}
		got := rcs(res.Console)
		for i, st := range chunk {
			r := fmt.Sprintf("s%03d", first+i)
			ok := wantRC(t, got, r, "snap", 0)
			ok = wantRC(t, got, r, "apply", 0) && ok
			if _, adv := got[r]["advance"]; adv {
				ok = wantRC(t, got, r, "advance", 0) && ok
			}
			noHeader := regexp.MustCompile(`(?m)^NOHEADER ` + r + `$`).MatchString(res.Console)
			worked := regexp.MustCompile(`(?m)^WORKAROUND ` + r + `$`).MatchString(res.Console)
			switch {
			case l.Writes(st.Prefix, hdrOff, 2*4096):
				if noHeader {
					t.Errorf("%s (%v): a header was durable, yet recover found none", r, st)
					ok = false
				} else if worked {
					busy = append(busy, r)
				} else {
					ok = wantRC(t, got, r, "recover", 0) && ok
				}
			case !l.StateWrites(st, hdrOff, 2*4096):
				if !noHeader {
					t.Errorf("%s (%v): no header had been written, and recover did not say so", r, st)
					ok = false
				}
			case worked:
				busy = append(busy, r)
			case !noHeader:
				// Only the unflushed writes hold header sectors: a torn
				// or lost copy may leave none valid, or one may be whole.
				ok = wantRC(t, got, r, "recover", 0) && ok
			}
			steps := []string{"mount", "check", "umount", "fsck"}
			if !noHeader {
				steps = append(steps, "verify")
			}
			for _, s := range steps {
				ok = wantRC(t, got, r, s, 0) && ok
			}
			if ok {
				passed++
				continue
			}
			t.Logf("%s: %v: %s | %s", r, st, strings.Join(taggedLines(res.Console, "REC", r), "; "), strings.Join(taggedLines(res.Console, "CHECK", r), "; "))
			for _, tag := range []string{"OUT", "FSCK", "VERIFY"} {
				if ls := taggedLines(res.Console, tag, r); len(ls) > 0 {
					t.Logf("%s:\n%s", r, strings.Join(ls, "\n"))
				}
			}
		}
		logStateTimes(t, res.Console)
		t.Logf("states %d..%d: boot %v, total %v (%v per state)", first, first+len(chunk)-1, res.BootTime.Round(time.Millisecond),
			res.Duration.Round(time.Millisecond), (res.Duration / time.Duration(len(chunk))).Round(time.Millisecond))
	}
	if len(busy) > 0 {
		t.Errorf("`cryptshift recover --activate` recovered but could not create NAME (device or resource busy) in %d of %d states %v; the test activated them itself and checked the rest", len(busy), len(states), busy)
	}
	return passed
}

func copyInto(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	return copyFile(f, dst)
}

// logStateTimes logs where the guest's time per state went (LWTIME lines).
func logStateTimes(t *testing.T, console string) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^LWTIME \S+((?: [\d.]+){7})$`)
	var sum [6]float64
	n := 0
	for _, m := range re.FindAllStringSubmatch(console, -1) {
		f := strings.Fields(m[1])
		for i := range sum {
			a, _ := strconv.ParseFloat(f[i], 64)
			b, _ := strconv.ParseFloat(f[i+1], 64)
			sum[i] += b - a
		}
		n++
	}
	if n > 0 {
		t.Logf("guest seconds per state (%d states): build %.2f, recover %.2f, mount+check %.2f, fsck %.2f, verify %.2f, teardown %.2f",
			n, sum[0]/float64(n), sum[1]/float64(n), sum[2]/float64(n), sum[3]/float64(n), sum[4]/float64(n), sum[5]/float64(n))
	}
}
