package vm

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/testkit"
)

var vmKills = flag.Int("vm.kills", 21, "TestOnlineCLIKill: interrupted online conversions to aim for (each VM kill interrupts one per resilience mode)")

// killLanes are the conversions TestOnlineCLIKill runs side by side, one per
// resilience mode a crash must not corrupt (none is excluded: a crash in
// mode none is documented to corrupt).
var killLanes = []string{"journal", "checksum", "shift"}

// A lane's NAME serves killDataSize bytes converted in killWindow windows:
// sixty-four window steps of well under a second each, so kills land all
// over the conversion while each boot stays short.
const (
	killDataSize = 8 << 20
	killWindow   = 128 << 10
)

// killLib drives one lane through boots: each boot recovers what the kill
// left with `recover --all` and the table file the script writes, mounts,
// checks the previous writer's acknowledged fsyncs, the ballast and
// `verify --online`, then resumes the conversion under a new writer until
// the next kill. A lane whose conversion completed starts the reverse one
// (key B to key A, shift back down) on its other metadata slice, so every
// kill interrupts a conversion however fast the guest runs.
//
// Aux disk of a lane, in sectors: writer log [0, 8192), metadata slices
// [8192, 16384) and [16384, 24576), the generation at 24576, the ballast
// checksum at 24584.
var killLib = `
DSECT=` + strconv.Itoa(killDataSize/512) + `
KSHIFT=` + strconv.Itoa(killWindow/512) + `
lane_vars() { # NAME DEV AUX MODE IDX
	L=$1 dev=$2 aux=$3 mode=$4 idx=$5
	g=$(dd if=$aux bs=512 skip=24576 count=1 2>/dev/null | tr -dc 0-9)
	[ -n "$g" ] || g=0
	s=$((g % 2))
	if [ $s = 0 ]; then old=/etc/vm/keyA new=/etc/vm/keyB newhex=/etc/vm/keyB.hex
	else old=/etc/vm/keyB new=/etc/vm/keyA newhex=/etc/vm/keyA.hex; fi
	oldoff=0 newoff=0
	if [ $mode = shift ]; then
		if [ $s = 0 ]; then newoff=$KSHIFT; else oldoff=$KSHIFT; fi
	fi
	meta=/dev/mapper/m$s$L
	seed=$((BOOT * 100 + idx + 1)) prev=$(((BOOT - 1) * 100 + idx + 1))
}
each() { # FUNCTION: run it for every lane, with lane_vars set
	for _spec in $LANES; do
		lane_vars $(echo $_spec | tr : ' ')
		$1
	done
}
lane_setup() {
	dmsetup create l$L --table "0 8192 linear $aux 0"
	dmsetup create m0$L --table "0 8192 linear $aux 8192"
	dmsetup create m1$L --table "0 8192 linear $aux 16384"
	echo "$L $dev $old $new metadata=$meta" >> /etc/cryptshift/cryptshifttab
	echo "GEN $L $g"
	mkdir -p /mnt/$L
}
lane_init() {
	$PLAIN --key-file $old --size $DSECT $dev $L
	dmsetup mknodes
	step $L mkfs mkfs.ext4 -q -F /dev/mapper/$L
	step $L mount mount -t ext4 /dev/mapper/$L /mnt/$L
	mkdir /mnt/$L/w
	dd if=/dev/urandom of=/mnt/$L/ballast bs=1M count=2 conv=fsync 2>/dev/null
	sha256sum /mnt/$L/ballast | dd of=$aux bs=512 seek=24584 count=1 conv=sync,fsync 2>/dev/null
}
lane_after_crash() {
	fresh=0
	if ! dmsetup info $L > /dev/null 2>&1 && grep -q "($L): .*resource busy" /tmp/recover; then
		# recover --all recovered the window but could not create NAME (the
		# EBUSY bug the test reports); onlineguest activates as the CLI
		# should have, so that everything after it is still checked.
		echo "WORKAROUND $L"
		onlineguest activate -name $L -dev $dev -old-key $old -new-key $new -meta $meta
	fi
	if ! dmsetup info $L > /dev/null 2>&1; then
		# recover --all activates every lane with a header; a lane without
		# one was killed before its conversion recorded anything, so all
		# of it is still under the old mapping.
		stepq $L status /tmp/st.$L cryptshift status --metadata $meta $dev
		if grep -q "no cryptshift header" /tmp/st.$L; then
			echo "FRESH $L"
			fresh=1
			$PLAIN --key-file $old --size $DSECT --offset $oldoff $dev $L
		fi
	fi
	dmsetup mknodes
	echo "PROGRESS $L $(cryptshift status --json --metadata $meta $dev 2>/dev/null | grep -E '"(state|windows_done)"' | tr -d ' \n')"
	step $L mount mount -t ext4 /dev/mapper/$L /mnt/$L
	step $L check onlineguest check -crashed -dir /mnt/$L/w -log /dev/mapper/l$L -seed $prev
	dd if=$aux bs=512 skip=24584 count=1 2>/dev/null | head -n 1 > /tmp/sum.$L
	step $L ballast sha256sum -c /tmp/sum.$L
	if [ $fresh = 0 ]; then
		stepq $L verify /tmp/v.$L cryptshift verify --online $L --old-key-file $old --new-key-file $new --metadata $meta $dev
		show $L VERIFY /tmp/v.$L
	fi
	if [ -z "$FINAL" ] && cryptshift status --json --metadata $meta $dev 2>/dev/null | grep -q '"state": *"complete"'; then
		ng=$((g + 1))
		dd if=/dev/zero of=/dev/mapper/m$((ng % 2))$L bs=1M count=4 conv=fsync 2>/dev/null
		echo $ng | dd of=$aux bs=512 seek=24576 count=1 conv=sync,fsync 2>/dev/null
		echo "NEXT-GEN $L $ng"
	fi
}
lane_writer() {
	onlineguest writer -dir /mnt/$L/w -log /dev/mapper/l$L -seed $seed > /tmp/writer.$L 2>&1 &
	echo $! > /tmp/wpid.$L
}
lane_convert() {
	# Every other boot, the shift lane lets the kernel do the crypto: kills
	# land in such runs, and resumes switch engines both ways.
	kc=
	if [ $mode = shift ] && [ $((BOOT % 2)) = 1 ]; then kc="--crypto kernel"; echo "KERNEL-CRYPTO $L $BOOT"; fi
	# The boot's plan (bootPlan.script) may force this lane into a state
	# for the kill to find.
	eval plan=\${PLAN_$L:-free}
	case $plan in
	pre) dmsetup suspend $meta; echo "PRE-HEADER $L"; : > /tmp/reached.$L ;;
	freeze:*) lane_freeze ${plan#freeze:} & ;;
	esac
	echo "CONVERT-START $L $(cut -d' ' -f1 /proc/uptime)"
	# JSON progress, a line per window: lane_freeze watches windows_done.
	stepq $L convert /tmp/conv.$L cryptshift convert --online $L --new-key-file $new --metadata $meta --window ` + strconv.Itoa(killWindow) + ` --resilience $mode $kc --progress json --progress-interval 0 $dev
	# A conversion that fails before the kill says why (lane_final shows
	# the output of the last boot's).
	[ "$_r" = 0 ] || [ -n "$FINAL" ] || { grep -v '"state":"converting"' /tmp/conv.$L | sed "s/^/OUT $L /"; }
	: > /tmp/ended.$L
	echo "CONVERT-END $L $(cut -d' ' -f1 /proc/uptime)"
}
lane_freeze() { # N: suspend the metadata device once window N is reported done
	while [ ! -e /tmp/ended.$L ]; do
		d=$(grep -o '"windows_done":[0-9]*' /tmp/conv.$L 2>/dev/null | tail -n 1 | tr -dc 0-9)
		if [ -n "$d" ] && [ "$d" -ge $1 ]; then
			dmsetup suspend $meta
			echo "FROZEN $L $d"
			: > /tmp/reached.$L
			return
		fi
		sleep 0.1
	done
	echo "FREEZE-MISSED $L"
	: > /tmp/reached.$L
}
lane_final() {
	kill -TERM $(cat /tmp/wpid.$L)
	wait $(cat /tmp/wpid.$L)
	cat /tmp/writer.$L
	grep -v '"state":"converting"' /tmp/conv.$L > /tmp/convout.$L
	show $L OUT /tmp/convout.$L
	stepq $L verify-final /tmp/v.$L cryptshift verify --online $L --old-key-file $old --new-key-file $new --metadata $meta $dev
	show $L VERIFY /tmp/v.$L
	step $L umount umount /mnt/$L
	stepq $L fsck-live /tmp/fsck.$L e2fsck -fn /dev/mapper/$L || show $L FSCK /tmp/fsck.$L
	echo "TARGETS $L $(dmsetup table $L | wc -l)"
	step $L showkeys sh -c "dmsetup table --showkeys $L | grep -q $(cat $newhex)"
	step $L remove dmsetup remove $L
	step $L reopen $PLAIN --key-file $new --size $DSECT --offset $newoff $dev ${L}f
	stepq $L fsck-reopened /tmp/fsck.$L e2fsck -fn /dev/mapper/${L}f || show $L FSCK /tmp/fsck.$L
	step $L mount-reopened mount -t ext4 /dev/mapper/${L}f /mnt/$L
	step $L check-final onlineguest check -dir /mnt/$L/w -log /dev/mapper/l$L -seed $seed
	step $L ballast-final sha256sum -c /tmp/sum.$L
	umount /mnt/$L
	cryptsetup close ${L}f
}
`

