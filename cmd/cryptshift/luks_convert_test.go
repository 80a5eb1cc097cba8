package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/testkit"
)

// TestLUKS2ConvertCLI drives a LUKS2 conversion through the binary: the
// refusals leave the image as it was, each with its exit code; a run
// interrupted half-way is paused, `status` (no keys) shows the LUKS2 side,
// `verify --data` and `recover` work with a passphrase, a KILL mid-window
// is recovered, and the rerun completes to a volume every passphrase opens
// to the original data under a new key.
func TestLUKS2ConvertCLI(t *testing.T) {
	c := buildCLI(t)
	im, err := testkit.MakeLUKS2(t.TempDir(), 4<<20, 1<<20, []string{"--key-size", "256"}, [][]string{testkit.CheapPBKDF2, testkit.CheapPBKDF2}, 11)
	if err != nil {
		t.Fatal(err)
	}
	wrong := c.file("wrong.pass", []byte("not a passphrase"))
	before := hashFile(t, im.Path)
	uuid := luksUUID(t, im.Path)
	for _, tc := range []struct {
		code int
		args []string
		want string
	}{
		{2, []string{"--key-file", im.Passes[0]}, "keyslot(s) 1 of the LUKS2 volume are active"},
		{3, []string{"--key-file", im.Passes[0], "--key-file", wrong}, "opens no keyslot"},
		{2, []string{"--key-file", im.Passes[0], "--data-offset", "0"}, "--data-offset does not apply"},
		{2, []string{"--key-file", im.Passes[0], "--key-file", im.Passes[1], "--resilience", "shift"}, "shift"},
		{2, []string{}, "--key-file PASSFILE"},
		{4, []string{"--key-file", im.Passes[0], "--online", "cryptshift-test-nonexistent"}, "--online cryptshift-test-nonexistent"},
		{2, []string{"--key-file", im.Passes[0], "--online", "x", "--metadata", "m"}, "--metadata with --online"},
	} {
		r := c.must(tc.code, nil, append(append([]string{"convert"}, tc.args...), im.Path)...)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("convert %v: stderr %q lacks %q", tc.args, r.stderr, tc.want)
		}
		if hashFile(t, im.Path) != before {
			t.Fatalf("convert %v changed the image", tc.args)
		}
	}
	both := []string{"--key-file", im.Passes[0], "--key-file", im.Passes[1]}
	conv := append(append([]string{"convert", "--window", "64K", "--new-sector-size", "4096", "--progress", "plain"}, both...), im.Path)
	r := c.must(8, []string{hookInterruptAfter + "=3"}, conv...)
	if !strings.Contains(r.stdout, "as keyslot(s) 2, 3") {
		t.Errorf("convert did not say what happens to the keyslots:\n%s", r.stdout)
	}
	r = c.must(0, nil, "status", im.Path)
	for _, want := range []string{"LUKS2, UUID " + uuid, "kept 2, 3; erased at the end 0, 1", "in progress", "paused: 3 of 16 windows"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}
	r = c.must(0, nil, "status", "--json", im.Path)
	var js luksStatusReport
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil || js.UUID != uuid || js.State != "converting" || js.Conversion == nil || js.Conversion.WindowsDone != 3 {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	c.must(0, nil, "verify", "--data", "--key-file", im.Passes[1], im.Path)
	r = c.must(0, nil, "recover", "--key-file", im.Passes[1], im.Path)
	if !strings.Contains(r.stdout, "paused") {
		t.Errorf("recover: %s", r.stdout)
	}
	// A KILL after window 6: recover needs only one passphrase.
	c.must(-1, []string{hookKillAfter + "=6"}, conv...)
	c.must(0, nil, "recover", "--key-file", im.Passes[0], im.Path)
	r = c.must(0, nil, conv...)
	if !strings.Contains(r.stdout, "Conversion complete") || !strings.Contains(r.stdout, uuid) {
		t.Errorf("convert: %s", r.stdout)
	}
	r = c.must(0, nil, "status", im.Path)
	if !strings.Contains(r.stdout, "none recorded") || !strings.Contains(r.stdout, "kept 2, 3") {
		t.Errorf("final status:\n%s", r.stdout)
	}
	b, err := os.ReadFile(im.Path)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range im.Passes {
		pass, _ := os.ReadFile(p)
		plain, vk, err := testkit.LUKSData(b, pass)
		if err != nil || bytes.Equal(vk, im.VK) || !bytes.Equal(plain, im.Plain) {
			t.Fatalf("passphrase %d after the conversion: %v", i, err)
		}
	}
	if out, err := testkit.Cryptsetup("luksDump", im.Path); err != nil || strings.Contains(out, "cryptshift") || !strings.Contains(out, "4096 [bytes]") {
		t.Fatalf("luksDump: %v\n%s", err, out)
	}
}
