package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/testkit"
)

var vmFioMiB = flag.Int("vm.fio-mib", 8, "TestOnlineCLIFilesystemsAndLoad: MiB of NAME fio loads (and converts) in the Fio lane")

// fsImage is cliImage with the other filesystems' modules and tools and
// util-linux's fstrim (busybox has its own; the script calls the real one
// by path). fioImage adds fio, whose shared libraries (ceph's, ICU's: some
// 80 MB) would make every boot's initramfs that much larger, so only the
// boot that runs fio has it.
var (
	fsImage = Image{
		GoPackages: cliImage.GoPackages, GoTags: cliImage.GoTags,
		Modules: append(slices.Clone(DefaultModules), "xfs", "btrfs"),
		Tools:   append(slices.Clone(DefaultTools), "mkfs.xfs", "xfs_repair", "mkfs.btrfs", "btrfs", "fstrim"),
	}
	fioImage = Image{GoPackages: fsImage.GoPackages, GoTags: fsImage.GoTags, Modules: fsImage.Modules,
		Tools: append(slices.Clone(fsImage.Tools), "fio")}
)

// The filesystem lanes' NAMEs serve fsDataSize bytes in fsWindow windows
// (the online default), the Fio lane's in fioWindow windows: eight each,
// since under emulation a window costs seconds however small. 32 MiB is as
// small as mkfs.xfs goes with two allocation groups (xfs_repair -n cannot
// check the geometry of one); btrfs gets mixed block groups, which
// mkfs.btrfs suggests below 1 GiB (without them it needs 110 MiB).
// fsMetaSectors is each lane's metadata slice: journal mode keeps two
// windows there.
const (
	fsDataSize    = 32 << 20
	fsWindow      = 4 << 20
	fioWindow     = 1 << 20
	fsMetaSectors = 3 * fsWindow / 512
	fsSlotSectors = 8192 + fsMetaSectors
)

// perfOptions are the cryptsetup flags that give a plain mapping every
// format-neutral dm-crypt option, and tableOpts the kernel's names of them
// as the table prints them.
const perfOptions = "--allow-discards --perf-same_cpu_crypt --perf-submit_from_crypt_cpus --perf-no_read_workqueue --perf-no_write_workqueue"

var tableOpts = []string{"allow_discards", "same_cpu_crypt", "submit_from_crypt_cpus", "no_read_workqueue", "no_write_workqueue"}

// fsLane is one filesystem converted online under the fsync writer and cut
// by the power cut of the first boot.
type fsLane struct {
	name, fs, mode string
	opts           bool // opened with perfOptions (and trimmed during the conversion)
}

var fsLanes = []fsLane{
	{"xfs", "xfs", "journal", true},
	{"btrfs", "btrfs", "checksum", false},
}

