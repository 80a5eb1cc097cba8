package main

import (
	"slices"
	"strings"
	"testing"
)

// The worker gets exactly the guard's arguments (key file paths, never
// keys) and environment plus the worker mark: nothing the guard read from
// a key file can reach the worker's argv or environment.
func TestWorkerCommandCarriesNoKeys(t *testing.T) {
	dir := t.TempDir()
	c := &runner{t: t, dir: dir}
	oldKey, newKey := c.file("old.key", testKey(21)), c.file("new.key", testKey(22))
	args := []string{"convert", "--online", "data", "--old-key-file", oldKey, "--new-key-file", newKey, "/dev/sdb"}
	env := []string{"PATH=/usr/bin", "HOME=/root"}
	cmd := workerCommand("/usr/sbin/cryptshift", args, env)
	if !slices.Equal(cmd.Args[1:], args) {
		t.Fatalf("worker argv %q, want the guard's %q", cmd.Args[1:], args)
	}
	if want := append(slices.Clone(env), onlineWorkerEnv+"=1"); !slices.Equal(cmd.Env, want) {
		t.Fatalf("worker env %q, want %q", cmd.Env, want)
	}
	if l := keyLeaks(t.TempDir(), cmd.Args, cmd.Env, "", ""); len(l) != 0 {
		t.Fatal(strings.Join(l, "; "))
	}
}
