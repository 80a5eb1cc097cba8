package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Keys must never appear in argv, the environment, logs, JSON output,
// metrics or error messages. Every key the CLI tests make (testKey, and
// key files written through runner.file) is registered here, and every run
// of the binary (runner.run) is checked: its arguments and environment,
// what it printed, and every small file it may have written next to the
// images (metrics, JSON, tab files). Key files themselves, and images,
// which hold ciphertext, are not searched.

var testKeys struct {
	sync.Mutex
	keys [][]byte
}

func registerKey(k []byte) {
	if len(k) < 16 {
		return // too short to search for without false alarms
	}
	testKeys.Lock()
	defer testKeys.Unlock()
	for _, o := range testKeys.keys {
		if bytes.Equal(o, k) {
			return
		}
	}
	testKeys.keys = append(testKeys.keys, bytes.Clone(k))
}

// keyForms are the byte strings whose presence means a key leaked: the key
// raw and in hex (both cases), whole and each aligned 16-byte piece (an
// XTS key is two keys, and a table or a log could print one).
func keyForms() [][]byte {
	testKeys.Lock()
	defer testKeys.Unlock()
	var forms [][]byte
	for _, k := range testKeys.keys {
		pieces := [][]byte{k}
		for i := 0; i+16 <= len(k); i += 16 {
			pieces = append(pieces, k[i:i+16])
		}
		for _, p := range pieces {
			h := hex.EncodeToString(p)
			forms = append(forms, p, []byte(h), []byte(strings.ToUpper(h)))
		}
	}
	return forms
}

// leakScanLimit: larger files are images (ciphertext and headers with key
// check values, never keys) and the binary.
const leakScanLimit = 1 << 20

// checkNoKeyLeak fails the test if any registered key appears in what one
// run of the binary was given or produced.
func (c *runner) checkNoKeyLeak(args, env []string, stdout, stderr string) {
	c.t.Helper()
	for _, l := range keyLeaks(c.dir, args, env, stdout, stderr) {
		c.t.Errorf("cryptshift %s: %s", strings.Join(args, " "), l)
	}
}

// keyLeaks lists where a registered key appears: in args, env, the output,
// or a small file under dir.
func keyLeaks(dir string, args, env []string, stdout, stderr string) []string {
	forms := keyForms()
	where := map[string][]byte{
		"argv":   []byte(strings.Join(args, "\x00")),
		"env":    []byte(strings.Join(env, "\x00")),
		"stdout": []byte(stdout),
		"stderr": []byte(stderr),
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(d.Name(), "key") {
			return nil
		}
		if inf, err := d.Info(); err != nil || !inf.Mode().IsRegular() || inf.Size() > leakScanLimit {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && !isKeyFile(b) {
			where["file "+p] = b
		}
		return nil
	})
	var leaks []string
	for name, b := range where {
		for _, f := range forms {
			if bytes.Contains(b, f) {
				leaks = append(leaks, fmt.Sprintf("a test key (%d bytes, %s) appears in %s", len(f), formName(f), name))
				break
			}
		}
	}
	return leaks
}

func formName(f []byte) string {
	if _, err := hex.DecodeString(string(f)); err == nil {
		return "hex"
	}
	return "raw"
}

// TestLeakCheckCatches makes sure the check above can fail: a key in any
// form, in any of the places searched, is caught; clean output is not.
func TestLeakCheckCatches(t *testing.T) {
	k := testKey(0x77)
	dir := t.TempDir()
	for _, out := range []string{string(k), hex.EncodeToString(k), strings.ToUpper(hex.EncodeToString(k[16:32])), "x" + string(k[48:]) + "y"} {
		if len(keyLeaks(dir, nil, nil, "", out)) != 1 {
			t.Errorf("a key in stderr (%x...) was not caught", out[:8])
		}
		if len(keyLeaks(dir, []string{"--x", out}, []string{"A=" + out}, out, "")) != 3 {
			t.Errorf("a key in argv, env and stdout (%x...) was not caught in all three", out[:8])
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "metrics.prom"), []byte("k "+hex.EncodeToString(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if len(keyLeaks(dir, nil, nil, "", "")) != 1 {
		t.Error("a key in a metrics file was not caught")
	}
	if l := keyLeaks(t.TempDir(), []string{"convert", "--old-key-file", "/x/old.key"}, []string{"HOME=/root"}, "done\n", "cryptshift: wrong key\n"); len(l) != 0 {
		t.Errorf("clean output reported: %v", l)
	}
}

// isKeyFile reports whether b is a key file the tests wrote: exactly one
// registered key, or a piece of one (a shorter key cut from a test key),
// whatever the file is called. A leak into a metrics, JSON or tab file is
// a key among other bytes.
func isKeyFile(b []byte) bool {
	testKeys.Lock()
	defer testKeys.Unlock()
	for _, k := range testKeys.keys {
		if len(b) >= 16 && bytes.Contains(k, b) {
			return true
		}
	}
	return false
}
