//go:build testhooks

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/online"
)

// The testhooks build (go build -tags testhooks, only tests do) lets the
// end-to-end and real-kernel tests stop the real binary at exact points,
// so they need no timing. The release build has none of this
// (testhooks_release.go), and scripts/test.sh checks that its binary holds
// no CRYPTSHIFT_TEST string.
const (
	// CRYPTSHIFT_TEST_INTERRUPT_AFTER=N: convert sends itself SIGINT twice
	// after window N is committed, waiting for each to be handled, which
	// drives the real signal path.
	testInterruptEnv = "CRYPTSHIFT_TEST_INTERRUPT_AFTER"
	// CRYPTSHIFT_TEST_KILL_AFTER=N: convert SIGKILLs itself after window N
	// is committed, leaving the state a crash leaves for recover to find.
	testKillEnv = "CRYPTSHIFT_TEST_KILL_AFTER"
	// CRYPTSHIFT_TEST_KILL_HOLDING=N: an online worker SIGKILLs itself
	// right after it holds window step N, so the guard's recovery of a
	// held window can be tested.
	testKillHoldingEnv = "CRYPTSHIFT_TEST_KILL_HOLDING"
	// CRYPTSHIFT_TEST_WAIT_AFTER=N with CRYPTSHIFT_TEST_WAIT_FILE=PATH:
	// after window N is committed, convert creates PATH and waits until it
	// is removed, so a test can act at that exact point (a neighbour's
	// dmsetup suspend, say) and then let the conversion go on.
	testWaitEnv     = "CRYPTSHIFT_TEST_WAIT_AFTER"
	testWaitFileEnv = "CRYPTSHIFT_TEST_WAIT_FILE"
)

// testHooks returns the engine and online hooks the environment asks for.
func testHooks(in *interrupter) (*engine.Hooks, online.Hooks) {
	var eh *engine.Hooks
	if n, ok := envStep(testInterruptEnv); ok {
		eh = &engine.Hooks{AfterWindow: selfInterrupt(in, n)}
	}
	if n, ok := envStep(testKillEnv); ok {
		eh = &engine.Hooks{AfterWindow: func(done uint64) {
			if done == n {
				killSelf()
			}
		}}
	}
	if n, ok := envStep(testWaitEnv); ok {
		eh = &engine.Hooks{AfterWindow: waitForFile(n, os.Getenv(testWaitFileEnv))}
	}
	var oh online.Hooks
	if n, ok := envStep(testKillHoldingEnv); ok {
		oh.Held = func(w uint64, _, _ int64) {
			if w == n {
				killSelf()
			}
		}
	}
	return eh, oh
}

func envStep(name string) (uint64, bool) {
	n, err := strconv.ParseUint(strings.TrimSpace(os.Getenv(name)), 10, 64)
	return n, err == nil
}

func killSelf() {
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL cannot be caught: this never runs on
}

// selfInterrupt is the hook behind testInterruptEnv.
func selfInterrupt(in *interrupter, after uint64) func(uint64) {
	return func(done uint64) {
		if done != after {
			return
		}
		for i := 1; i <= 2; i++ {
			if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
				panic(fmt.Sprintf("test hook: kill: %v", err))
			}
			// Bounded so that a broken signal path makes the test fail
			// (the conversion completes) instead of hanging.
			select {
			case <-in.handled:
			case <-time.After(time.Minute):
				return
			}
		}
	}
}

// waitForFile is the hook behind testWaitEnv. The wait is bounded so that a
// script that never releases it fails its test instead of hanging it.
func waitForFile(after uint64, path string) func(uint64) {
	return func(done uint64) {
		if done != after || path == "" {
			return
		}
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			panic(fmt.Sprintf("test hook: %v", err))
		}
		for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(path); os.IsNotExist(err) {
				return
			}
		}
		panic("test hook: " + path + " was not removed within 5 minutes")
	}
}
