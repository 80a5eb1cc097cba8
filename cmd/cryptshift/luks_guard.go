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

// refuseLUKS refuses to convert a LUKS volume as if it were a plain
// mapping. Its data area converts fine, but the keyslots still wrap the
// old volume key, so the next `cryptsetup open` with the user's passphrase
// maps the data with the wrong key. It runs before anything opens DEVICE
// for writing, so the device is left exactly as it was.
func refuseLUKS(dev string) error {
	sig := detectLUKS(dev)
	if sig == nil {
		return nil
	}
	return fmt.Errorf("%w: %s is a %s: cryptshift cannot convert LUKS volumes yet; converting its data area as a plain mapping would leave the keyslots wrapping the old volume key",
		errclass.Device, dev, sig)
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
	return fmt.Errorf("%s is a %s, not a cryptshift conversion (cryptshift does not convert LUKS volumes yet): %w", dev, sig, err)
}
