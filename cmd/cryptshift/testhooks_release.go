//go:build !testhooks

package main

import (
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/online"
)

// testHooks: the release build has no test hooks (see testhooks.go).
func testHooks(*interrupter) (*engine.Hooks, online.Hooks) { return nil, online.Hooks{} }
