package vm

import (
	"strings"
	"testing"
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
