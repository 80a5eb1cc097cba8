package vm

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

// Layout of every interop disk. The filesystem covers the first
// interopFSSize bytes; the conversion's metadata takes the last
// interopMetaSize; the gap between them leaves room for shift mode, which
// moves the data up by one window when, as here, none is free before it.
const (
	interopFSSize   = 8 << 20
	interopMetaSize = 1 << 20
	interopDiskSize = 12 << 20
)

// interopImage is the guest for the CLI scenarios: the static cryptshift
// binary, and besides the default tools util-linux losetup, because the
// command `status` prints to open a plaintext result uses --sizelimit, which
// busybox's losetup lacks.
var interopImage = Image{
	GoPackages: []string{"./cmd/cryptshift"},
	Tools:      append(append([]string(nil), DefaultTools...), "losetup"),
}

// interopCase is one disk taken through a conversion by the cryptshift CLI,
// from a mapping cryptsetup (or dm-linear, for plaintext) wrote an ext4
// filesystem through, to one cryptsetup (or losetup) must read it back with.
type interopCase struct {
	name      string
	oldCipher string // "none" for plaintext
	oldKeyLen int    // bytes
	newCipher string
	newKeyLen int
	newSector int // dm-crypt sector_size of the new mapping; 0 means 512
	mode      string
	window    int
	oldKey    []byte
	newKey    []byte
	dev       string // guest device, /dev/vdX, set by the boot that uses it
	diskPath  string // host image
}

// newOffset is where the data must start after the conversion: shift moves it
// up by one window (the default --shift) because nothing is free before it.
func (c *interopCase) newOffset() int64 {
	if c.mode == "shift" {
		return int64(c.window)
	}
	return 0
}

func (c *interopCase) keys(rng *rand.Rand) {
	gen := func(n int) []byte {
		if n == 0 {
			return nil
		}
		k := make([]byte, n)
		for i := range k {
			k[i] = byte(rng.Uint32())
		}
		return k
	}
	c.oldKey, c.newKey = gen(c.oldKeyLen), gen(c.newKeyLen)
}

// convertArgs are the arguments of `cryptshift convert`, the same for the
// first run and for every resume.
func (c *interopCase) convertArgs() string { return c.convertArgsWith("none") }

// convertArgsWith is convertArgs with --progress set to progress.
func (c *interopCase) convertArgsWith(progress string) string {
	a := []string{"--old-cipher", c.oldCipher}
	if c.oldCipher != "none" {
		a = append(a, "--old-key-file", "/etc/vm/keys/"+c.name+".old")
	}
	a = append(a, "--new-cipher", c.newCipher)
	if c.newCipher != "none" {
		a = append(a, "--new-key-file", "/etc/vm/keys/"+c.name+".new")
	}
	if c.newSector != 0 {
		a = append(a, "--new-sector-size", strconv.Itoa(c.newSector))
	}
	a = append(a, "--resilience", c.mode)
	if c.mode == "none" {
		a = append(a, "--force")
	}
	a = append(a, "--window", strconv.Itoa(c.window),
		"--data-size", strconv.Itoa(interopFSSize),
		"--metadata-size", strconv.Itoa(interopMetaSize),
		"--progress", progress, c.dev)
	return strings.Join(a, " ")
}

// recoverArgs are the key flags `cryptshift recover` needs: both keys
// authenticate the recorded state; a plaintext side has none.
func (c *interopCase) recoverArgs() string {
	var a []string
	if c.oldCipher != "none" {
		a = append(a, "--old-key-file", "/etc/vm/keys/"+c.name+".old")
	}
	if c.newCipher != "none" {
		a = append(a, "--new-key-file", "/etc/vm/keys/"+c.name+".new")
	}
	return strings.Join(append(a, c.dev), " ")
}

func (c *interopCase) files(into map[string][]byte) {
	if c.oldKey != nil {
		into["/etc/vm/keys/"+c.name+".old"] = c.oldKey
	}
	if c.newKey != nil {
		into["/etc/vm/keys/"+c.name+".new"] = c.newKey
	}
}

// prepLine makes the filesystem through the old mapping and fills it.
func (c *interopCase) prepLine() string {
	return fmt.Sprintf("prep %s %s %s %d", c.name, c.dev, c.oldCipher, c.oldKeyLen*8)
}

