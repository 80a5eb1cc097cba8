package vm

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

var vmPowerCuts = flag.Int("vm.power-cuts", 7, "TestPowerCutsAllModes: VM kills, each interrupting a conversion in every resilience mode, offline and online by turns")

// Every lane of TestPowerCutsAllModes converts pcDataSize bytes of raw
// data in pcWindows windows, with the metadata at the end of the disk and
// room for shift to move the data up by one window between them.
const (
	pcDataSize = 2 << 20
	pcWindow   = 64 << 10
	pcWindows  = pcDataSize / pcWindow
	pcMetaSize = 1 << 20
	pcDiskSize = pcDataSize + pcWindow + pcMetaSize
	pcCipher   = "aes-xts-plain64"
)

// pcModes are the resilience modes each kill interrupts, offline and
// online.
var pcModes = []string{"journal", "checksum", "shift", "none"}

// pcLane is one conversion of one disk, started in one boot and killed,
// recovered and resumed in the next.
type pcLane struct {
	name     string // also NAME of an online lane
	mode     string
	online   bool
	stopAt   int // windows reported done before it is stopped for the kill
	oldKey   []byte
	newKey   []byte
	dev      string
	diskPath string
}

// convertArgs are the same for the first run and for the resume; an
// online lane's old mapping comes from NAME's live table.
func (l *pcLane) convertArgs() string {
	a := "--new-key-file /etc/vm/pc/" + l.name + ".new"
	if l.online {
		a = "--online " + l.name + " " + a
	} else {
		a = "--old-key-file /etc/vm/pc/" + l.name + ".old " + a
	}
	a += " --resilience " + l.mode
	if l.mode == "none" {
		a += " --force"
	}
	return fmt.Sprintf("%s --window %d --data-size %d --metadata-size %d", a, pcWindow, pcDataSize, pcMetaSize)
}

func (l *pcLane) newOffset() int64 {
	if l.mode == "shift" {
		return pcWindow
	}
	return 0
}

// pcPlain is sector s of a lane's data: text, so that it decrypts
// plausibly, and different in every sector and lane, so that a sector
// written to the wrong place or under the wrong key shows.
func pcPlain(lane string, s int) []byte {
	line := fmt.Sprintf("power cut lane %s sector %06d\n", lane, s)
	return []byte(strings.Repeat(line, 512/len(line)+1)[:512])
}

