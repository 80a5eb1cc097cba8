package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEndToEndMistakes: an ordinary slip in the flags gets the exit code of
// its class and one line that names the mistake, and changes nothing.
func TestEndToEndMistakes(t *testing.T) {
	c := buildCLI(t)
	oldKey, newKey := c.file("old.key", testKey(1)), c.file("new.key", testKey(2))
	img, _ := c.makeImage("disk.img", e2eImage, e2eData, testKey(1))
	layout := []string{"--metadata-size", "2M", "--window", "1M"}
	convert := func(extra ...string) []string {
		args := append([]string{"convert", "--old-key-file", oldKey, "--new-key-file", newKey}, layout...)
		return append(args, extra...)
	}
	// A paused conversion on its own image, for verify and recover.
	paused, _ := c.makeImage("paused.img", e2eImage, e2eData, testKey(1))
	c.must(exitPaused, []string{hookInterruptAfter + "=2"}, convert("--progress", "none", paused)...)

	small := func(name string, size int) string { return c.file(name, make([]byte, size)) }
	cases := []struct {
		name string
		args []string
		code int
		want string // in the one error line
	}{
		{"empty device", convert(small("d0", 0)), exitDevice, "is empty (0 bytes)"},
		{"512-byte device", convert(small("d512", 512)), exitDevice, "too small to hold a cryptshift metadata area"},
		{"4096-byte device", convert(small("d4096", 4096)), exitDevice, "too small to hold a cryptshift metadata area"},
		{"64-byte metadata file", convert("--metadata", small("m64", 64), img), exitDevice, "--metadata " + filepath.Join(c.dir, "m64") + " is 64 bytes: too small"},
		{"status of a 512-byte device", []string{"status", small("s512", 512)}, exitDevice, "too small"},
		{"metadata is the device", convert("--metadata", img, img), exitUsage, "is DEVICE itself"},
		{"data offset beyond the end", convert("--data-offset", "40M", img), exitUsage, "--data-offset 41943040 is at or beyond the end of"},
		{"key for a plaintext old side", convert("--old-cipher", "none", img), exitUsage, "--old-cipher none says the old side is plaintext"},
		{"key for a plaintext new side", append([]string{"convert", "--new-cipher", "none", "--old-key-file", oldKey, "--new-key-file", newKey}, img), exitUsage, "--new-cipher none says the new side is plaintext"},
		{"verify without keys", []string{"verify", paused}, exitUsage, "verify needs --old-key-file"},
		{"verify without the new key", []string{"verify", "--old-key-file", oldKey, paused}, exitUsage, "verify needs --new-key-file"},
		{"recover without keys", []string{"recover", paused}, exitUsage, "recover needs --old-key-file"},
		{"resilience bogus", convert("--resilience", "bogus", img), exitUsage, "bogus"},
		{"progress bogus", convert("--progress", "bogus", img), exitUsage, "--progress \"bogus\""},
		{"crypto bogus", convert("--crypto", "bogus", img), exitUsage, "--crypto \"bogus\""},
		{"negative progress interval", convert("--progress-interval", "-1s", img), exitUsage, "--progress-interval -1s: must not be negative"},
		{"demo negative progress interval", []string{"demo", "--progress-interval", "-1s"}, exitUsage, "--progress-interval -1s"},
		{"demo progress bogus", []string{"demo", "--progress", "bogus"}, exitUsage, "--progress \"bogus\""},
		{"sector size not a number", convert("--old-sector-size", "bogus", img), exitUsage, "old-sector-size"},
		{"window bogus", convert("--window", "bogus", img), exitUsage, "--window"},
		{"status --json=bogus", []string{"status", "--json=bogus", paused}, exitUsage, "bogus"},
		{"verify --data=bogus", []string{"verify", "--data=bogus", paused}, exitUsage, "bogus"},
		{"recover --wait bogus", []string{"recover", "--wait", "bogus", paused}, exitUsage, "bogus"},
	}
	before, pausedHash := hashFile(t, img), hashFile(t, paused)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			r := c.must(tc.code, nil, tc.args...)
			if !strings.HasPrefix(r.stderr, "cryptshift: ") || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("want one \"cryptshift: \" line containing %q, got %q", tc.want, r.stderr)
			}
		})
	}
	c.t = t
	if hashFile(t, img) != before || hashFile(t, paused) != pausedHash {
		t.Fatal("a refused command changed an image")
	}
	for _, leftover := range []string{"m64"} {
		if st, err := os.Stat(filepath.Join(c.dir, leftover)); err != nil || st.Size() != 64 {
			t.Errorf("%s: the user's file was changed or removed (%v)", leftover, err)
		}
	}
}

// TestDemoInterrupted: the pause message of an interrupted demo says what
// is true (its files are gone), not "run the same command again".
func TestDemoInterrupted(t *testing.T) {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The first progress line stands for Ctrl-C: the pause comes in the
	// middle of the conversion, wherever the engine is.
	progress := writerFunc(func(b []byte) (int, error) {
		if bytes.HasPrefix(b, []byte("Progress:")) {
			cancel()
		}
		return errb.Write(b)
	})
	dir := t.TempDir()
	err := runDemo(ctx, &out, progress, dir, 8<<20, newMeter(progress, progressPlain, "", 0))
	if code := exitCode(err); code != exitPaused {
		t.Fatalf("exit %d (%v), want %d\n%s", code, err, exitPaused, errb.String())
	}
	if !strings.Contains(errb.String(), "the demo image and its keys are removed, so there is nothing to resume: run `cryptshift demo` again") ||
		strings.Contains(errb.String(), "run the same command again") {
		t.Errorf("pause message of the demo:\n%s", errb.String())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("the demo left %d entries in its directory", len(ents))
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
