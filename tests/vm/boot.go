package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config describes one boot of a guest.
type Config struct {
	// Kernel to boot; nil means FindKernel().
	Kernel *Kernel
	// Image is what goes into the initramfs besides the script.
	Image Image
	// Initrd, when set, is a prebuilt initramfs (a dracut image, say)
	// booted instead of the one built from Image, which is then unused.
	// The per-boot archive (script, nonce, Files) is still appended to it,
	// and the image must run /etc/vm/script and print the harness's
	// markers itself: SystemdRunner gives a systemd initramfs the files
	// that do that.
	Initrd string
	// Disks are raw image files attached as virtio drives: /dev/vda, /dev/vdb, ...
	Disks []string
	// DiskCache is qemu's cache mode for the disks; "" means writeback. Killing
	// qemu keeps every write the guest saw acknowledged in any mode but "unsafe"
	// also ignores flushes, which only matters if the host itself crashes.
	DiskCache string
	// DiscardUnmap makes qemu punch holes in the disk images for the
	// guest's discards (discard=unmap), so trimmed sectors really read back
	// as zeros, as on an SSD that zeroes them; by default qemu ignores them.
	DiscardUnmap bool
	// Script is a busybox sh script run as root after the modules are loaded,
	// with the console as stdout and stderr and /tmp as working directory. Its
	// exit status comes back in Result.ExitCode.
	Script string
	// Files are extra files for this boot only (key files, inputs, helper
	// scripts), by guest path; they are created with mode 0755.
	Files map[string][]byte
	// Memory in MiB (default 1024) and SMP CPU count (default 2).
	Memory, SMP int
	// Timeout bounds the script; default 3 minutes. Past it qemu is killed
	// and Boot returns an error. It counts from the moment the script
	// starts, and stretches with the machine's speed right now: a boot
	// slower than referenceBoot (a host loaded by other work, where every
	// step in the guest is as much slower) multiplies it, so that only a
	// guest that hangs, not one on a busy host, times out.
	Timeout time.Duration
	// KillOn, when set, kills qemu KillAfter after the first console line
	// containing it. Without KillOn, a non-zero KillAfter counts from the moment
	// the script starts. SIGKILL to qemu models an OS crash: what the guest's
	// disk acknowledged stays in the images.
	KillOn    string
	KillAfter time.Duration
	// ConsoleFile, when set, receives the console as it arrives, which helps to
	// debug a scenario that hangs.
	ConsoleFile string
	// Append is added to the kernel command line.
	Append string
}

// Result is what came back from one boot.
type Result struct {
	// ExitCode is the script's exit status, or -1 when the guest never reported
	// one (killed, panicked, timed out).
	ExitCode int
	// Console is the serial console text, carriage returns removed.
	Console string
	// QemuStderr is qemu's own diagnostics.
	QemuStderr string
	// Duration runs from starting qemu to its exit.
	Duration time.Duration
	// BootTime runs from starting qemu to the moment the script starts (kernel
	// boot plus module loading); zero if the guest never got there.
	BootTime time.Duration
	// Killed tells qemu was killed as Config.KillOn/KillAfter asked.
	Killed bool
	// TimedOut tells qemu was killed at Config.Timeout.
	TimedOut bool
	// ModuleFailures lists modules the guest failed to load.
	ModuleFailures []string
}

