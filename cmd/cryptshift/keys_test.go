package main

import (
	"bytes"
	"errors"
	"fmt"
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
	got, err := readKeyFile("new-key-file", write("k64", raw))
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("64-byte key: got %x, %v", got, err)
	}
	max := bytes.Repeat([]byte{1}, maxKeyFile)
	if got, err := readKeyFile("k", write("max", max)); err != nil || len(got) != maxKeyFile {
		t.Fatalf("%d-byte key: got %d bytes, %v", maxKeyFile, len(got), err)
	}
	if got, err := readKeyFile("k", ""); err != nil || got != nil {
		t.Fatalf("no key file: got %x, %v", got, err)
	}
	for name, path := range map[string]string{
		"stdin":     "-",
		"too large": write("big", make([]byte, maxKeyFile+1)),
		"empty":     write("empty", nil),
		"missing":   filepath.Join(dir, "nope"),
		"directory": dir,
	} {
		_, err := readKeyFile("old-key-file", path)
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
	if _, err := readKeyFile("new-key-file", pts); !errors.Is(err, errclass.Usage) || !strings.Contains(err.Error(), "is a terminal") {
		t.Fatalf("key file %s: got %v, want a usage error", pts, err)
	}
}
