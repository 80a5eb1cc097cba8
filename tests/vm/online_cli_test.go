package vm

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cliImage is the guest of the scenarios that drive the cryptshift CLI
// online: the CLI itself, onlineguest for the writer that logs acknowledged
// fsyncs (and its checker), and cliguest for the application-side reader.
// The CLI is built with its test hooks: TestOnlineGuardRecoversAKilledWorker
// kills the worker holding a window (CRYPTSHIFT_TEST_KILL_HOLDING).
var cliImage = Image{GoPackages: []string{"./cmd/cryptshift", "./tests/vm/internal/onlineguest", "./tests/vm/internal/cliguest"},
	GoTags: []string{"testhooks"}}

// Layout of the CLI scenarios' data disks: NAME serves the first
// cliDataSize bytes; one more window after it leaves shift mode room to
// move the data up. Windows are 1 MiB, as the CLI is run with --window 1M.
const (
	cliDataSize = 16 << 20
	cliWindow   = 1 << 20
	cliDiskSize = cliDataSize + cliWindow
	// Each scenario slot on an auxiliary disk: the writer's fsync log in
	// the first half, the conversion's --metadata in the second.
	cliSlotSize = 8 << 20
)

// cliLib is sourced by the guest scripts. Every step prints "RC CASE STEP
// CODE" so the host asserts on each one and a failure says where it was.
var cliLib = `
PLAIN="cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512"
DSECT=` + strconv.Itoa(cliDataSize/512) + `
# step CASE STEP CMD...: run CMD, report its exit status.
step() { _c=$1 _s=$2; shift 2; "$@"; _r=$?; echo "RC $_c $_s $_r"; return $_r; }
# stepq CASE STEP FILE CMD...: the same with CMD's output in FILE.
stepq() { _c=$1 _s=$2 _o=$3; shift 3; "$@" > $_o 2>&1; _r=$?; echo "RC $_c $_s $_r"; return $_r; }
# slots CASE AUX SLOT: the writer log l<CASE> and metadata m<CASE> slices.
slots() {
	_b=$(($3 * 16384))
	dmsetup create l$1 --table "0 8192 linear $2 $_b"
	dmsetup create m$1 --table "0 8192 linear $2 $((_b + 8192))"
	dmsetup mknodes
}
# show CASE PREFIX FILE: copy a log to the console, tagged.
show() { sed "s/^/$2 $1 /" "$3"; }
`

// cliKeys are the keys of every CLI scenario: raw 512-bit XTS keys, as
// `cryptsetup open --type plain --key-file` reads them.
func cliKeys() (files map[string][]byte, keyA, keyB []byte) {
	rng := rand.New(rand.NewPCG(51, 52))
	keyA, keyB = randBytes(rng, 64), randBytes(rng, 64)
	return map[string][]byte{
		"/etc/vm/keyA": keyA, "/etc/vm/keyB": keyB,
		"/etc/vm/keyA.hex": []byte(hex.EncodeToString(keyA)), "/etc/vm/keyB.hex": []byte(hex.EncodeToString(keyB)),
		"/etc/vm/lib.sh": []byte(cliLib),
	}, keyA, keyB
}