// checkLine opens the converted device with the command `status` prints,
// fscks it and hashes its files.
func (c *interopCase) checkLine() string {
	return fmt.Sprintf("check %s %s %s", c.name, c.dev, c.newCipher)
}

func (c *interopCase) convertLine() string {
	return fmt.Sprintf("cryptshift convert %s > /tmp/conv.%s 2>&1; rc=$?; echo \"RC %s convert $rc\"; [ $rc = 0 ] || sed 's/^/OUT %s /' /tmp/conv.%s",
		c.convertArgs(), c.name, c.name, c.name, c.name)
}

// interopPrelude defines the guest shell functions the scenarios share. Every
// step reports "RC <case> <step> <status>" so the host can tell which one
// failed; nothing stops at the first error, so one failing case does not hide
// the others. Output of a failing step is echoed with an "OUT <case>" prefix.
var interopPrelude = `
FS_SECTORS=` + strconv.Itoa(interopFSSize/512) + `
# busybox sh runs its own applet before searching PATH, so without this the
# printed losetup command would reach busybox's, which lacks --sizelimit.
losetup() { ` + guestToolDir + `/losetup "$@"; }
now() { cut -d' ' -f1 /proc/uptime; }
step() { # CASE STEP COMMAND...: run, report status, show output on failure
	local n=$1 s=$2; shift 2
	"$@" > /tmp/out.$n.$s 2>&1
	local rc=$?
	echo "RC $n $s $rc"
	[ $rc = 0 ] || sed "s/^/OUT $n $s: /" /tmp/out.$n.$s
	return $rc
}
fill() { # CASE: the payload and an id that tells the disks apart
	cp /etc/vm/payload/* /mnt/$1/ && echo $1 > /mnt/$1/id && sync
}
prep() { # CASE DEV OLD-CIPHER OLD-KEY-BITS
	local n=$1 dev=$2 node=/dev/mapper/p_$1
	mkdir -p /mnt/$n
	if [ "$3" = none ]; then
		step $n open-old dmsetup create p_$n --table "0 $FS_SECTORS linear $dev 0" || return
		dmsetup mknodes p_$n
	else
		step $n open-old cryptsetup open --type plain --cipher $3 --key-file /etc/vm/keys/$n.old \
			--key-size $4 --size $FS_SECTORS $dev p_$n || return
	fi
	step $n mkfs mkfs.ext4 -F -q -b 4096 $node &&
	step $n mount-old mount $node /mnt/$n &&
	step $n fill fill $n &&
	step $n umount-old umount /mnt/$n &&
	step $n close-old dmsetup remove p_$n
}
check() { # CASE DEV NEW-CIPHER
	local n=$1 dev=$2 st node cmd
	mkdir -p /mnt/$n
	step $n status cryptshift status --json $dev || return
	st=/tmp/out.$n.status
	echo "STATUS $n $(tr -d '\n' < $st)"
	# The "new" object holds no nested object, so its first "}" ends it.
	cmd=$(sed -n '/"new": {/,/}/s/.*"open_command": "\([^"]*\)".*/\1/p' $st)
	echo "OPEN $n $cmd"
	if [ "$3" = none ]; then
		node=$(eval "$cmd" 2>/tmp/out.$n.open)
		local rc=$?
		echo "RC $n open $rc"
		[ $rc = 0 ] || sed "s/^/OUT $n open: /" /tmp/out.$n.open
	else
		cmd=$(echo "$cmd" | sed "s#KEYFILE#/etc/vm/keys/$n.new#; s# NAME\$# c_$n#")
		step $n open eval "$cmd"
		node=/dev/mapper/c_$n
	fi
	[ -b "$node" ] || { echo "OUT $n open: no block device '$node'"; return 1; }
	step $n fsck e2fsck -fn $node
	if step $n mount mount -o ro $node /mnt/$n; then
		(cd /mnt/$n && sha256sum *) | sed "s/^/HASH $n /"
		umount /mnt/$n
	fi
	if [ "$3" = none ]; then losetup -d $node; else cryptsetup close c_$n; fi
}
`

