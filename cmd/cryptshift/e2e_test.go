package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/demo"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// The end-to-end tests run the built binary on image files, as a script
// or an administrator would, and check exit codes, output and the bytes
// on disk.

const (
	e2eImage    = 10 << 20
	e2eMeta     = 2 << 20
	e2eData     = e2eImage - e2eMeta
	e2eWindow   = 1 << 20
	e2eWindows  = e2eData / e2eWindow
	headerSize  = 4096
	headerCRC   = 4092
	headerDone  = 104
	interruptAt = 3
)

type runner struct {
	t   *testing.T
	bin string
	dir string
}

// The testhooks build's environment hooks (testhooks.go) these tests use;
// named here too, since the tests compile without the tag.
const (
	hookInterruptAfter = "CRYPTSHIFT_TEST_INTERRUPT_AFTER"
	hookKillAfter      = "CRYPTSHIFT_TEST_KILL_AFTER"
)

// buildCLI builds the binary, with the test hooks, once per test into the
// test's temp dir.
func buildCLI(t *testing.T) *runner {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "cryptshift")
	out, err := exec.Command("go", "build", "-tags", "testhooks", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return &runner{t: t, bin: bin, dir: dir}
}

type result struct {
	stdout, stderr string
	code           int
}

func (c *runner) run(env []string, args ...string) result {
	c.t.Helper()
	cmd, so, se := c.startEnv(env, args...)
	return c.wait(cmd, args, so, se)
}

// startEnv starts the binary with the test's environment plus env.
func (c *runner) startEnv(env []string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	// JOURNAL_STREAM from a test runner under systemd must not change
	// the progress mode these tests expect.
	cmd.Env = append(filterEnv(os.Environ(), "JOURNAL_STREAM", hookInterruptAfter, hookKillAfter), env...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %v: %v", args, err)
	}
	return cmd, &so, &se
}

// wait waits for a started binary and checks that nothing it was given
// or produced holds a key (leak_test.go).
func (c *runner) wait(cmd *exec.Cmd, args []string, so, se *bytes.Buffer) result {
	c.t.Helper()
	return c.waited(cmd, cmd.Wait(), args, so, se)
}

// waited is wait for a process already waited for, with err from Wait.
func (c *runner) waited(cmd *exec.Cmd, err error, args []string, so, se *bytes.Buffer) result {
	c.t.Helper()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run %v: %v", args, err)
	}
	c.checkNoKeyLeak(args, cmd.Env, so.String(), se.String())
	return result{so.String(), se.String(), code}
}