// fsLib is sourced after lib.sh. Aux disk: lane slots of cliSlotSize (the
// writer's fsync log, then the metadata), one per lane and the fio lane,
// then the lanes' ballast checksums, 8 sectors each, at BALLAST.
const fsLib = `
export TEST_DIR=/tmp TEST_DEV=1 QA_CHECK_FS=1 # mkfs.xfs makes filesystems below 300 MiB only for fstests
mkfs_lane() { # FS DEV
	case $1 in
	xfs) mkfs.xfs -q -f -d agcount=2 $2 ;;
	btrfs) mkfs.btrfs -q -f -M $2 ;;
	esac
}
fsck_lane() { # FS DEV
	case $1 in
	xfs) xfs_repair -n $2 ;;
	btrfs) btrfs check --readonly $2 ;;
	esac
}
# sampler: the options of every crypt target on the machine, until
# /tmp/sampler.stop exists; only distinct lines are kept.
sampler() {
	n=0
	while [ ! -e /tmp/sampler.stop ]; do
		dmsetup table 2>/dev/null | awk '$4 == "crypt" { o = ""; for (i = 11; i <= NF; i++) o = o " " $i; print "OPTSAMPLE " $1 o }' >> /tmp/samples
		n=$((n + 1))
		sleep 0.2
	done
	sort -u /tmp/samples
	echo "SAMPLER-ROUNDS $n"
}
# trimmer LANE: fstrim the lane's filesystem every few seconds until its
# conversion ends, with a file made and removed before each run so there
# is always something freed since the last one (the writer frees more).
# Each run trims all the free space, which the emulated disk punches out.
trimmer() {
	i=0
	while [ ! -e /tmp/ended.$1 ]; do
		dd if=/dev/urandom of=/mnt/$1/junk bs=64k count=4 conv=fsync 2>/dev/null
		rm -f /mnt/$1/junk
		/usr/local/sbin/fstrim -v /mnt/$1 > /tmp/trim.$1 2>&1
		echo "TRIM $1 $i $? $(tr '\n' ' ' < /tmp/trim.$1)"
		i=$((i + 1))
		sleep 3
	done
}
# fsslots LANE AUX SLOT: the writer log l<LANE> (4 MiB) and metadata
# m<LANE> slices of the lane's slot.
fsslots() {
	_b=$(($3 * SLOT))
	dmsetup create l$1 --table "0 8192 linear $2 $_b"
	dmsetup create m$1 --table "0 $MSECT linear $2 $((_b + 8192))"
	dmsetup mknodes
}
opts_of() { # NAME: the options field of each crypt target
	dmsetup table $1 | awk '$3 == "crypt" { o = ""; for (i = 10; i <= NF; i++) o = o " " $i; print "OPTS" o }'
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }
`

// fsLaneFirstBoot makes lane l's filesystem and starts its conversion,
// which the kill interrupts.
func fsLaneFirstBoot(l fsLane, dev, aux string, idx int) string {
	opts := ""
	if l.opts {
		opts = perfOptions
	}
	trim := ""
	if l.opts {
		trim = fmt.Sprintf("trimmer %s &\n", l.name)
	}
	return fmt.Sprintf(`
fsslots %[1]s %[2]s %[3]d
$PLAIN %[4]s --key-file /etc/vm/keyA --size $DSECT %[5]s %[1]s
dmsetup mknodes
step %[1]s mkfs mkfs_lane %[6]s /dev/mapper/%[1]s
mkdir -p /mnt/%[1]s
step %[1]s mount mount -t %[6]s /dev/mapper/%[1]s /mnt/%[1]s
mkdir /mnt/%[1]s/w
dd if=/dev/urandom of=/mnt/%[1]s/ballast bs=1M count=4 conv=fsync 2>/dev/null
sha256sum /mnt/%[1]s/ballast | dd of=%[2]s bs=512 seek=$((BALLAST + %[3]d * 8)) count=1 conv=sync,fsync 2>/dev/null
echo "OPENED %[1]s$(opts_of %[1]s | tr '\n' ' ')"
onlineguest writer -dir /mnt/%[1]s/w -log /dev/mapper/l%[1]s -seed %[7]d > /tmp/writer.%[1]s 2>&1 &
%[8]s(
	echo "CONVERT-START %[1]s $(uptime_s)"
	stepq %[1]s convert /tmp/conv.%[1]s cryptshift convert --online %[1]s --new-key-file /etc/vm/keyB --metadata /dev/mapper/m%[1]s --window %[9]d --resilience %[10]s --progress json --progress-interval 0 %[5]s
	: > /tmp/ended.%[1]s
	grep -v '"state":"converting"' /tmp/conv.%[1]s | sed 's/^/OUT %[1]s /'
) &
`, l.name, aux, idx, opts, dev, l.fs, 1+idx, trim, fsWindow, l.mode)
}