// interopPayload is what every filesystem holds: a file spanning many
// windows, a small one and one of text; plus the id file fill writes.
func interopPayload(seed uint64) map[string][]byte {
	rng := rand.New(rand.NewPCG(seed, 0x1d))
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	return map[string][]byte{
		"big":   rnd(2<<20 + 12345),
		"small": rnd(40 << 10),
		"text":  []byte(strings.Repeat("cryptshift interop payload line\n", 300)),
	}
}

// wantHashes are the sha256 sums the guest must print for case n.
func wantHashes(payload map[string][]byte, n string) map[string]string {
	want := map[string]string{}
	for name, b := range payload {
		sum := sha256.Sum256(b)
		want[name] = hex.EncodeToString(sum[:])
	}
	sum := sha256.Sum256([]byte(n + "\n"))
	want["id"] = hex.EncodeToString(sum[:])
	return want
}

func payloadFiles(payload map[string][]byte, into map[string][]byte) {
	for name, b := range payload {
		into["/etc/vm/payload/"+name] = b
	}
}

// statusJSON is the part of `cryptshift status --json` the scenarios assert on.
type statusJSON struct {
	State        string  `json:"state"`
	Mode         string  `json:"mode"`
	WindowsDone  uint64  `json:"windows_done"`
	WindowsTotal uint64  `json:"windows_total"`
	BytesTotal   uint64  `json:"bytes_total"`
	OpenWindow   *uint64 `json:"open_window"`
	New          struct {
		Cipher      string `json:"cipher"`
		KeyBits     uint32 `json:"key_bits"`
		SectorSize  uint32 `json:"sector_size"`
		DataOffset  uint64 `json:"data_offset"`
		OpenCommand string `json:"open_command"`
	} `json:"new"`
}

// caseReport is what the guest console says about one case.
type caseReport struct {
	rc     map[string][]int // step -> statuses, in order (a step may run twice)
	out    []string
	status *statusJSON
	pre    string // PRESTATUS line: the state a crash left, raw
	hashes map[string]string
}

var (
	rcLine     = regexp.MustCompile(`(?m)^RC (\S+) (\S+) (\d+)$`)
	outLine    = regexp.MustCompile(`(?m)^OUT (\S+) (.*)$`)
	statusLine = regexp.MustCompile(`(?m)^STATUS (\S+) (.*)$`)
	preLine    = regexp.MustCompile(`(?m)^PRESTATUS (\S+) (.*)$`)
	hashLine   = regexp.MustCompile(`(?m)^HASH (\S+) ([0-9a-f]{64})  (\S+)$`)
)

func parseReports(console string) (map[string]*caseReport, error) {
	reps := map[string]*caseReport{}
	get := func(n string) *caseReport {
		r := reps[n]
		if r == nil {
			r = &caseReport{rc: map[string][]int{}, hashes: map[string]string{}}
			reps[n] = r
		}
		return r
	}
	for _, m := range rcLine.FindAllStringSubmatch(console, -1) {
		v, _ := strconv.Atoi(m[3])
		r := get(m[1])
		r.rc[m[2]] = append(r.rc[m[2]], v)
	}
	for _, m := range outLine.FindAllStringSubmatch(console, -1) {
		get(m[1]).out = append(get(m[1]).out, m[2])
	}
	for _, m := range statusLine.FindAllStringSubmatch(console, -1) {
		var st statusJSON
		if err := json.Unmarshal([]byte(m[2]), &st); err != nil {
			return nil, fmt.Errorf("status of %s: %v: %s", m[1], err, m[2])
		}
		get(m[1]).status = &st
	}
	for _, m := range preLine.FindAllStringSubmatch(console, -1) {
		get(m[1]).pre = m[2]
	}
	for _, m := range hashLine.FindAllStringSubmatch(console, -1) {
		get(m[1]).hashes[m[3]] = m[2]
	}
	return reps, nil
}

