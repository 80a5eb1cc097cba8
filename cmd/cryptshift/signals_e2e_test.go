package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// blockedPipe is a pipe whose buffer the test has filled, so that the
// child's first write to it blocks: the child is then stopped at a known
// point (its first progress report, after its signal handlers are set)
// without any test hook in the binary.
type blockedPipe struct {
	r, w   *os.File
	filled int
}

func newBlockedPipe(t *testing.T) *blockedPipe {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fd := int(w.Fd())
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	p := &blockedPipe{r: r, w: w}
	chunk := make([]byte, 4096)
	for i := range chunk {
		chunk[i] = '#'
	}
	for {
		n, err := unix.Write(fd, chunk)
		if n > 0 {
			p.filled += n
		}
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The child gets the descriptor as it is: it must block, not fail.
	if err := unix.SetNonblock(fd, false); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitBlockedWriting waits until some thread of pid sleeps in pipe_write.
// The bound only keeps a broken binary from hanging the test.
func waitBlockedWriting(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "wchan"))
		for _, f := range tasks {
			if b, err := os.ReadFile(f); err == nil && isPipeWriteWait(string(b)) {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the child never blocked writing to its full stderr pipe")
}

// isPipeWriteWait: the kernel function a writer to a full pipe sleeps in
// is named differently across kernel versions.
func isPipeWriteWait(wchan string) bool {
	return strings.HasSuffix(wchan, "pipe_write") || wchan == "pipe_wait_writable" || wchan == "pipe_wait"
}

// startBlocked starts the binary with stderr on a full pipe and waits
// until it blocks on its first progress line.
func (c *runner) startBlocked(args ...string) (*exec.Cmd, *blockedPipe) {
	c.t.Helper()
	p := newBlockedPipe(c.t)
	cmd := exec.Command(c.bin, args...)
	cmd.Env = filterEnv(os.Environ(), "JOURNAL_STREAM", hookInterruptAfter, hookKillAfter)
	cmd.Stderr = p.w
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p.w.Close() // the child holds the only write end now
	waitBlockedWriting(c.t, cmd.Process.Pid)
	return cmd, p
}

func exitOf(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("killed by %v", ws.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// TestEndToEndHangupAndClosedPipe is `convert ... 2>&1 | tee log`, then
// the SSH session closes: tee is gone (the pipe's reader closed), SIGHUP
// arrives while cryptshift is blocked writing progress to the pipe. It
// must pause cleanly (exit 8), not die of SIGHUP or SIGPIPE mid-window,
// and the same command must then finish with every sector intact.
func TestEndToEndHangupAndClosedPipe(t *testing.T) {
	if signal.Ignored(syscall.SIGHUP) {
		t.Skip("the test runs with SIGHUP ignored (nohup): the child would inherit that")
	}
	c := buildCLI(t)
	oldKey, newKey := c.file("old.key", testKey(1)), c.file("new.key", testKey(2))
	img, plain := c.makeImage("disk.img", e2eImage, e2eData, testKey(1))
	args := []string{"convert", "--old-key-file", oldKey, "--new-key-file", newKey,
		"--metadata-size", "2M", "--window", "1M", "--progress", "plain", "--progress-interval", "0", img}

	cmd, p := c.startBlocked(args...)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.r.Close() // tee died: every write from now on meets a closed pipe
	if code := exitOf(t, cmd.Wait()); code != exitPaused {
		t.Fatalf("exit %d after SIGHUP and a closed pipe, want %d (paused)", code, exitPaused)
	}
	r := c.must(0, nil, "status", "--json", img)
	var st statusReport
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.State != "paused" || st.OpenWindow != nil || st.WindowsDone >= e2eWindows {
		t.Fatalf("status after the hangup: %v %+v", err, st)
	}

	// `| head -3`: the reader goes away mid-run; the conversion goes on
	// to the end (exit 0) instead of dying at its next line.
	cmd = exec.Command(c.bin, args...)
	cmd.Env = filterEnv(os.Environ(), "JOURNAL_STREAM", hookInterruptAfter, hookKillAfter)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(stderr)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	stderr.Close()
	stdout.Close()
	if code := exitOf(t, cmd.Wait()); code != exitOK {
		t.Fatalf("exit %d with its output pipes closed mid-run, want 0", code)
	}
	if got := decrypted(t, img, e2eData, testKey(2)); string(got) != string(plain) {
		t.Fatal("after the resume, the data under the new key differs from the original")
	}
}

// TestEndToEndJSONPause: with --progress json, every line on the progress
// stream parses, the signal's notice and the pause included.
func TestEndToEndJSONPause(t *testing.T) {
	c := buildCLI(t)
	oldKey, newKey := c.file("old.key", testKey(1)), c.file("new.key", testKey(2))
	img, _ := c.makeImage("disk.img", e2eImage, e2eData, testKey(1))
	cmd, p := c.startBlocked("convert", "--old-key-file", oldKey, "--new-key-file", newKey,
		"--metadata-size", "2M", "--window", "1M", "--progress", "json", "--progress-interval", "0", img)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(p.r)
	if err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, cmd.Wait()); code != exitPaused {
		t.Fatalf("exit %d, want %d\n%s", code, exitPaused, out)
	}
	out = out[p.filled:]
	states := map[string]int{}
	for i, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		var rec progressRecord
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %q\n%s", i, l, out)
		}
		states[rec.State]++
	}
	if states["pausing"] != 1 || states["paused"] != 1 {
		t.Errorf("want one pausing and one paused record, got %v\n%s", states, out)
	}
}
