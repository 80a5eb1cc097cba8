package main

import (
	"fmt"
	"io"
	"os"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/luks"
)

// detectLUKS opens DEVICE read-only and reports the LUKS header it carries,
// if any. A device that cannot be opened or read yields nil: the command's
// own open then reports that with its usual message and exit code.
func detectLUKS(dev string) *luks.Signature {
	f, err := os.Open(dev)
	if err != nil {
		return nil
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil
	}
	sig, err := luks.Detect(f, size)
	if err != nil {
		return nil
	}
	return sig
}

// explainLUKS adds to an error about a missing or unusable cryptshift
// header that DEVICE is a LUKS volume, which is the likelier explanation
// than a lost header. Other errors, and devices without LUKS, pass through.
func explainLUKS(dev string, err error) error {
	if err == nil || errclass.Code(err) != errclass.ExitHeader {
		return err
	}
	sig := detectLUKS(dev)
	if sig == nil {
		return err
	}
	return fmt.Errorf("%s is a %s, not a cryptshift conversion (cryptshift converts LUKS volumes with --key-file): %w", dev, sig, err)
}
