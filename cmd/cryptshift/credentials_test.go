package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
)

func TestKeyFileFromCredentials(t *testing.T) {
	creds := t.TempDir()
	key := bytes.Repeat([]byte{7}, 64)
	if err := os.WriteFile(filepath.Join(creds, "new.key"), key, 0o400); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "abs.key")
	if err := os.WriteFile(other, []byte{1, 2, 3}, 0o600); err != nil {
		t.Fatal(err)
	}

	t.Setenv(credentialsEnv, creds)
	if got, err := readKeyFile(testKeyFiles(t), "new-key-file", "new.key"); err != nil || !bytes.Equal(got, key) {
		t.Errorf("credential new.key: %x, %v", got, err)
	}
	// An absolute path stays what it says.
	if got, err := readKeyFile(testKeyFiles(t), "old-key-file", other); err != nil || !bytes.Equal(got, []byte{1, 2, 3}) {
		t.Errorf("absolute path under credentials: %x, %v", got, err)
	}
	for _, bad := range []string{"../new.key", "a/../../x"} {
		if _, err := readKeyFile(testKeyFiles(t), "new-key-file", bad); !errors.Is(err, errclass.Usage) {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
	if _, err := readKeyFile(testKeyFiles(t), "new-key-file", "missing.key"); !errors.Is(err, errclass.Usage) {
		t.Errorf("missing credential: %v, want a usage error", err)
	}

	// Without credentials a relative path is relative to the working
	// directory, as always.
	t.Setenv(credentialsEnv, "")
	t.Chdir(creds)
	if got, err := readKeyFile(testKeyFiles(t), "new-key-file", "new.key"); err != nil || !bytes.Equal(got, key) {
		t.Errorf("relative path without credentials: %x, %v", got, err)
	}
}

// The documented transient-unit recipe (README, docs/ONLINE.md) as the
// process sees it under systemd: keys by credential name, progress as
// plain lines.
func TestConvertWithCredentials(t *testing.T) {
	dir := t.TempDir()
	c := &runner{t: t, dir: dir}
	creds := filepath.Join(dir, "creds")
	if err := os.Mkdir(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, seed := range map[string]byte{"old.key": 1, "new.key": 2} {
		if err := os.WriteFile(filepath.Join(creds, name), testKey(seed), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	img, plain := c.makeImage("data.img", 6<<20, 4<<20, testKey(1))
	t.Setenv(credentialsEnv, creds)
	var out, errOut bytes.Buffer
	code := run([]string{"cryptshift", "convert", "--old-key-file", "old.key", "--new-key-file", "new.key",
		"--data-size", "4M", "--metadata-size", "2M", "--window", "1M", "--progress", "plain", img}, &out, &errOut)
	if code != 0 {
		t.Fatalf("convert: exit %d\n%s", code, errOut.String())
	}
	for _, l := range keyLeaks(dir, os.Environ(), nil, out.String(), errOut.String()) {
		t.Error(l)
	}
	if !bytes.Equal(decrypted(t, img, 4<<20, testKey(2)), plain) {
		t.Error("the data does not decrypt under the credential new.key")
	}
}