// fsLaneSecondBoot checks what the kill left of lane l after `recover
// --all`, resumes the conversion to the end under a new writer, and checks
// the result as TestOnlineCLI does, with the filesystem's own checker.
func fsLaneSecondBoot(l fsLane, dev, aux string, idx int) string {
	trim := ""
	if l.opts {
		trim = fmt.Sprintf("trimmer %s &\n", l.name)
	}
	return fmt.Sprintf(`
echo "RECOVERED %[1]s$(opts_of %[1]s | tr '\n' ' ')"
mkdir -p /mnt/%[1]s
step %[1]s mount mount -t %[6]s /dev/mapper/%[1]s /mnt/%[1]s
step %[1]s check onlineguest check -crashed -dir /mnt/%[1]s/w -log /dev/mapper/l%[1]s -seed %[7]d
dd if=%[2]s bs=512 skip=$((BALLAST + %[3]d * 8)) count=1 2>/dev/null | head -n 1 > /tmp/sum.%[1]s
step %[1]s ballast sha256sum -c /tmp/sum.%[1]s
stepq %[1]s verify /tmp/v.%[1]s cryptshift verify --online %[1]s --old-key-file /etc/vm/keyA --new-key-file /etc/vm/keyB --metadata /dev/mapper/m%[1]s %[5]s
show %[1]s VERIFY /tmp/v.%[1]s
echo "PROGRESS %[1]s $(cryptshift status --json --metadata /dev/mapper/m%[1]s %[5]s 2>/dev/null | grep -E '"(state|windows_done)"' | tr -d ' \n')"
onlineguest writer -dir /mnt/%[1]s/w -log /dev/mapper/l%[1]s -seed %[8]d > /tmp/writer.%[1]s 2>&1 &
echo $! > /tmp/wpid.%[1]s
%[9]s(
	echo "CONVERT-START %[1]s $(uptime_s)"
	stepq %[1]s convert /tmp/conv.%[1]s cryptshift convert --online %[1]s --new-key-file /etc/vm/keyB --metadata /dev/mapper/m%[1]s --window %[10]d --resilience %[11]s --progress json --progress-interval 0 %[5]s
	: > /tmp/ended.%[1]s
	echo "CONVERT-END %[1]s $(uptime_s)"
	grep -v '"state":"converting"' /tmp/conv.%[1]s | sed 's/^/OUT %[1]s /'
) &
echo $! > /tmp/cpid.%[1]s
`, l.name, aux, idx, 0, dev, l.fs, 1+idx, 101+idx, trim, fsWindow, l.mode)
}

// fsLaneFinal runs once lane l's conversion has ended.
func fsLaneFinal(l fsLane, dev string) string {
	return fmt.Sprintf(`
kill -TERM $(cat /tmp/wpid.%[1]s)
wait $(cat /tmp/wpid.%[1]s)
cat /tmp/writer.%[1]s
step %[1]s umount umount /mnt/%[1]s
stepq %[1]s fsck-live /tmp/fsck.%[1]s fsck_lane %[2]s /dev/mapper/%[1]s || show %[1]s FSCK /tmp/fsck.%[1]s
echo "FINAL %[1]s$(opts_of %[1]s | tr '\n' ' ')"
echo "TARGETS %[1]s $(dmsetup table %[1]s | wc -l)"
step %[1]s showkeys sh -c "dmsetup table --showkeys %[1]s | grep -q $(cat /etc/vm/keyB.hex)"
step %[1]s remove dmsetup remove %[1]s
step %[1]s reopen $PLAIN --key-file /etc/vm/keyB --size $DSECT %[3]s %[1]sf
stepq %[1]s fsck-reopened /tmp/fsck.%[1]s fsck_lane %[2]s /dev/mapper/%[1]sf || show %[1]s FSCK /tmp/fsck.%[1]s
step %[1]s mount-reopened mount -t %[2]s /dev/mapper/%[1]sf /mnt/%[1]s
step %[1]s check-final onlineguest check -dir /mnt/%[1]s/w -log /dev/mapper/l%[1]s -seed %[4]d
step %[1]s ballast-final sha256sum -c /tmp/sum.%[1]s
umount /mnt/%[1]s
cryptsetup close %[1]sf
`, l.name, l.fs, dev, 101+laneIndex(l.name))
}

func laneIndex(name string) int {
	for i, l := range fsLanes {
		if l.name == name {
			return i
		}
	}
	panic("no lane " + name)
}