// startConverts starts every lane's conversion side by side, in
// $cpids; the writers run on.
const startConverts = `cpids=
for _spec in $LANES; do
	( lane_vars $(echo $_spec | tr : ' '); lane_convert ) &
	cpids="$cpids $!"
done
`

// killBootScript is boot number boot of the chain, killed as plan says;
// the last one (plan nil) converts to the end instead of being killed.
func killBootScript(boot int, lanes string, plan *bootPlan) string {
	var b strings.Builder
	fmt.Fprintf(&b, ". /etc/vm/lib.sh\n. /etc/vm/kill.sh\nBOOT=%d\nLANES=%q\n", boot, lanes)
	if plan == nil {
		b.WriteString("FINAL=1\n")
	}
	b.WriteString("mkdir -p /etc/cryptshift\n: > /etc/cryptshift/cryptshifttab\neach lane_setup\ndmsetup mknodes\n")
	if boot == 0 {
		b.WriteString("each lane_init\n")
	} else {
		b.WriteString("cryptshift recover --all --tab /etc/cryptshift/cryptshifttab > /tmp/recover 2>&1\necho \"RC all recover-all $?\"\nshow all RECOVER /tmp/recover\n")
		b.WriteString("each lane_after_crash\n")
	}
	b.WriteString("each lane_writer\nsleep 1\n")
	if plan == nil {
		b.WriteString(startConverts + "wait $cpids\neach lane_final\necho KILL-LANES-DONE\n")
		return b.String()
	}
	b.WriteString(plan.script())
	b.WriteString("echo " + triggerStart + "\n" + startConverts)
	b.WriteString(`if [ -n "$PLANNED" ]; then
	for _l in $PLANNED; do while [ ! -e /tmp/reached.$_l ]; do sleep 0.1; done; done
	echo ` + triggerPlan + `
fi
wait $cpids
echo ` + triggerFinished + `
sleep 100000
`)
	return b.String()
}

