package vm

import (
	"context"
	"strings"
	"testing"
)

// Require fails the test, never skips it, when the host cannot boot guests: a
// missing qemu or kernel must show up as a red test, not as silently skipped
// coverage.
func Require(t testing.TB) {
	t.Helper()
	if err := Check(); err != nil {
		t.Fatalf("real-kernel tests cannot run on this host:\n%v", err)
	}
}

// consoleTail is how much of the console a failing test prints.
const consoleTail = 60

// Run boots cfg and fails the test, printing the tail of the guest console,
// unless the guest ran as asked: killed when cfg asks for a kill, otherwise
// exited with status 0.
func Run(t testing.TB, cfg Config) *Result {
	t.Helper()
	Require(t)
	res, err := Boot(context.Background(), cfg)
	if err != nil {
		if res != nil {
			t.Fatalf("%v\n--- guest console (tail) ---\n%s", err, res.Tail(consoleTail))
		}
		t.Fatal(err)
	}
	if len(res.ModuleFailures) > 0 {
		t.Fatalf("guest failed to load modules %v\n--- guest console (tail) ---\n%s", res.ModuleFailures, res.Tail(consoleTail))
	}
	if l := Leaks(cfg, res); len(l) > 0 {
		t.Fatalf("key material from the boot's key files appears in the %s", strings.Join(l, " and "))
	}
	wantKill := cfg.KillOn != "" || cfg.KillAfter > 0
	switch {
	case wantKill && !res.Killed:
		t.Fatalf("guest was to be killed but exited with status %d first\n--- guest console (tail) ---\n%s",
			res.ExitCode, res.Tail(consoleTail))
	case !wantKill && res.ExitCode != 0:
		t.Fatalf("guest script exited with status %d\n--- guest console (tail) ---\n%s", res.ExitCode, res.Tail(consoleTail))
	}
	t.Logf("guest: boot %v, total %v", res.BootTime.Round(1e6), res.Duration.Round(1e6))
	return res
}