// fioLane converts NAME "fio" (every table option set) from key A to key
// B in shift mode with the kernel doing the crypto, while fio writes
// random blocks of 4 to 64 KiB with O_DIRECT at queue depth 32, each
// carrying a crc32c fio checks: passes over the whole of NAME, each with
// its own seed (so a lost write leaves an older pass's block, which fails
// the check), one after the other from before the conversion starts until
// it ends. Then fio's verify pass reads the last pass back, through NAME
// and through a fresh `cryptsetup open` with key B.
func fioLane(dev, aux string, idx int) string {
	return fmt.Sprintf(`
FIOSECT=%[4]d
fsslots fio %[2]s %[3]d
$PLAIN `+perfOptions+` --key-file /etc/vm/keyA --size $FIOSECT %[1]s fio
dmsetup mknodes
ENG=libaio
fio --name=probe --filename=/dev/mapper/fio --size=1M --rw=read --bs=4k --direct=1 --ioengine=io_uring --iodepth=4 > /tmp/fio.probe 2>&1 && ENG=io_uring
echo "FIO-ENGINE $ENG"
FJ="--name=load --size=%[5]dM --rw=randwrite --bsrange=4k-64k --direct=1 --ioengine=$ENG --iodepth=32 --verify=crc32c --verify_fatal=1 --group_reporting"
stepq fio fill /tmp/fio.fill fio $FJ --filename=/dev/mapper/fio --randseed=100 --do_verify=1 || show fio FIO /tmp/fio.fill
echo 100 > /tmp/fio.seed
(
	s=101
	while [ ! -e /tmp/fio.convdone ]; do
		t0=$(uptime_s)
		: > /tmp/fio.started
		fio $FJ --filename=/dev/mapper/fio --randseed=$s --do_verify=1 > /tmp/fio.pass 2>&1
		r=$?
		echo "FIO-PASS $s $r $t0 $(uptime_s)"
		[ $r = 0 ] || { show fio FIO /tmp/fio.pass; break; }
		echo $s > /tmp/fio.seed
		s=$((s + 1))
	done
) &
fpid=$!
while [ ! -e /tmp/fio.started ]; do sleep 0.1; done
sleep 1
echo "CONVERT-START fio $(uptime_s)"
stepq fio convert /tmp/conv.fio cryptshift convert --online fio --new-key-file /etc/vm/keyB --metadata /dev/mapper/mfio --window %[6]d --resilience shift --crypto kernel --progress plain %[1]s
echo "CONVERT-END fio $(uptime_s)"
: > /tmp/fio.convdone
sed 's/^/OUT fio /' /tmp/conv.fio
wait $fpid
seed=$(cat /tmp/fio.seed)
echo "FIO-LAST $seed"
stepq fio verify-live /tmp/fio.v fio $FJ --filename=/dev/mapper/fio --randseed=$seed --verify_only || show fio FIO /tmp/fio.v
echo "FINAL fio$(opts_of fio | tr '\n' ' ')"
echo "TARGETS fio $(dmsetup table fio | wc -l)"
echo "PRIVATE-LEFT fio $(dmsetup ls | grep -c -- -crypt-)"
step fio remove dmsetup remove fio
step fio reopen $PLAIN --key-file /etc/vm/keyB --size $FIOSECT --offset %[7]d %[1]s fiof
stepq fio verify-reopened /tmp/fio.v fio $FJ --filename=/dev/mapper/fiof --randseed=$seed --verify_only || show fio FIO /tmp/fio.v
cryptsetup close fiof
`, dev, aux, idx, *vmFioMiB<<20/512, *vmFioMiB, fioWindow, fioWindow/512)
}