// issue17Seed is the seed of the run issue 17 reports: a lane completed,
// restarted, was killed, completed again, and the last boot's rerun of
// the finished conversion was refused.
const issue17Seed = 1796156411964381375

// TestOnlineCLIKill is issue 5, scenario 2: online conversions through the
// CLI (journal, checksum and shift side by side, each under a mounted ext4
// with a writer logging acknowledged fsyncs) with the VM killed again and
// again on the same disks, as killPlans lays out: at seeded moments, and in
// the states every chain must cover (before a header, after a restart,
// with --crypto kernel). After each kill: `recover --all` with the table
// file the script writes, mount, every acknowledged fsync's file holds its
// content, the ballast is intact, `verify --online` is clean, the lanes
// the plan forced are in the state it forced, and the conversion resumes.
// The last boot converts to the end and checks as scenario 1 does.
//
// "seeded" is a new chain each run (CRYPTSHIFT_VM_SEED replays one);
// "issue17" always runs issue 17's seed with every conversion complete
// before the last boot, so that boot reruns finished conversions.
func TestOnlineCLIKill(t *testing.T) {
	seed := testkit.VMSeed(t)
	boots := max((*vmKills+len(killLanes)-1)/len(killLanes), 2)
	t.Run("seeded", func(t *testing.T) {
		replayOnFailure(t, seed)
		runKillChain(t, seed, boots, false)
	})
	t.Run("issue17", func(t *testing.T) {
		replayOnFailure(t, issue17Seed)
		runKillChain(t, issue17Seed, 3, true)
	})
}