// cliSparse creates a sparse disk image of size bytes.
func cliSparse(t *testing.T, name string, size int64) string {
	t.Helper()
	p := t.TempDir() + "/" + name
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// rcs parses the "RC CASE STEP CODE" lines: per case and step, the codes in
// the order they were printed.
func rcs(console string) map[string]map[string][]int {
	out := map[string]map[string][]int{}
	for _, m := range regexp.MustCompile(`(?m)^RC (\S+) (\S+) (\d+)$`).FindAllStringSubmatch(console, -1) {
		if out[m[1]] == nil {
			out[m[1]] = map[string][]int{}
		}
		n, _ := strconv.Atoi(m[3])
		out[m[1]][m[2]] = append(out[m[1]][m[2]], n)
	}
	return out
}

// wantRC asserts that step of case c ran exactly once (or, with all, every
// time) and exited with want.
func wantRC(t *testing.T, got map[string]map[string][]int, c, step string, want int) bool {
	t.Helper()
	codes := got[c][step]
	if len(codes) == 0 {
		t.Errorf("%s: step %s never ran", c, step)
		return false
	}
	for _, code := range codes {
		if code != want {
			t.Errorf("%s: step %s exited %v, want %d", c, step, codes, want)
			return false
		}
	}
	return true
}

// taggedLines returns the console lines that start with prefix and case c.
func taggedLines(console, prefix, c string) []string {
	var out []string
	for _, l := range strings.Split(console, "\n") {
		if strings.HasPrefix(l, prefix+" "+c+" ") {
			out = append(out, strings.TrimPrefix(l, prefix+" "+c+" "))
		}
	}
	return out
}

// stallLines prints what the CLI and the application-side reader measured:
// the CLI's summary of how long I/O waited per window and per table swap,
// and the reader's latency distribution (scenario 5: printed, not asserted).
func stallLines(t *testing.T, console, c string) {
	t.Helper()
	for _, l := range taggedLines(console, "OUT", c) {
		if strings.Contains(l, "waited at most") {
			t.Logf("%s: cli: %s", c, l)
			fmt.Printf("%s %s: cli: %s\n", t.Name(), c, l)
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^READER-STAT `+regexp.QuoteMeta(c)+` (.*)$`).FindAllStringSubmatch(console, -1) {
		t.Logf("%s: application reader (4 KiB O_DIRECT reads anywhere on NAME): %s", c, m[1])
		fmt.Printf("%s %s: application reader: %s\n", t.Name(), c, m[1])
	}
}

// cliCase is one full online conversion through the CLI.
type cliCase struct {
	name string
	mode string // journal, checksum, shift, none
	kind string // plain (key A -> key B), linear (plaintext -> key B), newlike (key A -> DEST's key B)
	// crypto is --crypto's value; "" leaves the default (userspace).
	crypto string
}

// fullCaseScript converts case c (data on dev, slices in slot of aux) to the
// end with the writer and the reader running, then checks it as the issue
// asks: e2fsck after umount, one target with key B, the data read back
// through a fresh `cryptsetup open` with key B, every logged fsync there.
func fullCaseScript(c cliCase, dev, aux string, slot int) string {
	newOff := 0
	if c.mode == "shift" {
		// NAME starts at byte 0: shift moves the data up by one window.
		newOff = cliWindow / 512
	}
	args := []string{"--online", c.name, "--metadata", "/dev/mapper/m" + c.name, "--window", "1M", "--progress", "plain"}
	switch c.mode {
	case "none":
		args = append(args, "--resilience", "none", "--force")
	default:
		args = append(args, "--resilience", c.mode)
	}
	if c.crypto != "" {
		args = append(args, "--crypto", c.crypto)
	}
	open := fmt.Sprintf("$PLAIN --key-file /etc/vm/keyA --size $DSECT %s %s", dev, c.name)
	verifyKeys := "--old-key-file /etc/vm/keyA --new-key-file /etc/vm/keyB"
	switch c.kind {
	case "linear":
		open = fmt.Sprintf("dmsetup create %s --table \"0 $DSECT linear %s 0\"", c.name, dev)
		verifyKeys = "--new-key-file /etc/vm/keyB"
		args = append(args, "--new-key-file", "/etc/vm/keyB")
	case "newlike":
		// --shared: plain cryptsetup refuses a second mapping of a device
		// in use without it.
		open += fmt.Sprintf("\n$PLAIN --shared --key-file /etc/vm/keyB --size $DSECT --offset %d %s %snew", newOff, dev, c.name)
		args = append(args, "--new-like", c.name+"new")
	default:
		args = append(args, "--new-key-file", "/etc/vm/keyB")
	}
	n := c.name
	return fmt.Sprintf(`
slots %[1]s %[2]s %[3]d
%[4]s
dmsetup mknodes
step %[1]s mkfs mkfs.ext4 -q -F /dev/mapper/%[1]s
step %[1]s mount mount -t ext4 /dev/mapper/%[1]s /mnt
mkdir -p /mnt/w
dd if=/dev/urandom of=/mnt/ballast bs=1M count=4 conv=fsync 2>/dev/null
sha256sum /mnt/ballast > /tmp/ballast.%[1]s
onlineguest writer -dir /mnt/w -log /dev/mapper/l%[1]s -seed %[3]d > /tmp/writer.%[1]s 2>&1 &
wpid=$!
cliguest reader -dev /dev/mapper/%[1]s -tag %[1]s > /tmp/reader.%[1]s 2>&1 &
rpid=$!
sleep 2
stepq %[1]s convert /tmp/conv.%[1]s cryptshift convert %[5]s %[6]s
show %[1]s OUT /tmp/conv.%[1]s
cryptshift verify --online %[1]s --data %[7]s --metadata /dev/mapper/m%[1]s %[6]s > /tmp/verify.%[1]s 2>&1
echo "RC %[1]s verify-ran $?"
show %[1]s VERIFY /tmp/verify.%[1]s
kill -TERM $wpid $rpid
wait $wpid
wait $rpid
cat /tmp/writer.%[1]s /tmp/reader.%[1]s
step %[1]s umount umount /mnt
stepq %[1]s fsck-live /tmp/fsck.%[1]s e2fsck -fn /dev/mapper/%[1]s || show %[1]s FSCK /tmp/fsck.%[1]s
echo "TARGETS %[1]s $(dmsetup table %[1]s | wc -l)"
echo "PRIVATE-LEFT %[1]s $(dmsetup ls | grep -c -- -crypt-)"
echo "LOOPS-LEFT %[1]s $(cat /sys/block/loop*/loop/backing_file 2>/dev/null | wc -l)"
step %[1]s showkeys sh -c "dmsetup table --showkeys %[1]s | grep -q $(cat /etc/vm/keyB.hex)"
dmsetup info %[1]snew > /dev/null 2>&1; echo "RC %[1]s dest-left $?"
step %[1]s remove dmsetup remove %[1]s
step %[1]s reopen $PLAIN --key-file /etc/vm/keyB --size $DSECT --offset %[8]d %[6]s %[1]sf
stepq %[1]s fsck-reopened /tmp/fsck.%[1]s e2fsck -fn /dev/mapper/%[1]sf || show %[1]s FSCK /tmp/fsck.%[1]s
step %[1]s mount-reopened mount -t ext4 /dev/mapper/%[1]sf /mnt
step %[1]s check onlineguest check -dir /mnt/w -log /dev/mapper/l%[1]s -seed %[3]d
step %[1]s ballast sha256sum -c /tmp/ballast.%[1]s
umount /mnt
cryptsetup close %[1]sf
`, n, aux, slot, open, strings.Join(args, " "), dev, verifyKeys, newOff)
}

// TestOnlineCLI is issue 5, scenario 1: `cryptshift convert --online` to
// the end under a mounted ext4 with a writer fsyncing files and a reader
// timing its reads: once per resilience mode from key A to key B, once
// plaintext (dm-linear) to encrypted, and once with --new-like. Cases run
// one after the other in a single boot.
func TestOnlineCLI(t *testing.T) {
	start := time.Now()
	cases := []cliCase{
		{"journal", "journal", "plain", ""},
		{"checksum", "checksum", "plain", ""},
		{"shift", "shift", "plain", ""},
		{"none", "none", "plain", ""},
		{"linear", "journal", "linear", ""},
		{"newlike", "journal", "newlike", ""},
		// The kernel as the crypto engine (private dm-crypt devices).
		{"kshift", "shift", "plain", "kernel"},
		{"klinear", "none", "linear", "kernel"},
		// Journal's record and checksum's old digests read raw from the
		// backing device; checksum's new digests sealed through a private
		// device over a memory loop device.
		{"kjournal", "journal", "plain", "kernel"},
		{"kchecksum", "checksum", "plain", "kernel"},
	}
	files, _, _ := cliKeys()
	var disks []string
	var script strings.Builder
	script.WriteString(". /etc/vm/lib.sh\n")
	aux := guestDisk(len(cases))
	for i, c := range cases {
		disks = append(disks, cliSparse(t, c.name+".img", cliDiskSize))
		script.WriteString(fullCaseScript(c, guestDisk(i), aux, i))
	}
	disks = append(disks, cliSparse(t, "aux.img", int64(len(cases))*cliSlotSize))
	script.WriteString("echo CLI-CASES-DONE\n")
	res := Run(t, Config{Image: cliImage, Disks: disks, Files: files, Script: script.String(), Timeout: 10 * time.Minute})
	if !strings.Contains(res.Console, "CLI-CASES-DONE") {
		t.Fatalf("the script did not finish\n%s", res.Tail(consoleTail))
	}
	got := rcs(res.Console)
	for _, c := range cases {
		ok := true
		for _, s := range []string{"mkfs", "mount", "convert", "umount", "fsck-live", "showkeys", "remove", "reopen",
			"fsck-reopened", "mount-reopened", "check", "ballast"} {
			ok = wantRC(t, got, c.name, s, 0) && ok
		}
		// The writer kept writing after the conversion, so --data may list
		// windows that changed since; the live table must match regardless.
		want := fmt.Sprintf("%s's live table serves %d of %d windows with the new mapping, as recorded", c.name, cliDataSize/cliWindow, cliDataSize/cliWindow)
		if !strings.Contains(strings.Join(taggedLines(res.Console, "VERIFY", c.name), "\n"), want) {
			t.Errorf("%s: verify --online did not report %q:\n%s", c.name, want, strings.Join(taggedLines(res.Console, "VERIFY", c.name), "\n"))
			ok = false
		}
		if m := regexp.MustCompile(`(?m)^TARGETS ` + c.name + ` (\d+)$`).FindStringSubmatch(res.Console); m == nil || m[1] != "1" {
			t.Errorf("%s: the live table does not have exactly one target at the end: %v", c.name, m)
			ok = false
		}
		if m := regexp.MustCompile(`(?m)^PRIVATE-LEFT ` + c.name + ` (\d+)$`).FindStringSubmatch(res.Console); m == nil || m[1] != "0" {
			t.Errorf("%s: kernel crypto devices left behind: %v", c.name, m)
			ok = false
		}
		if m := regexp.MustCompile(`(?m)^LOOPS-LEFT ` + c.name + ` (\d+)$`).FindStringSubmatch(res.Console); m == nil || m[1] != "0" {
			t.Errorf("%s: loop devices left bound: %v", c.name, m)
			ok = false
		}
		usedKernel := strings.Contains(strings.Join(taggedLines(res.Console, "OUT", c.name), "\n"), "the kernel does the crypto")
		if usedKernel != (c.crypto == "kernel") {
			t.Errorf("%s: --crypto %q, yet the kernel did the crypto: %v", c.name, c.crypto, usedKernel)
			ok = false
		}
		if c.kind == "newlike" && wantRC(t, got, c.name, "dest-left", 1) {
			t.Logf("%s: DEST removed at the end", c.name)
		}
		if !ok {
			t.Logf("%s: convert output:\n%s", c.name, strings.Join(taggedLines(res.Console, "OUT", c.name), "\n"))
			t.Logf("%s: fsck output:\n%s", c.name, strings.Join(taggedLines(res.Console, "FSCK", c.name), "\n"))
		}
		stallLines(t, res.Console, c.name)
	}
	if n := len(regexp.MustCompile(`(?m)^CHECK-OK records=[1-9]`).FindAllString(res.Console, -1)); n != len(cases) {
		t.Errorf("%d of %d cases checked a non-empty fsync log", n, len(cases))
	}
	for _, l := range regexp.MustCompile(`(?m)^(WRITER-STAT|CHECK-OK) .*$`).FindAllString(res.Console, -1) {
		t.Log(l)
	}
	t.Logf("%d online conversions through the CLI: VM %v, test %v", len(cases), res.Duration.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// cliConsole names a file for the guest console of one boot when
// CRYPTSHIFT_VM_CONSOLE_DIR is set, to debug a scenario that hangs.
func cliConsole(name string) string {
	dir := os.Getenv("CRYPTSHIFT_VM_CONSOLE_DIR")
	if dir == "" {
		return ""
	}
	return dir + "/" + name + ".console"
}