// must runs a command and fails the test unless it exits with want.
func (c *runner) must(want int, env []string, args ...string) result {
	c.t.Helper()
	r := c.run(env, args...)
	if r.code != want {
		c.t.Fatalf("cryptshift %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	return r
}

func filterEnv(env []string, drop ...string) []string {
	var out []string
	for _, kv := range env {
		keep := true
		for _, d := range drop {
			if strings.HasPrefix(kv, d+"=") {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

func (c *runner) file(name string, b []byte) string {
	c.t.Helper()
	p := filepath.Join(c.dir, name)
	if strings.Contains(name, "key") {
		registerKey(b)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func testKey(seed byte) []byte {
	k := make([]byte, 64)
	for i := range k {
		k[i] = seed ^ byte(i*13)
	}
	registerKey(k)
	return k
}

func xtsCipher(t *testing.T, key []byte) sectorcipher.Cipher {
	t.Helper()
	spec, err := sectorcipher.ParseSpec("aes-xts-plain64")
	if err != nil {
		t.Fatal(err)
	}
	c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: key, SectorSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// makeImage writes an image of size bytes whose first dataSize bytes are
// the demo text encrypted under key; it returns the plaintext.
func (c *runner) makeImage(name string, size, dataSize int64, key []byte) (string, []byte) {
	c.t.Helper()
	plain := make([]byte, dataSize)
	demo.Plain(plain, 0)
	img := make([]byte, size)
	copy(img, plain)
	xtsCipher(c.t, key).Encrypt(img[:dataSize], 0)
	return c.file(name, img), plain
}

func hashFile(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// decrypted reads the data area of path and decrypts it under key.
func decrypted(t *testing.T, path string, dataSize int64, key []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b = b[:dataSize]
	xtsCipher(t, key).Decrypt(b, 0)
	return b
}

func TestEndToEnd(t *testing.T) {
	c := buildCLI(t)
	oldKey, newKey, otherKey := c.file("old.key", testKey(1)), c.file("new.key", testKey(2)), c.file("other.key", testKey(3))
	img, plain := c.makeImage("disk.img", e2eImage, e2eData, testKey(1))
	layout := []string{"--metadata-size", "2M", "--window", "1M"}
	convert := func(oldK, newK string, extra ...string) []string {
		args := append([]string{"convert", "--old-key-file", oldK, "--new-key-file", newK}, layout...)
		return append(append(args, extra...), img)
	}

	// A wrong old key decrypts to noise: refused before anything is written.
	before := hashFile(t, img)
	r := c.must(3, nil, convert(otherKey, newKey, "--progress", "none")...)
	if !strings.HasPrefix(r.stderr, "cryptshift: ") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("error is not one \"cryptshift: \" line: %q", r.stderr)
	}
	if hashFile(t, img) != before {
		t.Fatal("a refused conversion changed the image")
	}

	// Resilience none is refused without --force, also untouched.
	c.must(10, nil, convert(oldKey, newKey, "--resilience", "none")...)
	if hashFile(t, img) != before {
		t.Fatal("a refused conversion changed the image")
	}

	// The engine must be one of three; kernel crypto offline needs the
	// kernel's device-mapper, which this host lacks (tests/vm has it),
	// and the refusal names the flag.
	for _, bad := range [][]string{{"--crypto", "kernel"}, {"--crypto", "gpu"}} {
		r := c.must(exitUsage, nil, convert(oldKey, newKey, bad...)...)
		if !strings.Contains(r.stderr, "--crypto") {
			t.Errorf("%v: the error does not name --crypto: %q", bad, r.stderr)
		}
	}
	if hashFile(t, img) != before {
		t.Fatal("a refused conversion changed the image")
	}

	// Someone else holding the image: exit 4, nothing written.
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	c.must(4, nil, convert(oldKey, newKey)...)
	f.Close()

	// Start, and pause by SIGINT after window 3: the test hook sends two
	// signals from inside the process, the second must be ignored.
	r = c.must(8, []string{hookInterruptAfter + "=3"}, convert(oldKey, newKey, "--progress", "plain")...)
	for _, want := range []string{
		"Received interrupt: finishing the current window, then pausing.",
		"Received interrupt again: ignored",
		"Paused at 3 of 8 windows; run the same command again to resume.\n",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "\r") {
		t.Errorf("plain progress contains a carriage return: %q", r.stderr)
	}
	if strings.Contains(r.stderr, "cryptshift: ") {
		t.Errorf("a pause is not an error, but one was printed:\n%s", r.stderr)
	}

	// status --json: keyless, machine-readable.
	r = c.must(0, nil, "status", "--json", img)
	var st statusReport
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
	}
	if st.State != "paused" || st.Mode != "journal" || st.WindowsDone != interruptAt || st.WindowsTotal != e2eWindows ||
		st.BytesDone != interruptAt*e2eWindow || st.BytesTotal != e2eData || st.OpenWindow != nil || st.CryptoEngine != "userspace" {
		t.Errorf("status after pause: %+v", st)
	}
	if !st.Metadata.OnDevice || st.Metadata.Offset != e2eData || st.Metadata.Size != e2eMeta || len(st.Copies) != 2 {
		t.Errorf("status metadata: %+v, copies %v", st.Metadata, st.Copies)
	}
	wantOpen := "cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 --key-file KEYFILE --offset 0 --size 16384 " + img + " NAME"
	if st.New.OpenCommand != wantOpen || st.New.CrypttabOptions != "plain,cipher=aes-xts-plain64,size=512,hash=plain" {
		t.Errorf("new mapping: open %q, crypttab %q", st.New.OpenCommand, st.New.CrypttabOptions)
	}
	if strings.Contains(r.stdout, string(testKey(2))) {
		t.Error("status printed key material")
	}
	r = c.must(0, nil, "status", img)
	if !strings.Contains(r.stdout, "paused: 3 of 8 windows") || !strings.Contains(r.stdout, "\nCrypto:      userspace (") {
		t.Errorf("text status:\n%s", r.stdout)
	}

	// Resume attempts that must change nothing.
	paused := hashFile(t, img)
	r = c.must(3, nil, convert(oldKey, otherKey)...)
	if !strings.Contains(r.stderr, "new key does not match") {
		t.Errorf("wrong new key: %s", r.stderr)
	}
	r = c.must(6, nil, convert(oldKey, newKey, "--resilience", "checksum")...)
	if !strings.Contains(r.stderr, "--resilience checksum (recorded journal)") {
		t.Errorf("conflict: %s", r.stderr)
	}
	c.must(2, nil, "convert", "--old-key-file", "-", "--new-key-file", newKey, img)
	c.must(2, nil, "convert", "--old-key-file", oldKey, img, "--new-key-file", newKey) // flag after DEVICE
	if hashFile(t, img) != paused {
		t.Fatal("a refused resume changed the image")
	}

	// A forged header (more progress claimed, checksum fixed up) on a copy:
	// refused by resume, recover and verify, and left as it was.
	forged := c.file("forged.img", forgeDone(t, img, e2eWindows-1))
	forgedHash := hashFile(t, forged)
	c.must(5, nil, "convert", "--old-key-file", oldKey, "--new-key-file", newKey, forged)
	c.must(5, nil, "recover", "--old-key-file", oldKey, "--new-key-file", newKey, forged)
	c.must(5, nil, "verify", "--old-key-file", oldKey, "--new-key-file", newKey, forged)
	if hashFile(t, forged) != forgedHash {
		t.Fatal("a forged header led to a write")
	}

	// Resume with the same arguments (without the layout flags: recorded
	// values apply), JSON progress after every window.
	r = c.must(0, nil, "convert", "--old-key-file", oldKey, "--new-key-file", newKey, "--progress", "json", "--progress-interval", "0", img)
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != e2eWindows-interruptAt+2 {
		t.Fatalf("want %d JSON lines (first, one per window, summary), got %d:\n%s", e2eWindows-interruptAt+2, len(lines), r.stderr)
	}
	for i, l := range lines {
		var p progressRecord
		if err := json.Unmarshal([]byte(l), &p); err != nil {
			t.Fatalf("progress line %d is not JSON: %q", i, l)
		}
		if p.Device != img || !p.Resumed || p.WindowsTotal != e2eWindows || p.BytesTotal != e2eData {
			t.Errorf("progress line %d: %+v", i, p)
		}
		if i > 0 && i < len(lines)-1 && p.WindowsDone != uint64(interruptAt+i) {
			t.Errorf("progress line %d reports %d windows done", i, p.WindowsDone)
		}
		if i == len(lines)-1 && (p.State != "complete" || !strings.HasPrefix(p.Message, "Finished, converted 5.0 MiB in ")) {
			t.Errorf("final progress line: %+v", p)
		}
	}
	if !strings.Contains(r.stdout, "Conversion complete") || !strings.Contains(r.stdout, wantOpen) {
		t.Errorf("convert stdout:\n%s", r.stdout)
	}
	if !bytes.Equal(decrypted(t, img, e2eData, testKey(2)), plain) {
		t.Fatal("converted image does not decrypt to the original under the new key")
	}

	// verify: clean with --data; wrong key is exit 3.
	r = c.must(0, nil, "verify", "--data", "--old-key-file", oldKey, "--new-key-file", newKey, img)
	if !strings.Contains(r.stdout, "8 converted windows compared") || !strings.Contains(r.stdout, "clean") {
		t.Errorf("verify output:\n%s", r.stdout)
	}
	c.must(3, nil, "verify", "--old-key-file", oldKey, "--new-key-file", otherKey, img)

	// recover on a finished conversion: nothing to do, nothing changed.
	done := hashFile(t, img)
	r = c.must(0, nil, "recover", "--old-key-file", oldKey, "--new-key-file", newKey, img)
	if !strings.Contains(r.stdout, "no window was in flight") {
		t.Errorf("recover output:\n%s", r.stdout)
	}
	if hashFile(t, img) != done {
		t.Fatal("recover on a complete conversion changed the image")
	}
	r = c.must(0, nil, "status", "--json", img)
	st = statusReport{}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.State != "complete" || st.WindowsDone != e2eWindows {
		t.Errorf("final status: %v %+v", err, st)
	}

	// A data window changed behind cryptshift's back is a verify finding.
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	b[5*e2eWindow+100] ^= 1
	tampered := c.file("tampered.img", b)
	r = c.must(9, nil, "verify", "--data", "--old-key-file", oldKey, "--new-key-file", newKey, tampered)
	if !strings.Contains(r.stdout, "(windows 5)") {
		t.Errorf("verify of a tampered image does not name window 5:\n%s", r.stdout)
	}
}

// forgeDone returns the image at path with both header copies claiming
// done windows, their crc32c recomputed: what an attacker without the
// keys can produce.
func forgeDone(t *testing.T, path string, done uint64) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tab := crc32.MakeTable(crc32.Castagnoli)
	for slot := 1; slot <= 2; slot++ {
		h := b[len(b)-slot*headerSize : len(b)-(slot-1)*headerSize]
		binary.LittleEndian.PutUint64(h[headerDone:], done)
		binary.LittleEndian.PutUint32(h[headerCRC:], crc32.Checksum(h[:headerCRC], tab))
	}
	return b
}

func TestEndToEndSeparateMetadata(t *testing.T) {
	c := buildCLI(t)
	oldKey, newKey := c.file("old.key", testKey(4)), c.file("new.key", testKey(5))
	const size = 4 << 20
	img, plain := c.makeImage("data.img", size, size, testKey(4))
	meta := filepath.Join(c.dir, "meta.img")
	args := []string{"convert", "--old-key-file", oldKey, "--new-key-file", newKey, "--metadata", meta,
		"--metadata-size", "2M", "--window", "1M", "--progress", "none", img}
	r := c.must(0, nil, args...)
	if !strings.HasPrefix(r.stderr, "Finished, converted 4.0 MiB in ") {
		t.Errorf("stderr: %q", r.stderr)
	}
	st, err := os.Stat(meta)
	if err != nil || st.Size() != 2<<20 {
		t.Fatalf("metadata file: %v, %v", st, err)
	}
	if !bytes.Equal(decrypted(t, img, size, testKey(5)), plain) {
		t.Fatal("whole-device conversion does not decrypt to the original")
	}
	r = c.must(0, nil, "status", "--json", "--metadata", meta, img)
	var sr statusReport
	if err := json.Unmarshal([]byte(r.stdout), &sr); err != nil || sr.State != "complete" || sr.Metadata.OnDevice || sr.Metadata.Path != meta || sr.BytesTotal != size {
		t.Errorf("status: %v %+v", err, sr)
	}
	c.must(0, nil, "verify", "--data", "--metadata", meta, "--old-key-file", oldKey, "--new-key-file", newKey, img)
	// Without --metadata there is no header on the device itself.
	c.must(5, nil, "status", img)
	// The data is now under the new key, so the "old" key is wrong: the
	// refusal leaves no metadata file behind to trip the next attempt.
	meta2 := filepath.Join(c.dir, "meta2.img")
	c.must(3, nil, "convert", "--old-key-file", oldKey, "--new-key-file", newKey, "--metadata", meta2, "--metadata-size", "2M", "--window", "1M", img)
	if _, err := os.Stat(meta2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("metadata file of a refused conversion left behind: %v", err)
	}
}

// TestEndToEndCrashRecover kills convert (SIGKILL, as a crash) after window
// 3: the journal record of window 2 is the last log record, so recover must
// roll window 2 forward from it, and a second recover must find nothing.
func TestEndToEndCrashRecover(t *testing.T) {
	c := buildCLI(t)
	oldKey, newKey := c.file("old.key", testKey(6)), c.file("new.key", testKey(7))
	img, plain := c.makeImage("disk.img", e2eImage, e2eData, testKey(6))
	args := []string{"convert", "--old-key-file", oldKey, "--new-key-file", newKey,
		"--metadata-size", "2M", "--window", "1M", "--progress", "none", img}
	if r := c.run([]string{hookKillAfter + "=3"}, args...); r.code != -1 {
		t.Fatalf("convert with the kill hook: exit %d, want death by signal\n%s", r.code, r.stderr)
	}
	r := c.must(0, nil, "status", "--json", img)
	var st statusReport
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.State != "in-progress" || st.OpenWindow == nil || *st.OpenWindow != 2 {
		t.Fatalf("status after the crash: %+v (open window %v)", st, st.OpenWindow)
	}
	r = c.must(0, nil, "recover", "--old-key-file", oldKey, "--new-key-file", newKey, img)
	if !strings.Contains(r.stdout, "window 2 rolled forward; 3 of 8 windows converted; conversion paused") {
		t.Errorf("recover output:\n%s", r.stdout)
	}
	after := hashFile(t, img)
	r = c.must(0, nil, "recover", "--old-key-file", oldKey, "--new-key-file", newKey, img)
	if !strings.Contains(r.stdout, "no window was in flight") || hashFile(t, img) != after {
		t.Errorf("second recover was not a no-op:\n%s", r.stdout)
	}
	c.must(0, nil, args...)
	if !bytes.Equal(decrypted(t, img, e2eData, testKey(7)), plain) {
		t.Fatal("image does not decrypt to the original after crash, recover and resume")
	}
}

func TestEndToEndDemo(t *testing.T) {
	c := buildCLI(t)
	dir := t.TempDir()
	r := c.must(0, nil, "demo", "--dir", dir, "--size", "8M", "--progress", "plain")
	for _, want := range []string{"every byte equals the original", "clean", "In-place copy of the same range", "x the copy time"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "Finished, converted 6.0 MiB in ") {
		t.Errorf("demo stderr:\n%s", r.stderr)
	}
	left, err := os.ReadDir(dir)
	if err != nil || len(left) != 0 {
		t.Errorf("demo left files behind: %v %v", left, err)
	}
	c.must(2, nil, "demo", "--size", "1M", "--dir", dir)
}

// flipHeaderByte returns the image at path with one byte inside header copy
// slot flipped (copy 0 is the last 4 KiB of the image, copy 1 the 4 KiB
// below: the metadata is at the end of the device).
func flipHeaderByte(t *testing.T, path string, slot int) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-(slot+1)*headerSize+200] ^= 0xff
	return b
}

// TestEndToEndVerifyRepair damages one header copy of a paused conversion:
// verify reports it (exit 9) and writes nothing, verify --repair rewrites it
// (exit 0), and the conversion then resumes and finishes. With both copies
// damaged, --repair has nothing authentic to repair from: exit 5, nothing
// written.
func TestEndToEndVerifyRepair(t *testing.T) {
	c := buildCLI(t)
	oldKey, newKey := c.file("old.key", testKey(8)), c.file("new.key", testKey(9))
	img, plain := c.makeImage("disk.img", e2eImage, e2eData, testKey(8))
	args := []string{"convert", "--old-key-file", oldKey, "--new-key-file", newKey,
		"--metadata-size", "2M", "--window", "1M", "--progress", "none", img}
	c.must(exitPaused, []string{hookInterruptAfter + "=3"}, args...)
	verify := func(extra ...string) []string {
		return append(append([]string{"verify", "--old-key-file", oldKey, "--new-key-file", newKey}, extra...), img)
	}

	for _, damaged := range []int{0, 1} {
		c.file("disk.img", flipHeaderByte(t, img, damaged))
		before := hashFile(t, img)
		r := c.must(exitDamaged, nil, verify("--data")...)
		if !strings.Contains(r.stdout, fmt.Sprintf("header copy %d is unreadable", damaged)) || !strings.Contains(r.stdout, "verify --repair") {
			t.Errorf("verify of a damaged copy %d:\n%s", damaged, r.stdout)
		}
		if hashFile(t, img) != before {
			t.Fatal("verify without --repair changed the image")
		}
		c.must(exitUsage, nil, verify("--repair", "--online", "data")...)
		if hashFile(t, img) != before {
			t.Fatal("a refused verify --repair changed the image")
		}
		r = c.must(exitOK, nil, verify("--repair", "--data")...)
		if !strings.Contains(r.stdout, fmt.Sprintf("%s: repaired header copy %d from the authenticated copy %d\n", img, damaged, 1-damaged)) ||
			!strings.HasSuffix(r.stdout, img+": clean\n") {
			t.Errorf("verify --repair of copy %d:\n%s", damaged, r.stdout)
		}
		repaired := hashFile(t, img)
		r = c.must(exitOK, nil, verify("--data")...)
		if strings.Contains(r.stdout, "header copy") || strings.Contains(r.stdout, "repaired") {
			t.Errorf("verify after the repair of copy %d:\n%s", damaged, r.stdout)
		}
		r = c.must(exitOK, nil, verify("--repair")...)
		if strings.Contains(r.stdout, "repaired") || hashFile(t, img) != repaired {
			t.Errorf("verify --repair of a healthy header wrote:\n%s", r.stdout)
		}
		r = c.must(exitOK, nil, "status", img)
		if !strings.Contains(r.stdout, "Header 0:    ok\n") || !strings.Contains(r.stdout, "Header 1:    ok\n") {
			t.Errorf("status after the repair of copy %d:\n%s", damaged, r.stdout)
		}
	}

	// One copy altered without the keys (progress forged, crc fixed up):
	// it fails authentication, and --repair rewrites it from the other.
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	h := b[len(b)-headerSize:]
	binary.LittleEndian.PutUint64(h[headerDone:], e2eWindows-1)
	binary.LittleEndian.PutUint32(h[headerCRC:], crc32.Checksum(h[:headerCRC], crc32.MakeTable(crc32.Castagnoli)))
	c.file("disk.img", b)
	r := c.must(exitDamaged, nil, verify()...)
	if !strings.Contains(r.stdout, "header copy 0 (seq ") || !strings.Contains(r.stdout, "fails authentication") {
		t.Errorf("verify of an altered copy:\n%s", r.stdout)
	}
	r = c.must(exitOK, nil, verify("--repair")...)
	if !strings.Contains(r.stdout, "repaired header copy 0") {
		t.Errorf("verify --repair of an altered copy:\n%s", r.stdout)
	}
	r = c.must(exitOK, nil, "status", "--json", img)
	var st statusReport
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.WindowsDone != interruptAt || st.State != "paused" {
		t.Errorf("status after repairing an altered copy: %v %+v", err, st)
	}

	// Both copies damaged: nothing authentic to repair from.
	both := c.file("both.img", flipHeaderByte(t, img, 0))
	c.file("both.img", flipHeaderByte(t, both, 1))
	bothHash := hashFile(t, both)
	c.must(exitHeader, nil, "verify", "--repair", "--old-key-file", oldKey, "--new-key-file", newKey, both)
	if hashFile(t, both) != bothHash {
		t.Fatal("verify --repair with both copies damaged changed the image")
	}

	// The repaired conversion resumes and finishes.
	c.must(exitOK, nil, args...)
	if !bytes.Equal(decrypted(t, img, e2eData, testKey(9)), plain) {
		t.Fatal("image does not decrypt to the original after repair and resume")
	}
	c.must(exitOK, nil, verify("--data")...)
}

// TestEndToEndStatusPlaintextSide: a plaintext side is shown as plaintext in
// the text status (no key size, sector size or IV offset), while the JSON
// keeps every field, key_bits 0 included, for the scripts that read it.
func TestEndToEndStatusPlaintextSide(t *testing.T) {
	c := buildCLI(t)
	newKey := c.file("new.key", testKey(10))
	plain := make([]byte, e2eData)
	demo.Plain(plain, 0)
	img := c.file("plain.img", append(bytes.Clone(plain), make([]byte, e2eImage-e2eData)...))
	c.must(exitOK, nil, "convert", "--old-cipher", "none", "--new-key-file", newKey,
		"--metadata-size", "2M", "--window", "1M", "--progress", "none", img)
	if !bytes.Equal(decrypted(t, img, e2eData, testKey(10)), plain) {
		t.Fatal("encrypted image does not decrypt to the original")
	}

	r := c.must(exitOK, nil, "status", img)
	if !strings.Contains(r.stdout, "Old mapping: plaintext (no encryption), data at byte 0\n") {
		t.Errorf("text status does not show the old side as plaintext:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, "0-bit") || strings.Contains(r.stdout, "none,") {
		t.Errorf("text status shows key details for a plaintext side:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "New mapping: aes-xts-plain64, 512-bit key, sector size 512, iv offset 0, data at byte 0\n") {
		t.Errorf("text status of the encrypted side:\n%s", r.stdout)
	}

	r = c.must(exitOK, nil, "status", "--json", img)
	var raw struct {
		Old map[string]any `json:"old"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"cipher", "key_bits", "sector_size", "iv_offset", "iv_large_sectors", "data_offset", "open_command", "crypttab_options"} {
		if _, ok := raw.Old[f]; !ok {
			t.Errorf("status --json: old side lacks %q: %v", f, raw.Old)
		}
	}
	var st statusReport
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.Old.Cipher != "none" || st.Old.KeyBits != 0 || !strings.HasPrefix(st.Old.OpenCommand, "losetup ") {
		t.Errorf("status --json, old side: %+v", st.Old)
	}
}