// runKillChain boots the chain of kills plans derive from seed, then the
// final boot.
func runKillChain(t *testing.T, seed uint64, boots int, finishLast bool) {
	start := time.Now()
	rng := rand.New(rand.NewPCG(seed, 0x6b696c6c))
	plans := killPlans(rng, boots, finishLast)
	t.Logf("seed %d (rerun with CRYPTSHIFT_VM_SEED=%d); %d VM kills, each interrupting %d conversions", seed, seed, boots, len(killLanes))
	files, _, _ := cliKeys()
	files["/etc/vm/kill.sh"] = []byte(killLib)
	var disks, specs []string
	for i, l := range killLanes {
		disks = append(disks, cliSparse(t, l+".img", cliDiskSize), cliSparse(t, l+"-aux.img", 13<<20))
		specs = append(specs, fmt.Sprintf("%s:%s:%s:%s:%d", l, guestDisk(2*i), guestDisk(2*i+1), l, i))
	}
	lanes := strings.Join(specs, " ")

	var vmTime time.Duration
	kills := 0
	var cov killCoverage
	progress := map[string][]string{}
	workarounds := 0
	var recoverFailures []string
	var prev *Result // the boot before this one: its plan is checked now
	for boot := 0; boot <= boots; boot++ {
		final := boot == boots
		var plan *bootPlan
		if !final {
			plan = &plans[boot]
		}
		cfg := Config{Image: cliImage, Disks: disks, Files: files, Script: killBootScript(boot, lanes, plan), Timeout: 4 * time.Minute,
			ConsoleFile: cliConsole(fmt.Sprintf("kill-%s-boot%02d", strings.ReplaceAll(t.Name(), "/", "-"), boot))}
		if !final {
			cfg.KillOn, cfg.KillAfter = plan.trigger, plan.delay
		} else {
			cfg.Timeout = 8 * time.Minute
		}
		res := Run(t, cfg)
		vmTime += res.Duration
		got := rcs(res.Console)
		if boot > 0 {
			// recover --all exits non-zero when a lane was killed before its
			// conversion wrote a header: that is right, and checked below.
			anyFresh := regexp.MustCompile(`(?m)^FRESH `).MatchString(res.Console)
			recOut := strings.Join(taggedLines(res.Console, "RECOVER", "all"), "\n")
			if c := got["all"]["recover-all"]; len(c) != 1 || c[0] != 0 && !anyFresh || strings.Contains(recOut, "resource busy") {
				recoverFailures = append(recoverFailures, fmt.Sprintf("boot %d: recover --all exited %v:\n%s", boot, c,
					recOut))
			}
			found := map[string]laneFound{}
			for _, l := range killLanes {
				activated := regexp.MustCompile(`(?m)^RECOVER all Activated ` + l + `: `).MatchString(res.Console)
				worked := regexp.MustCompile(`(?m)^WORKAROUND ` + l + `$`).MatchString(res.Console)
				f := foundAfterKill(res.Console, l)
				found[l] = f
				switch {
				case worked:
					workarounds++
				case f.fresh:
				case !activated:
					t.Errorf("boot %d, %s: recover --all neither activated the device nor found it without a header", boot, l)
				}
				progress[l] = append(progress[l], f.String())
				steps := []string{"mount", "check", "ballast"}
				if !f.fresh {
					steps = append(steps, "verify")
				}
				for _, s := range steps {
					if !wantRC(t, got, l, s, 0) {
						t.Logf("boot %d, %s:\n%s\n%s", boot, l, strings.Join(taggedLines(res.Console, "VERIFY", l), "\n"), res.Tail(consoleTail))
					}
				}
			}
			checkPlan(t, boot-1, plans[boot-1], prev, found)
			cov.add(prev.Console, found)
		}
		if final {
			if !strings.Contains(res.Console, "KILL-LANES-DONE") {
				t.Fatalf("the last boot did not finish\n%s", res.Tail(consoleTail))
			}
			for _, l := range killLanes {
				for _, s := range []string{"convert", "verify-final", "umount", "fsck-live", "showkeys", "remove", "reopen",
					"fsck-reopened", "mount-reopened", "check-final", "ballast-final"} {
					if !wantRC(t, got, l, s, 0) {
						t.Logf("%s:\n%s", l, strings.Join(append(taggedLines(res.Console, "OUT", l), taggedLines(res.Console, "FSCK", l)...), "\n"))
					}
				}
				if m := regexp.MustCompile(`(?m)^TARGETS ` + l + ` (\d+)$`).FindStringSubmatch(res.Console); m == nil || m[1] != "1" {
					t.Errorf("%s: the live table does not have exactly one target at the end: %v", l, m)
				}
				stallLines(t, res.Console, l)
			}
			break
		}
		if !res.Killed {
			t.Fatalf("boot %d was not killed", boot)
		}
		kills++
		if boot == 0 {
			for _, l := range killLanes {
				for _, s := range []string{"mkfs", "mount"} {
					wantRC(t, got, l, s, 0)
				}
			}
		}
		t.Logf("boot %d: %v (boot %v, total %v)", boot, plan, res.BootTime.Round(time.Millisecond), res.Duration.Round(time.Millisecond))
		if t.Failed() {
			t.FailNow()
		}
		prev = res
	}
	for _, l := range killLanes {
		t.Logf("%s: progress found after each kill: %v", l, progress[l])
	}
	if len(recoverFailures) > 0 {
		t.Errorf("`cryptshift recover --all` failed after %d of %d kills; %d devices were activated by the test's workaround instead. First:\n%s",
			len(recoverFailures), kills, workarounds, recoverFailures[0])
	}
	t.Logf("seed %d: VM kills %d, interrupted conversions %d (%v); VM time %v, test %v",
		seed, kills, kills*len(killLanes), cov, vmTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	fmt.Printf("vm online CLI kill summary: %s seed %d, VM kills %d, interrupted conversions %d (%v), VM time %v\n",
		t.Name(), seed, kills, kills*len(killLanes), cov, vmTime.Round(time.Millisecond))
}