// checkConverted asserts everything the scenarios demand of a converted case:
// each listed step succeeded, status reports the conversion complete with the
// new mapping at the expected offset, the filesystem is clean, every file
// hashes as written, and (on the host, without the kernel) the image holds
// the ext4 superblock at the new offset under the new mapping and key.
func checkConverted(t *testing.T, c *interopCase, r *caseReport, payload map[string][]byte, steps ...string) bool {
	t.Helper()
	ok := true
	fail := func(format string, args ...any) {
		t.Helper()
		ok = false
		t.Errorf("%s: "+format, append([]any{c.name}, args...)...)
	}
	if r == nil {
		fail("the guest reported nothing")
		return false
	}
	for _, s := range append(steps, "status", "open", "fsck", "mount") {
		rcs := r.rc[s]
		if len(rcs) == 0 {
			fail("step %s did not run", s)
		} else if last := rcs[len(rcs)-1]; last != 0 {
			fail("step %s exited %d", s, last)
		}
	}
	if st := r.status; st == nil {
		fail("no status report")
	} else {
		if st.State != "complete" {
			fail("status says %q, want complete", st.State)
		}
		if st.Mode != c.mode {
			fail("status says mode %q, want %q", st.Mode, c.mode)
		}
		if st.New.Cipher != c.newCipher {
			fail("status says new cipher %q, want %q", st.New.Cipher, c.newCipher)
		}
		wantSector := c.newSector
		if wantSector == 0 {
			wantSector = 512
		}
		if c.newCipher != "none" && int(st.New.SectorSize) != wantSector {
			fail("status says new sector size %d, want %d", st.New.SectorSize, wantSector)
		}
		if st.New.DataOffset != uint64(c.newOffset()) {
			fail("status says the data now starts at byte %d, want %d", st.New.DataOffset, c.newOffset())
		}
		if st.BytesTotal != interopFSSize {
			fail("status says %d bytes converted, want %d", st.BytesTotal, interopFSSize)
		}
	}
	want := wantHashes(payload, c.name)
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		got, seen := r.hashes[n]
		switch {
		case !seen:
			fail("file %s not listed after the conversion", n)
		case got != want[n]:
			fail("file %s hashes to %s, want %s", n, got, want[n])
		}
	}
	for n := range r.hashes {
		if _, known := want[n]; !known && n != "lost+found" {
			fail("unexpected file %s after the conversion", n)
		}
	}
	if msg := c.hostSuperblock(); msg != "" {
		fail("%s", msg)
	}
	if !ok && len(r.out) > 0 {
		t.Logf("%s: failing step output:\n%s", c.name, strings.Join(r.out, "\n"))
	}
	return ok
}

// hostSuperblock checks, independently of the kernel, that the image holds the
// filesystem under the new mapping at the new offset: the ext4 magic at byte
// 1080 once the first 4 KiB are decrypted with the new key. It returns "" when
// it does, else what is wrong.
func (c *interopCase) hostSuperblock() string {
	f, err := os.Open(c.diskPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, c.newOffset()); err != nil {
		return err.Error()
	}
	if c.newCipher != "none" {
		if binary.LittleEndian.Uint16(buf[1080:]) == 0xef53 {
			return "the image holds the ext4 superblock in plaintext: the new mapping encrypts nothing"
		}
		spec, err := sectorcipher.ParseSpec(c.newCipher)
		if err != nil {
			return err.Error()
		}
		ss := c.newSector
		if ss == 0 {
			ss = 512
		}
		cph, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: c.newKey, SectorSize: ss})
		if err != nil {
			return err.Error()
		}
		cph.Decrypt(buf, 0)
	}
	if m := binary.LittleEndian.Uint16(buf[1080:]); m != 0xef53 {
		return fmt.Sprintf("on the host, the new mapping yields no ext4 superblock at byte %d of the image (magic %#04x)", c.newOffset(), m)
	}
	return ""
}