// Tail returns the last n lines of the console.
func (r *Result) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(r.Console, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// RandomDelay picks a duration in [lo, hi) from rng, for killing a guest at a
// reproducible pseudo-random moment: rerun with the same seed to get the same delay.
func RandomDelay(rng *mrand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// Boot runs one guest to completion (or until it is killed) and reports what
// happened. It returns an error when the harness could not run the guest as
// asked: setup failures, qemu errors, a timeout, or a guest that stopped without
// reporting an exit status when it was not meant to be killed. A script that
// exits non-zero is not an error here; check Result.ExitCode. Whenever qemu ran,
// the Result is returned too, so the caller can show the console.
func Boot(ctx context.Context, cfg Config) (*Result, error) {
	k := cfg.Kernel
	if k == nil {
		var err error
		if k, err = FindKernel(); err != nil {
			return nil, err
		}
	}
	qemu, err := QemuBinary()
	if err != nil {
		return nil, err
	}
	var base []byte
	if cfg.Initrd != "" {
		base, err = os.ReadFile(cfg.Initrd)
	} else {
		base, err = baseArchive(k, cfg.Image)
	}
	if err != nil {
		return nil, fmt.Errorf("vm: initramfs: %w", err)
	}
	for _, d := range cfg.Disks {
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("vm: disk: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "vm-boot-")
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	defer os.RemoveAll(dir)

	nonceBytes := make([]byte, 8)
	if _, err := rand.Read(nonceBytes); err != nil {
		return nil, fmt.Errorf("vm: nonce: %w", err)
	}
	nonce := hex.EncodeToString(nonceBytes)
	initrd := filepath.Join(dir, "initrd")
	if err := writeInitrd(initrd, base, cfg, nonce); err != nil {
		return nil, err
	}

	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Minute
	}
	mem, smp := cfg.Memory, cfg.SMP
	if mem <= 0 {
		mem = 1024
	}
	if smp <= 0 {
		smp = 2
	}
	cache := cfg.DiskCache
	if cache == "" {
		cache = "writeback"
	}
	// no_timer_check: on a loaded host the emulated CPU can be so slow
	// that the kernel's check of the IO-APIC timer fails and it panics
	// ("IO-APIC + timer doesn't work!"), as one boot here did; the timer
	// works, only the check's expectation of speed does not hold.
	appendLine := "console=ttyS0 quiet panic=-1 random.trust_cpu=on rdinit=/init no_timer_check"
	if cfg.Append != "" {
		appendLine += " " + cfg.Append
	}
	args := []string{
		"-accel", "tcg", "-cpu", "max",
		"-smp", strconv.Itoa(smp), "-m", strconv.Itoa(mem),
		// No default devices (network, VGA, floppy): less to probe at boot.
		"-nodefaults", "-nographic", "-no-reboot",
		"-serial", "stdio", "-monitor", "none",
		"-kernel", k.BootImage(), "-initrd", initrd,
		"-append", appendLine,
	}
	for _, d := range cfg.Disks {
		// qemu option values escape a comma by doubling it.
		file := strings.ReplaceAll(d, ",", ",,")
		drive := fmt.Sprintf("file=%s,format=raw,if=virtio,cache=%s", file, cache)
		if cfg.DiscardUnmap {
			drive += ",discard=unmap"
		}
		args = append(args, "-drive", drive)
	}

	var console io.Writer = io.Discard
	if cfg.ConsoleFile != "" {
		f, err := os.Create(cfg.ConsoleFile)
		if err != nil {
			return nil, fmt.Errorf("vm: console file: %w", err)
		}
		defer f.Close()
		console = f
	}

	cmd := exec.Command(qemu, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdin = nil
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	w := &watcher{
		nonce:     nonce,
		killOn:    cfg.KillOn,
		killAfter: cfg.KillAfter,
		file:      console,
		killNow:   make(chan struct{}),
		readyCh:   make(chan struct{}),
	}
	start := time.Now()
	w.start = start
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vm: start %s: %w", qemu, err)
	}

	var timedOut, killed bool
	limit := bootLimit // what is timing, for the error
	var reasonMu sync.Mutex
	done := make(chan struct{})
	go func() {
		timer := time.NewTimer(bootLimit)
		defer timer.Stop()
		ready := w.readyCh
		for stop := false; !stop; {
			select {
			case <-done:
				return
			case <-ready:
				// The script started: from here the script's own timeout,
				// stretched by how slow the boot was.
				ready = nil
				reasonMu.Lock()
				limit = scaledTimeout(timeout, w.bootTime())
				reasonMu.Unlock()
				timer.Reset(limit)
			case <-timer.C:
				reasonMu.Lock()
				timedOut, stop = true, true
				reasonMu.Unlock()
			case <-ctx.Done():
				reasonMu.Lock()
				timedOut, stop = true, true
				reasonMu.Unlock()
			case <-w.killNow:
				reasonMu.Lock()
				killed, stop = true, true
				reasonMu.Unlock()
			}
		}
		_ = cmd.Process.Kill()
	}()
	copyErr := w.consume(stdout)
	waitErr := cmd.Wait()
	close(done)
	dur := time.Since(start)
	w.stopTimer()

	reasonMu.Lock()
	res := &Result{
		ExitCode:       -1,
		Console:        w.text(),
		QemuStderr:     stderr.String(),
		Duration:       dur,
		Killed:         killed,
		TimedOut:       timedOut,
		BootTime:       w.bootTime(),
		ModuleFailures: parseModFails(w.text(), nonce),
	}
	reasonMu.Unlock()
	if code, ok := parseExit(res.Console, nonce); ok {
		res.ExitCode = code
	}
	if res.Killed && res.ExitCode < 0 {
		powerCuts.Add(1)
	}

	switch {
	case copyErr != nil && !errors.Is(copyErr, os.ErrClosed):
		return res, fmt.Errorf("vm: reading console: %w", copyErr)
	case res.TimedOut:
		if ctx.Err() != nil {
			return res, fmt.Errorf("vm: guest stopped: %w", ctx.Err())
		}
		reasonMu.Lock()
		defer reasonMu.Unlock()
		if res.BootTime == 0 {
			return res, fmt.Errorf("vm: guest did not start its script within %v", bootLimit)
		}
		return res, fmt.Errorf("vm: guest script timed out after %v (%v, stretched for a boot of %v)", limit.Round(time.Second), timeout, res.BootTime.Round(time.Second))
	case res.Killed:
		return res, nil
	case res.ExitCode < 0:
		return res, fmt.Errorf("vm: guest stopped without reporting an exit status (qemu: %v; %s)",
			waitErr, strings.TrimSpace(res.QemuStderr))
	case waitErr != nil:
		return res, fmt.Errorf("vm: qemu: %w: %s", waitErr, strings.TrimSpace(res.QemuStderr))
	}
	return res, nil
}

// writeInitrd writes the cached base archive followed by a small archive with
// this boot's script, nonce and files; the kernel unpacks both in order.
func writeInitrd(path string, base []byte, cfg Config, nonce string) error {
	a := newArchive()
	a.addFile("/etc/vm/script", 0o755, []byte(cfg.Script))
	a.addFile("/etc/vm/nonce", 0o644, []byte(nonce+"\n"))
	for p, data := range cfg.Files {
		a.addFile(p, 0o700, data) // owner only: key files among them
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("vm: initrd: %w", err)
	}
	if _, err := f.Write(base); err != nil {
		f.Close()
		return fmt.Errorf("vm: initrd: %w", err)
	}
	if err := a.writeTo(f); err != nil {
		f.Close()
		return fmt.Errorf("vm: initrd: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("vm: initrd: %w", err)
	}
	return nil
}

// watcher collects the console and decides when to kill qemu.
type watcher struct {
	nonce     string
	killOn    string
	killAfter time.Duration
	file      io.Writer
	killNow   chan struct{}
	readyCh   chan struct{} // closed when the script starts
	start     time.Time

	mu        sync.Mutex
	buf       bytes.Buffer
	partial   []byte // console bytes after the last newline
	ready     time.Duration
	armed     bool
	timer     *time.Timer
	killFired bool
}

func (w *watcher) consume(r io.Reader) error {
	chunk := make([]byte, 32*1024)
	for {
		n, err := r.Read(chunk)
		if n > 0 {
			w.feed(chunk[:n])
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (w *watcher) feed(b []byte) {
	b = bytes.ReplaceAll(b, []byte("\r"), nil)
	_, _ = w.file.Write(b)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.line(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	// A guest may print a kill marker without a newline and then block.
	if w.killOn != "" && bytes.Contains(w.partial, []byte(w.killOn)) {
		w.arm()
	}
}

// line handles one complete console line; called with w.mu held.
func (w *watcher) line(l string) {
	if w.ready == 0 && strings.Contains(l, "@@VM-READY "+w.nonce+"@@") {
		w.ready = time.Since(w.start)
		close(w.readyCh)
		if w.killOn == "" && w.killAfter > 0 {
			w.arm()
		}
	}
	if w.killOn != "" && strings.Contains(l, w.killOn) {
		w.arm()
	}
}

// arm starts the kill countdown once; called with w.mu held.
func (w *watcher) arm() {
	if w.armed {
		return
	}
	w.armed = true
	fire := func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.killFired {
			w.killFired = true
			close(w.killNow)
		}
	}
	if w.killAfter <= 0 {
		if !w.killFired {
			w.killFired = true
			close(w.killNow)
		}
		return
	}
	w.timer = time.AfterFunc(w.killAfter, fire)
}

func (w *watcher) stopTimer() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
	}
}

func (w *watcher) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *watcher) bootTime() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ready
}

// bootLimit bounds the kernel's boot up to the script's start, which takes
// seconds on an idle host and a minute or two on a loaded one.
const bootLimit = 10 * time.Minute

// referenceBoot is how long a boot takes on an idle host of this kind
// (qemu TCG, two cores); slower boots stretch the script's timeout.
const referenceBoot = 15 * time.Second

// maxStretch caps the stretch, so a guest that hangs still fails in
// bounded time.
const maxStretch = 8

// scaledTimeout is the script's timeout after a boot that took boot.
func scaledTimeout(timeout, boot time.Duration) time.Duration {
	f := float64(boot) / float64(referenceBoot)
	f = min(max(f, 1), maxStretch)
	return time.Duration(float64(timeout) * f)
}

func parseExit(console, nonce string) (int, bool) {
	re := regexp.MustCompile(`@@VM-EXIT ` + regexp.QuoteMeta(nonce) + ` (\d+)@@`)
	m := re.FindStringSubmatch(console)
	if m == nil {
		return 0, false
	}
	code, err := strconv.Atoi(m[1])
	if err != nil || code > math.MaxUint8 {
		return 0, false
	}
	return code, true
}

func parseModFails(console, nonce string) []string {
	re := regexp.MustCompile(`@@VM-MODFAIL ` + regexp.QuoteMeta(nonce) + ` (\S+)@@`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(console, -1) {
		out = append(out, m[1])
	}
	return out
}