// TestOnlineCLIFilesystemsAndLoad is issue 14, items 3 and 4, in two boots.
// Boot 1: XFS (journal mode, every table option, fstrim over and over) and
// Btrfs (checksum mode) are converted online under the fsync writer until
// the power cut, at a seeded moment once both have converted a few
// windows. Boot 2: the Fio lane (fioLane) runs to the end beside the
// rest: `recover --all`
// (the table file gives XFS its options again, in crypttab's names), each
// filesystem mounts, every acknowledged fsync is there, the ballast and
// `verify --online` are clean; the conversions resume under new writers to
// the end; then xfs_repair -n and btrfs check are clean on NAME and on a
// fresh `cryptsetup open` with key B, which mounts with every file intact.
// Throughout, a sampler reads `dmsetup table` of every device: each crypt
// target of a lane (NAME, its hold and kernel crypto devices) carries
// exactly the options NAME was opened with.
func TestOnlineCLIFilesystemsAndLoad(t *testing.T) {
	start := time.Now()
	seed := testkit.VMSeed(t)
	replayOnFailure(t, seed)
	rng := rand.New(rand.NewPCG(seed, 0x66736c64))
	killDelay := RandomDelay(rng, 0, 1500*time.Millisecond)
	killAt := 1 + rng.IntN(2) // windows each lane converts before the kill is armed
	t.Logf("seed %d (rerun with CRYPTSHIFT_VM_SEED=%d): kill %v after both lanes converted %d windows", seed, seed, killDelay, killAt)

	files, _, _ := cliKeys()
	files["/etc/vm/fs.sh"] = []byte(fsLib)
	var tab strings.Builder
	var disks []string
	nl := len(fsLanes)
	for i, l := range fsLanes {
		disks = append(disks, cliSparse(t, l.name+".img", fsDataSize+fsWindow))
		o := ""
		if l.opts {
			o = ",discard,same-cpu-crypt,submit-from-crypt-cpus,no-read-workqueue,no-write-workqueue"
		}
		fmt.Fprintf(&tab, "%s %s /etc/vm/keyA /etc/vm/keyB metadata=/dev/mapper/m%s%s\n", l.name, guestDisk(i), l.name, o)
	}
	fioDev := guestDisk(nl)
	disks = append(disks, cliSparse(t, "fio.img", int64(*vmFioMiB)<<20+fioWindow))
	aux := guestDisk(nl + 1)
	ballast := (nl + 1) * fsSlotSectors
	disks = append(disks, cliSparse(t, "aux.img", int64(ballast*512+1<<20)))
	files["/etc/vm/tab"] = []byte(tab.String())
	head := fmt.Sprintf(". /etc/vm/lib.sh\n. /etc/vm/fs.sh\necho \"T-READY $(uptime_s)\"\nDSECT=%d\nBALLAST=%d\nSLOT=%d\nMSECT=%d\nsampler > /tmp/sampler.out 2>&1 &\nspid=$!\n",
		fsDataSize/512, ballast, fsSlotSectors, fsMetaSectors)
	stopSampler := ": > /tmp/sampler.stop\nwait $spid\ncat /tmp/sampler.out\n"

	// Boot 1.
	var b strings.Builder
	b.WriteString(head)
	for i, l := range fsLanes {
		b.WriteString(fsLaneFirstBoot(l, guestDisk(i), aux, i))
	}
	var names []string
	for _, l := range fsLanes {
		names = append(names, l.name)
	}
	fmt.Fprintf(&b, `for L in %s; do
	while :; do
		d=$(grep -o '"windows_done":[0-9]*' /tmp/conv.$L 2>/dev/null | tail -n 1 | tr -dc 0-9)
		[ -n "$d" ] && [ "$d" -ge %d ] && break
		[ -e /tmp/ended.$L ] && { echo "ENDED-EARLY $L"; break; }
		sleep 0.1
	done
	echo "REACHED $L $d"
done
: > /tmp/sampler.stop
wait $spid
cat /tmp/sampler.out
echo FS-KILL-NOW
sleep 100000
`, strings.Join(names, " "), killAt)
	res1 := Run(t, Config{Image: fsImage, Disks: disks, Files: files, Script: b.String(), DiscardUnmap: true,
		KillOn: "FS-KILL-NOW", KillAfter: killDelay, Timeout: 25 * time.Minute, ConsoleFile: cliConsole("fsload-boot1")})
	got1 := rcs(res1.Console)
	for _, l := range fsLanes {
		wantRC(t, got1, l.name, "mkfs", 0)
		wantRC(t, got1, l.name, "mount", 0)
		if regexp.MustCompile(`(?m)^ENDED-EARLY ` + l.name + `$`).MatchString(res1.Console) {
			t.Errorf("%s: the conversion ended before the power cut:\n%s", l.name, strings.Join(taggedLines(res1.Console, "OUT", l.name), "\n"))
		}
	}
	if t.Failed() {
		t.Fatalf("boot 1:\n%s", res1.Tail(consoleTail))
	}

	// Boot 2.
	b.Reset()
	b.WriteString(head)
	b.WriteString("mkdir -p /etc/cryptshift\ncp /etc/vm/tab /etc/cryptshift/cryptshifttab\n")
	for i, l := range fsLanes {
		fmt.Fprintf(&b, "fsslots %s %s %d\n", l.name, aux, i)
	}
	b.WriteString("cryptshift recover --all > /tmp/recover 2>&1\necho \"RC all recover-all $?\"\nshow all RECOVER /tmp/recover\ndmsetup mknodes\n")
	for i, l := range fsLanes {
		b.WriteString(fsLaneSecondBoot(l, guestDisk(i), aux, i))
	}
	// The Fio lane runs beside the resumed conversions.
	b.WriteString("(\n" + fioLane(fioDev, aux, nl) + ") &\nfiopid=$!\n")
	for i, l := range fsLanes {
		fmt.Fprintf(&b, "wait $(cat /tmp/cpid.%s)\n", l.name)
		b.WriteString(fsLaneFinal(l, guestDisk(i)))
	}
	b.WriteString("wait $fiopid\n" + stopSampler + "echo FS-LANES-DONE\n")
	res2 := Run(t, Config{Image: fioImage, Disks: disks, Files: files, Script: b.String(), DiscardUnmap: true,
		Timeout: 25 * time.Minute, ConsoleFile: cliConsole("fsload-boot2")})
	if !strings.Contains(res2.Console, "FS-LANES-DONE") {
		t.Fatalf("boot 2 did not finish\n%s", res2.Tail(consoleTail))
	}
	got2 := rcs(res2.Console)
	if c := got2["all"]["recover-all"]; len(c) != 1 || c[0] != 0 {
		t.Errorf("recover --all exited %v:\n%s", c, strings.Join(taggedLines(res2.Console, "RECOVER", "all"), "\n"))
	}

	for _, l := range fsLanes {
		want := []string(nil)
		if l.opts {
			want = tableOpts
		}
		t.Run(map[string]string{"xfs": "XFS", "btrfs": "Btrfs"}[l.name], func(t *testing.T) {
			ok := true
			for _, s := range []string{"mount", "check", "ballast", "verify", "convert", "umount", "fsck-live", "showkeys", "remove",
				"reopen", "fsck-reopened", "mount-reopened", "check-final", "ballast-final"} {
				ok = wantRC(t, got2, l.name, s, 0) && ok
			}
			if m := regexp.MustCompile(`(?m)^TARGETS ` + l.name + ` (\d+)$`).FindStringSubmatch(res2.Console); m == nil || m[1] != "1" {
				t.Errorf("the live table does not have exactly one target at the end: %v", m)
				ok = false
			}
			for _, when := range []struct {
				res    *Result
				marker string
			}{{res1, "OPENED"}, {res2, "RECOVERED"}, {res2, "FINAL"}} {
				ok = checkOptsLine(t, when.res.Console, when.marker, l.name, want) && ok
			}
			ok = checkSamples(t, res1.Console, l.name, want, false, true) && ok
			// A kill after the lane's last window leaves nothing to hold in
			// the second boot: its status before the resume says complete.
			resumed := !regexp.MustCompile(`(?m)^PROGRESS ` + l.name + ` .*"state":"complete"`).MatchString(res2.Console)
			ok = checkSamples(t, res2.Console, l.name, want, false, resumed) && ok
			if l.opts {
				ok = checkTrims(t, res1.Console, l.name) && ok
				ok = checkTrims(t, res2.Console, l.name) && ok
			}
			for _, m := range regexp.MustCompile(`(?m)^(PROGRESS|REACHED) `+l.name+` .*$`).FindAllString(res1.Console+res2.Console, -1) {
				t.Log(m)
			}
			if !ok {
				t.Logf("convert output:\n%s", strings.Join(taggedLines(res2.Console, "OUT", l.name), "\n"))
				t.Logf("fsck output:\n%s", strings.Join(taggedLines(res2.Console, "FSCK", l.name), "\n"))
				t.Logf("verify output:\n%s", strings.Join(taggedLines(res2.Console, "VERIFY", l.name), "\n"))
			}
		})
	}
	t.Run("Fio", func(t *testing.T) {
		ok := true
		for _, s := range []string{"fill", "convert", "verify-live", "remove", "reopen", "verify-reopened"} {
			ok = wantRC(t, got2, "fio", s, 0) && ok
		}
		if m := regexp.MustCompile(`(?m)^TARGETS fio (\d+)$`).FindStringSubmatch(res2.Console); m == nil || m[1] != "1" {
			t.Errorf("the live table does not have exactly one target at the end: %v", m)
		}
		if m := regexp.MustCompile(`(?m)^PRIVATE-LEFT fio (\d+)$`).FindStringSubmatch(res2.Console); m == nil || m[1] != "0" {
			t.Errorf("kernel crypto devices left behind: %v", m)
		}
		ok = checkOptsLine(t, res2.Console, "FINAL", "fio", tableOpts) && ok
		ok = checkSamples(t, res2.Console, "fio", tableOpts, true, true) && ok
		ok = checkFioPasses(t, res2.Console) && ok
		if m := regexp.MustCompile(`(?m)^FIO-ENGINE (\S+)$`).FindStringSubmatch(res2.Console); m != nil {
			t.Logf("fio ioengine %s", m[1])
		}
		if !ok {
			t.Logf("fio output:\n%s", strings.Join(taggedLines(res2.Console, "FIO", "fio"), "\n"))
			t.Logf("convert output:\n%s", strings.Join(taggedLines(res2.Console, "OUT", "fio"), "\n"))
		}
	})
	t.Logf("VM: boot 1 %v, boot 2 %v; test %v", res1.Duration.Round(time.Millisecond), res2.Duration.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	fmt.Printf("vm filesystems and load: %s seed %d, VM kills 1, boot 1 %v, boot 2 %v\n", t.Name(), seed, res1.Duration.Round(time.Second), res2.Duration.Round(time.Second))
}

// optSet is the format-neutral options of an options field ("N opt...",
// or nothing), sorted.
func optSet(field string) []string {
	f := strings.Fields(field)
	var out []string
	for i, o := range f {
		if i == 0 {
			if _, err := strconv.Atoi(o); err == nil {
				continue // the count
			}
		}
		if o == "iv_large_sectors" || strings.HasPrefix(o, "sector_size:") {
			continue
		}
		out = append(out, o)
	}
	slices.Sort(out)
	return out
}

// checkOptsLine checks the "MARKER NAME OPTS ... OPTS ..." line the guest
// printed from `dmsetup table NAME`: every crypt target has want.
func checkOptsLine(t *testing.T, console, marker, name string, want []string) bool {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + marker + ` ` + name + `(.*)$`).FindStringSubmatch(console)
	if m == nil {
		t.Errorf("%s: no %s line", name, marker)
		return false
	}
	parts := strings.Split(m[1], "OPTS")[1:]
	if len(parts) == 0 {
		t.Errorf("%s: %s: no crypt target in the table", name, marker)
		return false
	}
	w := slices.Sorted(slices.Values(want))
	for _, p := range parts {
		if got := optSet(p); !slices.Equal(got, w) {
			t.Errorf("%s: %s: a crypt target has options %q, want %q", name, marker, got, w)
			return false
		}
	}
	return true
}

