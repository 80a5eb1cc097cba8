//go:build !testhooks

package main

// luksBeforeFinalHook: the release build has no test hooks.
func luksBeforeFinalHook() func() error { return nil }
