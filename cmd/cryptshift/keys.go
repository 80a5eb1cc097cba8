package main

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// maxKeyFile is the largest key file accepted. dm-crypt keys are at most 64
// bytes here; the limit is generous but stops a mistyped path to a disk
// image or a device from being slurped as a "key".
const maxKeyFile = 512

// readKeyFile reads a raw key file, the way `cryptsetup open --type plain
// --key-file` uses it: every byte is key, no hashing, no newline stripping.
// An empty path means no key (a plaintext side). Under systemd, a relative
// path names one of the unit's credentials (credentials.go).
func readKeyFile(flag, path string) ([]byte, error) {
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
	key, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, usageErr("--%s: read %s: %v", flag, path, err)
	}
	if len(key) > maxKeyFile {
		return nil, usageErr("--%s %s is larger than %d bytes: not a raw key file", flag, path, maxKeyFile)
	}
	if len(key) == 0 {
		return nil, usageErr("--%s %s is empty", flag, path)
	}
	return key, nil
}

// isTerminal reports whether fd is a terminal (a tty answers TCGETS).
func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}
