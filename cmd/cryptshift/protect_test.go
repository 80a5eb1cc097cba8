package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSwapOn(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]bool{
		"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n":                                      false,
		"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/sda2 partition\t8388604\t0\t-2\n": true,
	} {
		p := filepath.Join(dir, "swaps")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := swapOn(p); got != want {
			t.Errorf("swapOn(%q) = %v", content, got)
		}
	}
	if !swapOn(filepath.Join(dir, "missing")) {
		t.Error("an unreadable /proc/swaps counts as no swap")
	}
}

// TestEndToEndProcessProtectsKeys looks at the binary while it reads its
// first key: the old key file is a FIFO, so the process waits in open(2)
// until the test opens the other end, which it can only do once the
// command's Before (protectKeys) has run. No timing: opening a FIFO for
// writing returns exactly when the reader has opened it.
func TestEndToEndProcessProtectsKeys(t *testing.T) {
	c := buildCLI(t)
	fifo := filepath.Join(c.dir, "old.key")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	oldKey := testKey(11)
	newKey := c.file("new.key", testKey(12))
	img, plain := c.makeImage("disk.img", e2eImage, e2eData, oldKey)
	args := []string{"convert", "--old-key-file", fifo, "--new-key-file", newKey, "--metadata-size", "2M", "--window", "1M", "--progress", "none", img}
	cmd, so, se := c.startEnv(nil, args...)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	opened := make(chan *os.File, 1)
	go func() {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
		}
		opened <- w
	}()
	var w *os.File
	select {
	case w = <-opened:
	case err := <-exited:
		// Never reached the key: release the opener, and report.
		if r, oerr := os.OpenFile(fifo, os.O_RDONLY|unix.O_NONBLOCK, 0); oerr == nil {
			(<-opened).Close()
			r.Close()
		}
		res := c.waited(cmd, err, args, so, se)
		t.Fatalf("convert exited (%d) before reading its key:\n%s", res.code, res.stderr)
	}
	if w == nil {
		t.FailNow()
	}
	pid := cmd.Process.Pid
	limits, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		t.Fatal(err)
	}
	if !hasLimit(string(limits), "Max core file size", "0", "0") {
		t.Errorf("the process reading keys may dump core:\n%s", limits)
	}
	locked := statusKB(t, pid, "VmLck")
	if _, err := w.Write(oldKey); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r := c.waited(cmd, <-exited, args, so, se)
	if r.code != 0 {
		t.Fatalf("convert: exit %d\n%s", r.code, r.stderr)
	}
	// Root (CAP_IPC_LOCK) always gets the lock; otherwise the memlock
	// limit decides, and the process says so when swap is on.
	switch {
	case locked > 0:
	case os.Geteuid() == 0:
		t.Errorf("running as root, the process reading keys has no locked memory (VmLck %d kB)", locked)
	case swapOn("/proc/swaps") && !strings.Contains(r.stderr, "cannot lock memory"):
		t.Errorf("memory not locked, swap on, and no warning:\n%s", r.stderr)
	}
	if got := decrypted(t, img, e2eData, testKey(12)); string(got) != string(plain) {
		t.Fatal("the conversion through a FIFO key file did not convert")
	}
}

func hasLimit(limits, name string, soft, hard string) bool {
	for _, l := range strings.Split(limits, "\n") {
		if strings.HasPrefix(l, name) {
			f := strings.Fields(strings.TrimPrefix(l, name))
			return len(f) >= 2 && f[0] == soft && f[1] == hard
		}
	}
	return false
}

func statusKB(t *testing.T, pid int, field string) int {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
