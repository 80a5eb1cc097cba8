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