func pcCipherOf(t *testing.T, key []byte) sectorcipher.Cipher {
	t.Helper()
	spec, err := sectorcipher.ParseSpec(pcCipher)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: key, SectorSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// makeDisk writes the lane's disk on the host: the data under the old key
// at offset 0, zeros after it.
func (l *pcLane) makeDisk(t *testing.T) {
	t.Helper()
	img := make([]byte, pcDiskSize)
	for s := 0; s < pcDataSize/512; s++ {
		copy(img[s*512:], pcPlain(l.name, s))
	}
	pcCipherOf(t, l.oldKey).Encrypt(img[:pcDataSize], 0)
	l.diskPath = t.TempDir() + "/" + l.name + ".img"
	if err := os.WriteFile(l.diskPath, img, 0o644); err != nil {
		t.Fatal(err)
	}
}

// hostCheck reads the converted disk on the host, without the kernel:
// every sector decrypts under the new key, at the new offset, to what the
// lane wrote. In the window a kill left mode none in (damaged, accepted as
// it was), a sector may instead still hold its old ciphertext, in place.
// It returns what is wrong ("" if nothing) and how many sectors were old.
func (l *pcLane) hostCheck(t *testing.T, damaged int) (string, int) {
	img, err := os.ReadFile(l.diskPath)
	if err != nil {
		return err.Error(), 0
	}
	off := l.newOffset()
	data := bytes.Clone(img[off : off+pcDataSize])
	pcCipherOf(t, l.newKey).Decrypt(data, 0)
	old := pcCipherOf(t, l.oldKey)
	kept := 0
	for s := 0; s < pcDataSize/512; s++ {
		want := pcPlain(l.name, s)
		if bytes.Equal(data[s*512:(s+1)*512], want) {
			continue
		}
		if damaged >= 0 && s*512/pcWindow == damaged {
			b := bytes.Clone(img[s*512 : (s+1)*512])
			old.Decrypt(b, uint64(s))
			if bytes.Equal(b, want) {
				kept++
				continue
			}
		}
		return fmt.Sprintf("sector %d of the data does not hold what was written (damaged window %d)", s, damaged), kept
	}
	return "", kept
}

// pcLib is the guest side. pc_start starts a lane's conversion and stops
// it (SIGSTOP) once it reports its window done, so the kill always finds
// it in progress; pc_resume is what an admin does after the power cut:
// status, recover (mode none must report the window it cannot vouch for
// and is then told to accept it), recover again (a second run changes
// nothing), the same convert to the end, and verify --data.
var pcLib = `
PLAIN="cryptsetup open --type plain --cipher ` + pcCipher + ` --key-size 512"
step() { _c=$1 _s=$2; shift 2; "$@" > /tmp/out.$_c.$_s 2>&1; _r=$?; echo "RC $_c $_s $_r"; [ $_r = 0 ] || sed "s/^/OUT $_c $_s: /" /tmp/out.$_c.$_s; return $_r; }
pc_start() { # LANE DEV ONLINE STOP-AT ARGS...
	L=$1 dev=$2 on=$3 at=$4; shift 4
	if [ $on = 1 ]; then
		step $L open $PLAIN --key-file /etc/vm/pc/$L.old --size ` + strconv.Itoa(pcDataSize/512) + ` $dev $L || return
	fi
	# The progress comes through a FIFO, a JSON line per window, and the
	# reader stops the conversion as soon as the line it waits for comes:
	# no polling, so a loaded host delays the stop by a window at most.
	mkfifo /tmp/fifo.$L
	cryptshift convert "$@" --progress json --progress-interval 0 $dev > /dev/null 2> /tmp/fifo.$L &
	pid=$!
	while read -r line; do
		echo "$line" >> /tmp/prog.$L
		case $line in *'"windows_done":'*) ;; *) continue ;; esac
		d=${line#*'"windows_done":'}
		d=${d%%[!0-9]*}
		if [ "$d" -ge $at ]; then kill -STOP $pid; echo "PC-STOPPED $L $d"; return; fi
	done < /tmp/fifo.$L
	echo "PC-STOP-MISSED $L"
	sed "s/^/OUT $L start: /" /tmp/prog.$L
}
pc_resume() { # LANE DEV ONLINE MODE ARGS...
	L=$1 dev=$2 on=$3 mode=$4; shift 4
	keys="--old-key-file /etc/vm/pc/$L.old --new-key-file /etc/vm/pc/$L.new"
	cryptshift status --json $dev > /tmp/pre.$L 2>&1
	echo "PRESTATUS $L $(tr -d '\n' < /tmp/pre.$L)"
	act=
	[ $on = 1 ] && act="--activate $L"
	step $L recover cryptshift recover $act $keys $dev
	if [ $mode = none ]; then step $L accept cryptshift recover --accept-damage $act $keys $dev; fi
	step $L recover2 cryptshift recover $act $keys $dev
	step $L convert cryptshift convert "$@" --progress none $dev
	[ $on = 1 ] && step $L close dmsetup remove $L
	step $L verify cryptshift verify --data $keys $dev
	cryptshift status --json $dev > /tmp/st.$L 2>&1
	echo "STATUS $L $(tr -d '\n' < /tmp/st.$L)"
}
`

// TestPowerCutsAllModes is issue 14, item 1: real-kernel power cuts in
// every resilience mode, offline and online. Each of -vm.power-cuts boots
// starts four conversions side by side (journal, checksum, shift, none;
// offline in even boots, online with NAME idle in odd ones), stops each
// (SIGSTOP) once it has reported a seeded window done, and then qemu is
// killed. The next boot,
// on the same disks, recovers each, resumes it to the end and verifies
// it; then the host decrypts every disk independently of the kernel and
// of cryptshift: every sector must hold what was written, under the new
// key at the new offset, except, in mode none, sectors of the window the
// kill interrupted that still hold their old ciphertext (a crash in mode
// none may leave that window half converted; recovery must say which
// window, and `--accept-damage` keeps it as it is).
//
// The lanes hold raw data rather than a filesystem, so the host can
// check every sector; TestCrashInterop and TestOnlineCLIKill cut power
// under ext4 (and, online, under a writer). Boots are chained as in
// TestCrashInterop: boot k resumes the lanes of boot k-1 and starts its
// own.
func TestPowerCutsAllModes(t *testing.T) {
	start := time.Now()
	seed := testkit.VMSeed(t)
	t.Logf("seed %d (rerun with CRYPTSHIFT_VM_SEED=%d)", seed, seed)
	replayOnFailure(t, seed)
	rng := rand.New(rand.NewPCG(seed, 0x70637574))
	cuts := max(*vmPowerCuts, 1)
	boots := make([][]*pcLane, cuts)
	delays := make([]time.Duration, cuts)
	for b := range boots {
		delays[b] = RandomDelay(rng, 0, 300*time.Millisecond)
		// Offline in even boots, online in odd ones.
		on, where := b%2 == 1, "off"
		if on {
			where = "on"
		}
		for _, mode := range pcModes {
			l := &pcLane{name: fmt.Sprintf("%s-%s%d", mode, where, b), mode: mode, online: on,
				// In the first half: the lane must still be
				// converting when the stop reaches it.
				stopAt: 1 + rng.IntN(pcWindows/2),
				oldKey: randBytes(rng, 64), newKey: randBytes(rng, 64)}
			boots[b] = append(boots[b], l)
		}
	}

	var vmTime time.Duration
	kills, checked := 0, 0
	var summary []string
	prevConsole := ""
	for b := 0; b <= cuts; b++ {
		var prev, cur []*pcLane
		if b > 0 {
			prev = boots[b-1]
		}
		if b < cuts {
			cur = boots[b]
		}
		files := map[string][]byte{"/etc/vm/pc.sh": []byte(pcLib)}
		var disks []string
		var script strings.Builder
		script.WriteString(". /etc/vm/pc.sh\n")
		for _, l := range cur {
			l.makeDisk(t)
		}
		for _, l := range append(append([]*pcLane(nil), prev...), cur...) {
			l.dev = guestDisk(len(disks))
			disks = append(disks, l.diskPath)
			files["/etc/vm/pc/"+l.name+".old"] = l.oldKey
			files["/etc/vm/pc/"+l.name+".new"] = l.newKey
		}
		for _, l := range prev {
			fmt.Fprintf(&script, "pc_resume %s %s %d %s %s > /tmp/log.%s 2>&1 &\n", l.name, l.dev, b2i(l.online), l.mode, l.convertArgs(), l.name)
		}
		script.WriteString("wait\n")
		for _, l := range prev {
			fmt.Fprintf(&script, "cat /tmp/log.%s\n", l.name)
		}
		// Each stopped conversion keeps its memory until the kill.
		cfg := Config{Image: interopImage, Files: files, Timeout: 15 * time.Minute, Memory: 1536,
			ConsoleFile: cliConsole(fmt.Sprintf("powercut-boot%02d", b))}
		if cur != nil {
			for _, l := range cur {
				fmt.Fprintf(&script, "pc_start %s %s %d %d %s > /tmp/log.%s 2>&1 &\n", l.name, l.dev, b2i(l.online), l.stopAt, l.convertArgs(), l.name)
			}
			script.WriteString("wait\n")
			for _, l := range cur {
				fmt.Fprintf(&script, "cat /tmp/log.%s\n", l.name)
			}
			// Held, so the guest never powers off by itself: the kill
			// comes from the host.
			script.WriteString("echo PC-ALL-STOPPED\nsleep 100000\n")
			cfg.KillOn, cfg.KillAfter = "PC-ALL-STOPPED", delays[b]
		} else {
			script.WriteString("echo PC-CHECKS-DONE\n")
		}
		cfg.Disks, cfg.Script = disks, script.String()
		res := Run(t, cfg)
		vmTime += res.Duration
		if res.Killed {
			kills++
		}
		if cur == nil && !strings.Contains(res.Console, "PC-CHECKS-DONE") {
			t.Fatalf("the last boot did not finish its checks\n%s", res.Tail(consoleTail))
		}
		reps, err := parseReports(res.Console)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range prev {
			checked++
			if s, ok := checkPowerCut(t, l, reps[l.name], prevConsole); ok {
				summary = append(summary, s)
			} else {
				checked--
			}
		}
		for _, l := range cur {
			if !regexp.MustCompile(`(?m)^PC-STOPPED ` + regexp.QuoteMeta(l.name) + ` \d+$`).MatchString(res.Console) {
				t.Errorf("%s: the conversion was not in progress when the power was cut (stop after window %d)\n%s", l.name, l.stopAt,
					strings.Join(taggedLines(res.Console, "OUT", l.name), "\n"))
			}
		}
		t.Logf("boot %d: %d lanes resumed, %d started; boot %v, total %v", b, len(prev), len(cur), res.BootTime.Round(time.Millisecond), res.Duration.Round(time.Millisecond))
		if t.Failed() {
			t.FailNow()
		}
		prevConsole = res.Console
	}
	t.Logf("after each cut: %s", strings.Join(summary, "; "))
	t.Logf("seed %d: VM kills %d, interrupted conversions recovered, resumed and checked %d of %d; VM time %v, test %v",
		seed, kills, checked, cuts*len(boots[0]), vmTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	fmt.Printf("vm power cut summary: seed %d, VM kills %d, interrupted conversions checked %d/%d (offline and online, modes %s), VM time %v\n",
		seed, kills, checked, cuts*len(boots[0]), strings.Join(pcModes, " "), vmTime.Round(time.Millisecond))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkPowerCut asserts on one lane after its power cut and resume, and
// returns a few words on what the cut left.
func checkPowerCut(t *testing.T, l *pcLane, r *caseReport, killed string) (string, bool) {
	t.Helper()
	if r == nil {
		t.Errorf("%s: the guest reported nothing", l.name)
		return "", false
	}
	ok := true
	fail := func(format string, a ...any) {
		t.Helper()
		t.Errorf("%s: "+format, append([]any{l.name}, a...)...)
		ok = false
	}
	var pre statusJSON
	if err := json.Unmarshal([]byte(r.pre), &pre); err != nil {
		fail("status after the cut is not JSON (%v): %s", err, r.pre)
		return "", false
	}
	m := regexp.MustCompile(`(?m)^PC-STOPPED ` + regexp.QuoteMeta(l.name) + ` (\d+)$`).FindStringSubmatch(killed)
	if m != nil {
		// Journal and checksum count the last window reported done as
		// open until the next window's record says otherwise: the status
		// may lag by that one window, which recovery then finishes.
		d, _ := strconv.Atoi(m[1])
		lag := pre.WindowsDone+1 == uint64(d) && pre.OpenWindow != nil && *pre.OpenWindow == pre.WindowsDone
		if pre.State == "complete" || pre.WindowsDone < uint64(d) && !lag {
			fail("stopped after reporting %s windows done, yet the status after the cut says %s with %d done: %s", m[1], pre.State, pre.WindowsDone, r.pre)
		}
	}
	// Mode none cannot vouch for the window in flight: recover must exit
	// 9 (ErrDamage) naming it, and --accept-damage takes it as it is.
	damaged := -1
	want := map[string]int{"recover": 0, "recover2": 0, "convert": 0, "verify": 0}
	if l.online {
		want["close"] = 0
	}
	if l.mode == "none" {
		want["accept"] = 0
		if pre.State != "complete" {
			want["recover"] = 9
			if pre.OpenWindow == nil {
				fail("status after the cut shows no open window in a conversion in progress: %s", r.pre)
			} else {
				damaged = int(*pre.OpenWindow)
			}
		}
	}
	for s, code := range want {
		if rcs := r.rc[s]; len(rcs) != 1 || rcs[0] != code {
			fail("%s exited %v, want %d", s, rcs, code)
		}
	}
	if st := r.status; st == nil || st.State != "complete" || st.Mode != l.mode || st.New.DataOffset != uint64(l.newOffset()) {
		fail("status at the end: %+v", st)
	}
	msg, kept := l.hostCheck(t, damaged)
	if msg != "" {
		fail("%s", msg)
	}
	if !ok && len(r.out) > 0 {
		t.Logf("%s:\n%s", l.name, strings.Join(r.out, "\n"))
	}
	s := fmt.Sprintf("%s %d/%d done", l.name, pre.WindowsDone, pcWindows)
	if damaged >= 0 {
		s += fmt.Sprintf(", window %d accepted with %d old sectors", damaged, kept)
	}
	return s, ok
}
