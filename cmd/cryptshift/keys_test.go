package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
	"golang.org/x/sys/unix"
)

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Raw bytes, including a trailing newline, are the key unchanged.
	raw := append(bytes.Repeat([]byte{0xA5}, 63), '\n')
	got, err := readKeyFile(testKeyFiles(t), "new-key-file", write("k64", raw))
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("64-byte key: got %x, %v", got, err)
	}
	max := bytes.Repeat([]byte{1}, maxKeyFile)
	if got, err := readKeyFile(testKeyFiles(t), "k", write("max", max)); err != nil || len(got) != maxKeyFile {
		t.Fatalf("%d-byte key: got %d bytes, %v", maxKeyFile, len(got), err)
	}
	if got, err := readKeyFile(testKeyFiles(t), "k", ""); err != nil || got != nil {
		t.Fatalf("no key file: got %x, %v", got, err)
	}
	for name, path := range map[string]string{
		"stdin":     "-",
		"too large": write("big", make([]byte, maxKeyFile+1)),
		"empty":     write("empty", nil),
		"missing":   filepath.Join(dir, "nope"),
		"directory": dir,
	} {
		_, err := readKeyFile(testKeyFiles(t), "old-key-file", path)
		if !errors.Is(err, errclass.Usage) {
			t.Errorf("%s: got %v, want a usage error", name, err)
		}
	}
}

// TestReadKeyFileRefusesTerminal uses a fresh pseudo-terminal, so it needs
// no controlling terminal and runs the same under go test and CI.
func TestReadKeyFileRefusesTerminal(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer ptmx.Close()
	fd := int(ptmx.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	pts := fmt.Sprintf("/dev/pts/%d", n)
	if !isTerminal(fd) {
		t.Fatal("isTerminal(ptmx) = false")
	}
	if _, err := readKeyFile(testKeyFiles(t), "new-key-file", pts); !errors.Is(err, errclass.Usage) || !strings.Contains(err.Error(), "is a terminal") {
		t.Fatalf("key file %s: got %v, want a usage error", pts, err)
	}
}

// testKeyFiles is a key store for one test, wiped when it ends.
func testKeyFiles(t *testing.T) *keyFiles {
	ks := &keyFiles{warn: io.Discard}
	t.Cleanup(ks.wipe)
	return ks
}

func TestKeyFilePermissionWarning(t *testing.T) {
	dir := t.TempDir()
	for mode, want := range map[os.FileMode]string{0o600: "", 0o400: "", 0o640: "its group", 0o644: "every user", 0o604: "every user", 0o620: ""} {
		p := filepath.Join(dir, fmt.Sprintf("k%04o", mode))
		if err := os.WriteFile(p, []byte("0123456789abcdef"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		var warn bytes.Buffer
		ks := &keyFiles{warn: &warn}
		if _, err := readKeyFile(ks, "old-key-file", p); err != nil {
			t.Fatalf("mode %04o: %v", mode, err)
		}
		ks.wipe()
		got := warn.String()
		switch {
		case want == "" && got != "":
			t.Errorf("mode %04o: warned %q", mode, got)
		case want != "" && (!strings.Contains(got, want) || !strings.Contains(got, p) || strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "cryptshift: warning: ")):
			t.Errorf("mode %04o: warning %q, want one line naming %s and %q", mode, got, p, want)
		}
	}
}

// Keys read for a command are wiped when it ends: the bytes handed out
// are zero (the memory is unmapped, so they are copied first).
func TestKeyFilesWiped(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	key := bytes.Repeat([]byte{0x5a}, 64)
	if err := os.WriteFile(p, key, 0o600); err != nil {
		t.Fatal(err)
	}
	ks := &keyFiles{warn: io.Discard}
	got, err := readKeyFile(ks, "new-key-file", p)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("read: %x, %v", got, err)
	}
	k := ks.keys[0]
	b := k.Bytes()
	ks.wipe()
	if k.Bytes() != nil || len(ks.keys) != 0 {
		t.Fatal("key still held after wipe")
	}
	_ = b // unmapped now: reading it would fault, which is the point
}
