package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
)

// The checks here run in the CLI before the engine is called, so that a
// mistake in the flags is reported in the flags' own terms (and with the
// right exit code) instead of as whatever the engine trips over later.

// progressInterval is --progress-interval, refused when negative: a
// negative time between lines means nothing, and silently treating it as
// 0 (every window) would flood a log.
func progressInterval(c *cli.Context) (time.Duration, error) {
	d := c.Duration("progress-interval")
	if d < 0 {
		return 0, usageErr("--progress-interval %v: must not be negative (0 prints a line after every window)", d)
	}
	return d, nil
}

// checkSizes refuses a device or metadata file too small to hold a
// conversion's header as a device problem (exit 4): it is the device the
// user named that is wrong, not an I/O failure.
func checkSizes(dev, metaPath string, t engine.Target) error {
	if t.Data.Size() == 0 {
		return fmt.Errorf("%w: %s is empty (0 bytes): nothing to convert", errclass.Device, dev)
	}
	if t.Meta.Size() < 2*header.Size {
		if t.MetaOnData {
			return fmt.Errorf("%w: %s is %d bytes: too small to hold a cryptshift metadata area", errclass.Device, dev, t.Data.Size())
		}
		return fmt.Errorf("%w: --metadata %s is %d bytes: too small to hold a cryptshift header (a metadata file needs at least 1 MiB)", errclass.Device, metaPath, t.Meta.Size())
	}
	return nil
}

// checkDataOffset refuses a --data-offset at or beyond the end of DEVICE
// before the engine turns it into a negative data size.
func checkDataOffset(dev string, cfg engine.Config, t engine.Target) error {
	if cfg.DataOffset == nil {
		return nil
	}
	if size := t.Data.Size(); *cfg.DataOffset >= size {
		return usageErr("--data-offset %d is at or beyond the end of %s (%d bytes)", *cfg.DataOffset, dev, size)
	}
	return nil
}

// checkPlaintextKey refuses a key file for a side declared plaintext:
// --old-cipher none with --old-key-file is a mix-up of sides or of
// commands, and the cipher's own complaint ("allowed sizes in bits: 0")
// does not say so.
func checkPlaintextKey(c *cli.Context) error {
	for _, s := range []string{"old", "new"} {
		if c.String(s+"-cipher") == "none" && c.String(s+"-key-file") != "" {
			return usageErr("--%s-key-file given, but --%s-cipher none says the %s side is plaintext, which has no key: drop one of them", s, s, s)
		}
	}
	return nil
}

// checkKeysGiven refuses verify and recover without the key of a side the
// recorded conversion encrypts, naming the missing flag: otherwise the
// missing key is reported as a wrong one. The header read here is not
// authenticated; it only chooses the message, never a write.
func checkKeysGiven(cmd string, t engine.Target, oldKey, newKey []byte) error {
	st, err := engine.ReadStatus(t)
	if err != nil {
		return nil // the command itself reports what is wrong
	}
	for _, s := range []struct {
		name string
		m    header.Mapping
		key  []byte
	}{{"old", st.Header.Old, oldKey}, {"new", st.Header.New, newKey}} {
		if s.m.Cipher != "none" && s.key == nil {
			return usageErr("%s needs --%s-key-file: the conversion on this device has %s as its %s mapping", cmd, s.name, s.m.Cipher, s.name)
		}
	}
	return nil
}

// checkTarget runs the checks convert makes once DEVICE is open.
func checkTarget(dev, metaPath string, cfg engine.Config, t engine.Target) error {
	if err := checkSizes(dev, metaPath, t); err != nil {
		return err
	}
	return checkDataOffset(dev, cfg, t)
}