// sparseDisk creates a sparse image of interopDiskSize bytes: the guest writes
// what it needs, and the host spends no time writing zeros.
func sparseDisk(t *testing.T, name string) string {
	t.Helper()
	p := t.TempDir() + "/" + name
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(interopDiskSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func guestDisk(i int) string { return "/dev/vd" + string(rune('a'+i)) }

// TestInteropCryptsetup is issue 4, scenario 2: the cryptshift CLI converts,
// offline and in a real kernel, ext4 filesystems that cryptsetup (or
// dm-linear, for plaintext) wrote, and cryptsetup (or losetup) opens the
// result with the command `cryptshift status` prints: the filesystem is clean
// and every file reads back as written. One disk per case, all cases in one
// boot, running side by side.
func TestInteropCryptsetup(t *testing.T) {
	start := time.Now()
	const window = 512 << 10
	xts, cbc := "aes-xts-plain64", "aes-cbc-essiv:sha256"
	cases := []*interopCase{
		{name: "journal", oldCipher: xts, oldKeyLen: 64, newCipher: xts, newKeyLen: 64, mode: "journal"},
		{name: "checksum", oldCipher: xts, oldKeyLen: 64, newCipher: xts, newKeyLen: 64, mode: "checksum"},
		{name: "shift", oldCipher: xts, oldKeyLen: 64, newCipher: xts, newKeyLen: 64, mode: "shift"},
		{name: "none", oldCipher: xts, oldKeyLen: 64, newCipher: xts, newKeyLen: 64, mode: "none"},
		{name: "encrypt", oldCipher: "none", newCipher: xts, newKeyLen: 64, mode: "journal"},
		// Shift to plaintext moves the data, so the losetup command status
		// prints must carry the new offset.
		{name: "decrypt", oldCipher: xts, oldKeyLen: 64, newCipher: "none", mode: "shift"},
		{name: "cbc2xts4k", oldCipher: cbc, oldKeyLen: 32, newCipher: xts, newKeyLen: 64, newSector: 4096, mode: "checksum"},
	}
	rng := rand.New(rand.NewPCG(2, 4))
	payload := interopPayload(2)
	files := map[string][]byte{}
	payloadFiles(payload, files)
	var disks []string
	var script strings.Builder
	script.WriteString(interopPrelude)
	for i, c := range cases {
		c.window = window
		c.keys(rng)
		c.dev = guestDisk(i)
		c.diskPath = sparseDisk(t, c.name+".img")
		c.files(files)
		disks = append(disks, c.diskPath)
		// Each case runs in its own background shell with its output in a
		// file, printed whole afterwards, so cases do not interleave on the
		// console; running side by side overlaps their waits for the disk.
		fmt.Fprintf(&script, "( t0=$(now); %s && { %s; }; t1=$(now); %s; echo \"TIME %s $t0 $t1 $(now)\" ) > /tmp/log.%s 2>&1 &\n",
			c.prepLine(), c.convertLine(), c.checkLine(), c.name, c.name)
	}
	script.WriteString("wait\n")
	for _, c := range cases {
		fmt.Fprintf(&script, "cat /tmp/log.%s\n", c.name)
	}
	script.WriteString("echo INTEROP-DONE\n")

	res := Run(t, Config{Image: interopImage, Disks: disks, Files: files, Script: script.String(), Timeout: 5 * time.Minute})
	if !strings.Contains(res.Console, "INTEROP-DONE") {
		t.Fatalf("scenario did not finish\n%s", res.Tail(consoleTail))
	}
	reps, err := parseReports(res.Console)
	if err != nil {
		t.Fatal(err)
	}
	passed := 0
	for _, c := range cases {
		if checkConverted(t, c, reps[c.name], payload, "open-old", "mkfs", "fill", "close-old", "convert") {
			passed++
		}
	}
	logGuestTimes(t, res.Console)
	t.Logf("%d of %d cases passed; boots 1, VM kills 0; guest %v, test %v", passed, len(cases), res.Duration.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	fmt.Printf("vm interop summary: scenarios passed %d/%d, VM kills 0, VM time %v\n", passed, len(cases), res.Duration.Round(time.Millisecond))
}

// logGuestTimes logs, per case, the guest seconds spent preparing and
// converting (TIME lines), for tuning only: nothing is asserted on them.
func logGuestTimes(t *testing.T, console string) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^TIME (\S+) ([\d.]+) ([\d.]+) ([\d.]+)$`)
	for _, m := range re.FindAllStringSubmatch(console, -1) {
		a, _ := strconv.ParseFloat(m[2], 64)
		b, _ := strconv.ParseFloat(m[3], 64)
		c, _ := strconv.ParseFloat(m[4], 64)
		t.Logf("guest time %s: prep+convert %.1fs, check %.1fs", m[1], b-a, c-b)
	}
}
