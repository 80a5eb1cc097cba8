// Package ansible tests the Ansible role in dist/ansible/roles/cryptshift
// with ansible-playbook (ansible-core, which tests/vm/install-deps.sh
// installs) against this machine (two inventory hosts, both with the local
// connection, as -i localhost, -c local would be) and image files:
// an offline conversion of an image file needs no device-mapper, which the
// machine's kernel lacks. The machine runs no systemd, so the role's async
// runner is what runs here; tests/vm (TestDracutSystemd) runs the
// systemd-run command the systemd runner issues under a real systemd.
package ansible

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/internal/testkit"
)

const (
	dataSize = 8 << 20
	metaSize = 32 << 20 // convert's default metadata area, at the end of the image
)

// TestRole runs the shipped play (dist/ansible/rotate.yml) on two hosts:
// ab has a plaintext image to encrypt and an encrypted image whose key is
// rotated, c an encrypted image given with a wrong old key.
//
//   - One wave of both, with ab interrupted (the testhooks build pauses
//     itself after window 3): each host fails with cryptshift's exit code
//     and line (8 and the pause, 3 and the wrong-key error); a.img is left
//     paused, b.img (after the failed device) and c.img untouched.
//   - ab in check mode: the play reports both devices as would-change and
//     changes no byte.
//   - ab again: a.img resumes, b.img converts, both changed.
//   - ab again: nothing changes.
//
// The host then decrypts each image with its new key, independently of
// cryptshift, and compares it with the plaintext it wrote.
func TestRole(t *testing.T) {
	playbook, err := exec.LookPath("ansible-playbook")
	if err != nil {
		t.Fatalf("ansible-playbook not found (tests/vm/install-deps.sh installs ansible-core): %v", err)
	}
	root := moduleRoot(t)
	dir := t.TempDir()
	bin := build(t, root, filepath.Join(dir, "cryptshift"))
	hooked := build(t, root, filepath.Join(dir, "cryptshift-testhooks"), "testhooks")

	oldKey, newKey, rotKey := testkit.Key(64, 31), testkit.Key(64, 32), testkit.Key(64, 33)
	keyFile := func(name string, k []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, k, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	oldKeyFile, newKeyFile, rotKeyFile := keyFile("old.key", oldKey), keyFile("new.key", newKey), keyFile("rot.key", rotKey)
	wrongKeyFile := keyFile("wrong.key", testkit.Key(64, 34))

	plainA := testkit.Plaintext(dataSize, 31)
	plainB := testkit.Plaintext(dataSize, 32)
	encB := append([]byte(nil), plainB...)
	testkit.Cipher(t, testkit.Mapping(t, "aes-xts-plain64", oldKey, 512)).Encrypt(encB, 0)
	imgA := image(t, dir, "a.img", plainA)
	imgB := image(t, dir, "b.img", encB)
	imgC := image(t, dir, "c.img", encB)

	// Two hosts, both this machine: ab converts a.img then b.img; c is
	// given a wrong old key.
	inventory := map[string]any{"all": map[string]any{"hosts": map[string]any{
		"ab": map[string]any{"ansible_connection": "local", "cryptshift_devices": []map[string]any{
			{"name": "a", "device": imgA, "old_cipher": "none", "new_key_file": newKeyFile, "window": "1M"},
			{"name": "b", "device": imgB, "old_key_file": oldKeyFile, "new_key_file": rotKeyFile, "window": "1M"},
		}},
		"c": map[string]any{"ansible_connection": "local", "cryptshift_devices": []map[string]any{
			{"name": "c", "device": imgC, "old_key_file": wrongKeyFile, "new_key_file": rotKeyFile},
		}},
	}}}
	invFile := filepath.Join(dir, "inventory.json")
	writeJSON(t, invFile, inventory)
	cfg := filepath.Join(dir, "ansible.cfg")
	if err := os.WriteFile(cfg, []byte("[defaults]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "ansible-home")
	play := func(name string, vars map[string]any, extra ...string) (int, result) {
		t.Helper()
		all := map[string]any{
			"cryptshift_hosts":         "all",
			"cryptshift_binary":        bin,
			"cryptshift_poll_interval": 1,
			"cryptshift_timeout":       600,
			// Root already; this machine need not have sudo.
			"ansible_become":             false,
			"ansible_python_interpreter": "/usr/bin/python3",
		}
		for k, v := range vars {
			all[k] = v
		}
		varsFile := filepath.Join(dir, name+".vars.json")
		writeJSON(t, varsFile, all)
		args := append([]string{"-i", invFile, "-e", "@" + varsFile, filepath.Join(root, "dist/ansible/rotate.yml")}, extra...)
		cmd := exec.Command(playbook, args...)
		cmd.Env = append(os.Environ(),
			"ANSIBLE_STDOUT_CALLBACK=default", "ANSIBLE_CALLBACK_RESULT_FORMAT=json", "ANSIBLE_CALLBACK_FORMAT_PRETTY=0",
			"ANSIBLE_NOCOLOR=1", "ANSIBLE_RETRY_FILES_ENABLED=0", "ANSIBLE_PIPELINING=1",
			"ANSIBLE_HOME="+home, "ANSIBLE_LOCAL_TEMP="+filepath.Join(home, "tmp"),
			"ANSIBLE_REMOTE_TEMP="+filepath.Join(home, "remote-tmp"), "ANSIBLE_ASYNC_DIR="+filepath.Join(home, "async"),
			// No ansible.cfg of this machine's or user's: only what is set here.
			"ANSIBLE_CONFIG="+cfg)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		r, err := parseOutput(stdout.String())
		if err != nil {
			t.Fatalf("%s: ansible-playbook's output: %v\nstdout:\n%s\nstderr:\n%s", name, err, stdout.String(), stderr.String())
		}
		t.Logf("%s: exit %d in %v, %+v", name, code, time.Since(start).Round(time.Millisecond), r.Stats)
		return code, r
	}

	// One wave of both hosts: ab is interrupted (its first device pauses
	// after window 3 of 8), c has the wrong key. Both hosts fail, each with
	// cryptshift's exit code and line.
	code, r := play("interrupted", map[string]any{
		"cryptshift_binary": hooked,
		"cryptshift_serial": 2,
		// Otherwise the first failure stops the other host of the wave.
		"cryptshift_max_fail_percentage": 100,
		"cryptshift_environment":         map[string]string{"CRYPTSHIFT_TEST_INTERRUPT_AFTER": "3"},
	})
	if code == 0 || r.Stats["ab"].Failures != 1 || r.Stats["c"].Failures != 1 {
		t.Fatalf("interrupted run: exit %d, stats %+v; want both hosts failed", code, r.Stats)
	}
	if msg := r.failures["ab"]; !strings.Contains(msg, "cryptshift exited 8: Paused at 3 of 8 windows") {
		t.Errorf("interrupted run: ab's failure says %q; want cryptshift's exit code 8 and its pause line", msg)
	}
	if msg := r.failures["c"]; !strings.Contains(msg, "cryptshift exited 3: cryptshift: ") {
		t.Errorf("wrong key: c's failure says %q; want exit code 3 and cryptshift's one-line error", msg)
	}
	if st := status(t, bin, imgA); st.State != "paused" || st.WindowsDone != 3 || st.WindowsTotal != 8 {
		t.Errorf("after the interrupted run a.img is %s at %d of %d windows; want paused at 3 of 8", st.State, st.WindowsDone, st.WindowsTotal)
	}
	if !bytes.Equal(readImage(t, imgB), encB) {
		t.Error("the interrupted run changed b.img, which comes after the failed device")
	}
	if !bytes.Equal(readImage(t, imgC), encB) {
		t.Error("the wrong-key run changed c.img's data")
	}

	// Check mode: says what it would do, writes nothing.
	beforeA, beforeB := readFile(t, imgA), readFile(t, imgB)
	code, r = play("check", nil, "--check", "--limit", "ab")
	if code != 0 || r.Stats["ab"].Changed != 2 {
		t.Errorf("check mode: exit %d, stats %+v; want success with both devices reported as would-change", code, r.Stats["ab"])
	}
	if !bytes.Equal(readFile(t, imgA), beforeA) || !bytes.Equal(readFile(t, imgB), beforeB) {
		t.Error("check mode changed an image")
	}

	// Resume and convert.
	code, r = play("resume", nil, "--limit", "ab")
	if code != 0 || r.Stats["ab"].Changed != 2 || r.Stats["ab"].Failures != 0 {
		t.Fatalf("resuming run: exit %d, stats %+v; want success, both devices changed\n%s", code, r.Stats["ab"], r.failures["ab"])
	}
	for _, img := range []string{imgA, imgB} {
		if st := status(t, bin, img); st.State != "complete" {
			t.Errorf("%s is %s after the resuming run", filepath.Base(img), st.State)
		}
	}

	// Idempotent.
	code, r = play("again", nil, "--limit", "ab")
	if code != 0 || r.Stats["ab"].Changed != 0 || r.Stats["ab"].Failures != 0 {
		t.Errorf("a run on finished conversions: exit %d, stats %+v; want ok, nothing changed", code, r.Stats["ab"])
	}

	// Independently of cryptshift: each image decrypts with its new key.
	gotA := readImage(t, imgA)
	testkit.Cipher(t, testkit.Mapping(t, "aes-xts-plain64", newKey, 512)).Decrypt(gotA, 0)
	if !bytes.Equal(gotA, plainA) {
		t.Error("a.img does not decrypt with the new key to the plaintext written")
	}
	gotB := readImage(t, imgB)
	testkit.Cipher(t, testkit.Mapping(t, "aes-xts-plain64", rotKey, 512)).Decrypt(gotB, 0)
	if !bytes.Equal(gotB, plainB) {
		t.Error("b.img does not decrypt with the rotated key to the plaintext written")
	}
}

// result is what a run printed: the recap's counts per host and each
// host's first failure.
type result struct {
	Stats    map[string]recap
	failures map[string]string // host: the first failed task's name and message
}

type recap struct{ OK, Changed, Failures int }

var (
	recapLine = regexp.MustCompile(`(?m)^(\S+)\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)`)
	taskLine  = regexp.MustCompile(`^TASK \[(.*)\]`)
	fatalLine = regexp.MustCompile(`^fatal: \[([^\]]+)\]: FAILED! => (.*)$`)
)

// parseOutput reads the default callback's text: "fatal: [host]: FAILED!
// => {json}" lines under "TASK [name]" headers, and the PLAY RECAP.
func parseOutput(out string) (result, error) {
	r := result{Stats: map[string]recap{}, failures: map[string]string{}}
	task := ""
	for _, l := range strings.Split(out, "\n") {
		if m := taskLine.FindStringSubmatch(l); m != nil {
			task = m[1]
		}
		m := fatalLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		host, js := m[1], m[2]
		if _, seen := r.failures[host]; seen {
			continue
		}
		var v struct {
			Msg string `json:"msg"`
		}
		if err := json.Unmarshal([]byte(js), &v); err != nil {
			return r, fmt.Errorf("a failed task's result: %w: %s", err, js)
		}
		r.failures[host] = task + ": " + v.Msg
	}
	for _, m := range recapLine.FindAllStringSubmatch(out, -1) {
		n := func(s string) int { i, _ := strconv.Atoi(s); return i }
		r.Stats[m[1]] = recap{OK: n(m[2]), Changed: n(m[3]), Failures: n(m[4])}
	}
	if _, ok := r.Stats["ab"]; !ok {
		return r, errors.New("no PLAY RECAP line for localhost")
	}
	return r, nil
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

type statusJSON struct {
	State        string `json:"state"`
	WindowsDone  uint64 `json:"windows_done"`
	WindowsTotal uint64 `json:"windows_total"`
}

func status(t *testing.T, bin, img string) statusJSON {
	t.Helper()
	out, err := exec.Command(bin, "status", "--json", img).Output()
	if err != nil {
		t.Fatalf("cryptshift status %s: %v", img, err)
	}
	var st statusJSON
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func image(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, dataSize+metaSize); err != nil {
		t.Fatal(err)
	}
	return p
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readImage is an image's data area, without the metadata behind it.
func readImage(t *testing.T, p string) []byte {
	return readFile(t, p)[:dataSize]
}

func build(t *testing.T, root, out string, tags ...string) string {
	t.Helper()
	args := []string{"build", "-trimpath", "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.Command("go", append(args, "./cmd/cryptshift")...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out))
}
