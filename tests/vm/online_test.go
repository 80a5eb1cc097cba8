package vm

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"
)

// onlineImage carries the guest side of the online scenarios.
var onlineImage = Image{GoPackages: []string{"./tests/vm/internal/onlineguest"}}

const onlineDataSize = 64 << 20

// onlineScenario is one online conversion under a mounted, busy ext4.
type onlineScenario struct {
	// open creates the device "data" over /dev/vda serving the old mapping.
	open string
	// reopen opens /dev/vda with the new mapping as "fresh".
	reopen string
	// convert is the onlineguest convert command line.
	convert string
	// newKeyHex, when set, must appear in `dmsetup table --showkeys data`.
	newKeyHex string
}

// TestOnlinePlainKeyAToKeyB converts a plain dm-crypt device (key A) to key
// B while ext4 on it is mounted and a writer keeps rewriting and fsyncing
// files: the device ends as one crypt target with key B, the filesystem is
// clean, every fsync the writer logged has its content, and a fresh
// `cryptsetup open --type plain` with key B reads it all.
func TestOnlinePlainKeyAToKeyB(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	keyA, keyB := randBytes(rng, 64), randBytes(rng, 64)
	const plain = "cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512"
	runOnline(t, onlineScenario{
		open:      plain + " --key-file /etc/vm/keyA /dev/vda data",
		reopen:    plain + " --key-file /etc/vm/keyB /dev/vda fresh",
		convert:   "onlineguest convert -name data -old-key /etc/vm/keyA -new-key /etc/vm/keyB -meta /dev/vdc -window 1048576",
		newKeyHex: hex.EncodeToString(keyB),
	}, map[string][]byte{"/etc/vm/keyA": keyA, "/etc/vm/keyB": keyB})
}

// TestOnlinePlaintextToEncrypted encrypts a plaintext filesystem served by a
// dm-linear device, online.
func TestOnlinePlaintextToEncrypted(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	keyB := randBytes(rng, 64)
	runOnline(t, onlineScenario{
		open:      fmt.Sprintf("dmsetup create data --table '0 %d linear /dev/vda 0'", onlineDataSize/512),
		reopen:    "cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file /etc/vm/keyB /dev/vda fresh",
		convert:   "onlineguest convert -name data -old-cipher none -new-key /etc/vm/keyB -meta /dev/vdc -window 1048576",
		newKeyHex: hex.EncodeToString(keyB),
	}, map[string][]byte{"/etc/vm/keyB": keyB})
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func runOnline(t *testing.T, sc onlineScenario, files map[string][]byte) {
	data := newDisk(t, "data.img", onlineDataSize, nil)
	logDisk := newDisk(t, "log.img", 8<<20, nil)
	meta := newDisk(t, "meta.img", 8<<20, nil)
	files["/etc/vm/newkey.hex"] = []byte(sc.newKeyHex)
	// Node paths: the guest has no udev; cryptsetup makes its own nodes,
	// dmsetup needs mknodes, and the converter finds /dev/dm-N itself.
	script := `set -e
` + sc.open + `
dmsetup mknodes
mkfs.ext4 -q -F /dev/mapper/data
mount -t ext4 /dev/mapper/data /mnt
mkdir /mnt/w
# Data spread over the filesystem that the conversion must carry across.
dd if=/dev/urandom of=/mnt/ballast bs=1M count=20 conv=fsync 2>/dev/null
sha256sum /mnt/ballast >/tmp/ballast.sum
onlineguest writer -dir /mnt/w -log /dev/vdb -seed 5 &
writer=$!
sleep 2
` + sc.convert + `
sleep 1
kill -TERM $writer
wait $writer
umount /mnt
e2fsck -fn /dev/mapper/data >/tmp/fsck.log 2>&1 && echo E2FSCK-LIVE-CLEAN || { cat /tmp/fsck.log; exit 1; }
echo "masked: $(dmsetup table data | cut -c1-80)"
dmsetup table --showkeys data | grep -q "$(cat /etc/vm/newkey.hex)" && echo SHOWKEYS-HAS-NEW-KEY
dmsetup remove data
` + sc.reopen + `
e2fsck -fn /dev/mapper/fresh >/tmp/fsck.log 2>&1 && echo E2FSCK-REOPENED-CLEAN || { cat /tmp/fsck.log; exit 1; }
mount -t ext4 /dev/mapper/fresh /mnt
onlineguest check -dir /mnt/w -log /dev/vdb -seed 5
sha256sum -c /tmp/ballast.sum >/dev/null && echo BALLAST-OK
umount /mnt
cryptsetup close fresh
`
	res := Run(t, Config{
		Image:   onlineImage,
		Disks:   []string{data, logDisk, meta},
		Files:   files,
		Script:  script,
		Timeout: 5 * time.Minute,
	})
	for _, want := range []string{"ONLINE-OK", "FINAL-TABLE-OK", "NO-LEFTOVER-DEVICES", "E2FSCK-LIVE-CLEAN",
		"SHOWKEYS-HAS-NEW-KEY", "E2FSCK-REOPENED-CLEAN", "CHECK-OK", "BALLAST-OK"} {
		if !strings.Contains(res.Console, want) {
			t.Errorf("guest did not report %s\n%s", want, res.Tail(consoleTail))
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^(ONLINE-STAT|WRITER-STAT|CONVERTED|CHECK-OK|masked:) .*$`).FindAllString(res.Console, -1) {
		t.Log(m)
		fmt.Println(t.Name()+":", m)
	}
	if m := regexp.MustCompile(`CHECK-OK records=(\d+)`).FindStringSubmatch(res.Console); m != nil && m[1] == "0" {
		t.Errorf("the writer logged no fsync: the test proved nothing about application writes")
	}
}
