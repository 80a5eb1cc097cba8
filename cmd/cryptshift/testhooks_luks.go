//go:build testhooks

package main

import "os"

// CRYPTSHIFT_TEST_KILL_BEFORE_FINAL=1: an online LUKS2 conversion
// SIGKILLs itself once NAME serves the new key and before the final LUKS2
// commit (docs/DESIGN.md, "Online LUKS2 conversion", T2), so the state
// between the two can be tested under a real kernel.
const testKillBeforeFinalEnv = "CRYPTSHIFT_TEST_KILL_BEFORE_FINAL"

// luksBeforeFinalHook returns the hook the environment asks for, or nil.
func luksBeforeFinalHook() func() error {
	if os.Getenv(testKillBeforeFinalEnv) != "1" {
		return nil
	}
	return func() error {
		killSelf()
		return nil
	}
}
