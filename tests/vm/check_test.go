package vm

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The brief is "fails loudly, never skips silently": a host without qemu or
// without the kernel must produce an error that names the fix.
func TestCheckReportsMissingQemuAndKernel(t *testing.T) {
	t.Setenv(QemuEnv, "/nonexistent/qemu-system-x86_64")
	t.Setenv(KernelEnv, "0.0.0-no-such-kernel")
	err := Check()
	if err == nil {
		t.Fatal("Check passed with neither qemu nor the kernel present")
	}
	msg := err.Error()
	for _, want := range []string{"/nonexistent/qemu-system-x86_64", "0.0.0-no-such-kernel", "install-deps.sh"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Check error does not mention %q:\n%s", want, msg)
		}
	}
}

func TestVersionLess(t *testing.T) {
	ordered := []string{"5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-56-amd64", "6.10.2-amd64"}
	for i := 1; i < len(ordered); i++ {
		if !versionLess(ordered[i-1], ordered[i]) || versionLess(ordered[i], ordered[i-1]) {
			t.Errorf("want %s < %s", ordered[i-1], ordered[i])
		}
	}
}

// A guest that never finishes must come back as an error with TimedOut set,
// not hang the test run. The script sleeps far beyond the timeout, so the
// outcome does not depend on how fast the emulator is.
func TestBootTimesOut(t *testing.T) {
	Require(t)
	res, err := Boot(context.Background(), Config{Image: testImage, Script: "sleep 100000", Timeout: 3 * time.Second})
	if err == nil {
		t.Fatal("Boot returned no error for a guest that never finished")
	}
	if res == nil || !res.TimedOut || res.ExitCode != -1 || res.Killed {
		t.Fatalf("want TimedOut, no exit status, not Killed; got %+v (err %v)", res, err)
	}
	if !strings.Contains(err.Error(), "timed out") {
		t.Errorf("error does not say it timed out: %v", err)
	}
}

// The script's timeout stretches with a slow boot, within bounds: a busy
// host must not fail a guest that is merely slow, and a hung guest must
// still fail in bounded time.
func TestScaledTimeout(t *testing.T) {
	for _, c := range []struct{ timeout, boot, want time.Duration }{
		{4 * time.Minute, 5 * time.Second, 4 * time.Minute},    // faster than the reference: never shorter
		{4 * time.Minute, referenceBoot, 4 * time.Minute},      // the reference itself
		{4 * time.Minute, 4 * referenceBoot, 16 * time.Minute}, // a loaded host
		{4 * time.Minute, time.Hour, maxStretch * 4 * time.Minute},
	} {
		if got := scaledTimeout(c.timeout, c.boot); got != c.want {
			t.Errorf("scaledTimeout(%v, %v) = %v, want %v", c.timeout, c.boot, got, c.want)
		}
	}
}