// checkSamples checks the sampler's distinct "OPTSAMPLE DEV: opts" lines of
// lane name's devices: NAME, its hold devices and its kernel crypto
// devices, which are named from a hash of NAME (online.holdNames). A hold
// device must have been seen when the boot converted any window (held),
// and with kernel crypto its private devices.
func checkSamples(t *testing.T, console, name string, want []string, kernelCrypto, held bool) bool {
	t.Helper()
	id := sha256.Sum256([]byte(name))
	prefix := "cryptshift-" + hex.EncodeToString(id[:4]) + "-"
	w := slices.Sorted(slices.Values(want))
	seen := map[string]bool{}
	ok := true
	for _, m := range regexp.MustCompile(`(?m)^OPTSAMPLE (\S+):(.*)$`).FindAllStringSubmatch(console, -1) {
		dev := m[1]
		if dev != name && !strings.HasPrefix(dev, prefix) {
			continue
		}
		switch {
		case dev == name:
			seen["name"] = true
		case strings.Contains(dev, "-hold"):
			seen["hold"] = true
		case strings.Contains(dev, "-crypt-"):
			seen["crypt"] = true
		}
		if got := optSet(m[2]); !slices.Equal(got, w) {
			t.Errorf("%s: during the conversion %s had a crypt target with options %q, want %q", name, dev, got, w)
			ok = false
		}
	}
	for _, k := range []string{"name", "hold"} {
		if !seen[k] && (k != "hold" || held) {
			t.Errorf("%s: the sampler never saw a crypt target of %s's %s device", name, name, k)
			ok = false
		}
	}
	if kernelCrypto && !seen["crypt"] {
		t.Errorf("%s: the sampler never saw the kernel crypto devices", name)
		ok = false
	}
	return ok
}

