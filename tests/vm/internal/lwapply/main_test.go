package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestRunCopiesThePlan(t *testing.T) {
	dir := t.TempDir()
	src := bytes.Repeat([]byte("0123456789abcdef"), 256) // 4 KiB
	dst := bytes.Repeat([]byte{'x'}, 4096)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sp, dp := write("src", src), write("dst", dst)
	pp := write("plan", []byte("512 0 1024\n-1 2048 512\n0 3584 512\n"))
	n, err := run(sp, dp, pp)
	if err != nil || n != 3 {
		t.Fatalf("run: %d ranges, %v", n, err)
	}
	want := bytes.Clone(dst)
	copy(want[0:], src[512:1536])
	clear(want[2048:2560])
	copy(want[3584:], src[:512])
	got, _ := os.ReadFile(dp)
	if !bytes.Equal(got, want) {
		t.Fatal("the destination does not hold what the plan copies")
	}
	if _, err := run(sp, dp, write("bad", []byte("1 2\n"))); err == nil {
		t.Error("a short plan line was accepted")
	}
}
