package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/internal/secret"
)

// maxKeyFile is the largest key file accepted. dm-crypt keys are at most 64
// bytes here; the limit is generous but stops a mistyped path to a disk
// image or a device from being slurped as a "key".
const maxKeyFile = 512

// keyFiles holds the keys one command read, in secret memory (outside the
// heap, locked, see package secret), and wipes them all when the command
// ends (run). The engine, the online holder and device-mapper tables copy
// keys further (cipher schedules, hex in table strings); those copies live
// on the heap, which the process locks in RAM and keeps out of core dumps
// (protectKeys), but Go cannot wipe them: docs/DESIGN.md, "Key hygiene".
type keyFiles struct {
	warn io.Writer // one-line warnings (loose permissions)
	mu   sync.Mutex
	keys []*secret.Key
}

const keyFilesMeta = "keyFiles"

// keyStore is the running app's keyFiles.
func keyStore(c *cli.Context) *keyFiles { return keysOf(c.App) }

// keysOf is the app's keyFiles (newApp puts one in its metadata).
func keysOf(app *cli.App) *keyFiles {
	if ks, ok := app.Metadata[keyFilesMeta].(*keyFiles); ok {
		return ks
	}
	panic("cryptshift: app without a key store")
}

// wipe zeroes every key read so far; a key's bytes are unusable after.
func (ks *keyFiles) wipe() {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	for _, k := range ks.keys {
		k.Wipe()
	}
	ks.keys = nil
}

func (ks *keyFiles) keep(k *secret.Key) {
	ks.mu.Lock()
	ks.keys = append(ks.keys, k)
	ks.mu.Unlock()
}

// readKeyFile reads a raw key file, the way `cryptsetup open --type plain
// --key-file` uses it: every byte is key, no hashing, no newline stripping.
// An empty path means no key (a plaintext side). Under systemd, a relative
// path names one of the unit's credentials (credentials.go). The key
// stays valid until ks.wipe.
func readKeyFile(ks *keyFiles, flag, path string) ([]byte, error) {
	return readKeyFileMax(ks, flag, path, maxKeyFile)
}

// readKeyFileMax is readKeyFile for files of at most max bytes (a LUKS
// passphrase file may be longer than a raw key).
func readKeyFileMax(ks *keyFiles, flag, path string, maxLen int) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	if path == "-" {
		// A key typed or piped on stdin cannot be given again on resume or
		// recovery, which every interrupted conversion needs.
		return nil, usageErr("--%s: reading the key from standard input is not supported; give a file", flag)
	}
	path, err := keyFilePath(flag, path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, usageErr("--%s: %v", flag, err)
	}
	defer f.Close()
	if isTerminal(int(f.Fd())) {
		return nil, usageErr("--%s %s is a terminal, not a key file", flag, path)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, usageErr("--%s: %v", flag, err)
	}
	if st.IsDir() {
		return nil, usageErr("--%s %s is a directory, not a key file", flag, path)
	}
	if os.Getenv(onlineWorkerEnv) == "" {
		// The guard in front of an online worker already said so.
		warnLooseKeyFile(ks.warn, path, st)
	}
	key, err := readSecret(f, maxLen)
	if err != nil {
		return nil, usageErr("--%s: read %s: %v", flag, path, err)
	}
	switch {
	case key == nil:
		return nil, usageErr("--%s %s is larger than %d bytes: not a key file", flag, path, maxLen)
	case len(key.Bytes()) == 0:
		return nil, usageErr("--%s %s is empty", flag, path)
	}
	ks.keep(key)
	return key.Bytes(), nil
}

// readSecret reads all of r, at most max bytes, into secret memory of
// exactly the key's length; nil when r holds more. Every buffer the bytes
// passed through is wiped.
func readSecret(r io.Reader, max int) (*secret.Key, error) {
	buf, err := secret.New(max + 1)
	if err != nil {
		return nil, fmt.Errorf("secret memory: %w", err)
	}
	defer buf.Wipe()
	b := buf.Bytes()
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if n > max {
		return nil, nil
	}
	k, err := secret.New(n)
	if err != nil {
		return nil, fmt.Errorf("secret memory: %w", err)
	}
	copy(k.Bytes(), b[:n])
	return k, nil
}

// warnLooseKeyFile says so, once, when a regular key file can be read by
// its group or by anyone: whoever can read it can decrypt the device. Not
// refused: the administrator may have reasons (a group of operators), and
// a refusal mid-conversion would stop a resume. Device nodes are left to
// their udev policy (group disk can read every disk anyway).
func warnLooseKeyFile(w io.Writer, path string, st os.FileInfo) {
	if w == nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o044 == 0 {
		return
	}
	who := "its group"
	if st.Mode().Perm()&0o004 != 0 {
		who = "every user"
	}
	fmt.Fprintf(w, "cryptshift: warning: key file %s can be read by %s (mode %04o); anyone who reads it can decrypt the device: chmod 600 it\n", path, who, st.Mode().Perm())
}

// isTerminal reports whether fd is a terminal (a tty answers TCGETS).
func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}