// checkTrims: fstrim ran during the conversion, at least once, and every
// run succeeded (it fails when a table on the way lost allow_discards).
func checkTrims(t *testing.T, console, name string) bool {
	t.Helper()
	ms := regexp.MustCompile(`(?m)^TRIM `+name+` (\d+) (\d+) (.*)$`).FindAllStringSubmatch(console, -1)
	if len(ms) == 0 {
		t.Errorf("%s: fstrim never ran", name)
		return false
	}
	for _, m := range ms {
		if m[2] != "0" {
			t.Errorf("%s: fstrim run %s exited %s: %s", name, m[1], m[2], m[3])
			return false
		}
	}
	t.Logf("%s: %d fstrim runs, the last: %s", name, len(ms), ms[len(ms)-1][3])
	return true
}

// checkFioPasses: every pass exited 0, and at least one ran while the
// conversion did.
func checkFioPasses(t *testing.T, console string) bool {
	t.Helper()
	var cs, ce float64
	if m := regexp.MustCompile(`(?m)^CONVERT-START fio (\S+)$`).FindStringSubmatch(console); m != nil {
		cs, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := regexp.MustCompile(`(?m)^CONVERT-END fio (\S+)$`).FindStringSubmatch(console); m != nil {
		ce, _ = strconv.ParseFloat(m[1], 64)
	}
	if ce == 0 {
		t.Error("the fio lane's conversion never ended")
		return false
	}
	overlap := 0
	ms := regexp.MustCompile(`(?m)^FIO-PASS (\d+) (\d+) (\S+) (\S+)$`).FindAllStringSubmatch(console, -1)
	for _, m := range ms {
		if m[2] != "0" {
			t.Errorf("fio pass with seed %s exited %s", m[1], m[2])
			return false
		}
		p0, _ := strconv.ParseFloat(m[3], 64)
		p1, _ := strconv.ParseFloat(m[4], 64)
		if p0 < ce && p1 > cs {
			overlap++
		}
	}
	if overlap == 0 {
		t.Errorf("no fio pass ran during the conversion (%d passes)", len(ms))
		return false
	}
	t.Logf("fio: %d passes of %d MiB at queue depth 32, %d of them during the %.1f s conversion", len(ms), *vmFioMiB, overlap, ce-cs)
	return true
}
