package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
)

// testInterruptEnv is a TEST-ONLY hook: CRYPTSHIFT_TEST_INTERRUPT_AFTER=N
// makes convert send itself SIGINT twice after window N is committed,
// waiting for each to be handled. It drives the real signal path at an
// exact point, so the end-to-end test needs no timing. Not for production.
const testInterruptEnv = "CRYPTSHIFT_TEST_INTERRUPT_AFTER"

// testKillEnv is a TEST-ONLY hook: CRYPTSHIFT_TEST_KILL_AFTER=N makes
// convert SIGKILL itself after window N is committed, leaving the state a
// crash leaves for recover to find. Not for production.
const testKillEnv = "CRYPTSHIFT_TEST_KILL_AFTER"

func convertCommand(stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "convert",
		Usage:     "start a conversion, or resume one by giving the same arguments again",
		ArgsUsage: "DEVICE",
		Description: "Rewrites the data on DEVICE from the old mapping to the new one. Ctrl-C (SIGINT) or\n" +
			"SIGTERM pauses after the current window; run the same command again to resume.\n" +
			"Key files hold raw key bytes, as `cryptsetup open --type plain --key-file` reads them.",
		Flags: append(append(convertFlags(), onlineFlags()...), metricsFileFlag()),
		Action: func(c *cli.Context) error {
			return convertAction(c, stderr)
		},
	}
}

func convertAction(c *cli.Context, stderr io.Writer) error {
	dev, err := deviceArg(c)
	if err != nil {
		return err
	}
	cfg, err := configFromFlags(c)
	if err != nil {
		return err
	}
	mode, err := resolveProgress(c.String("progress"), isTerminal(int(os.Stderr.Fd())), os.Getenv("JOURNAL_STREAM") != "")
	if err != nil {
		return err
	}
	interval := c.Duration("progress-interval")
	if mode == progressJSON && !c.IsSet("progress-interval") {
		interval = defaultJSONInterval
	}
	var createMeta int64
	if c.String("metadata") != "" {
		createMeta = engine.DefaultMetaSize
		if cfg.MetaSize != 0 {
			createMeta = cfg.MetaSize
		}
	}
	name := c.String("online")
	if c.IsSet("new-like") && name == "" {
		return usageErr("--new-like needs --online")
	}
	kernelCrypto := false
	switch c.String("crypto") {
	case "userspace":
	case "kernel":
		if name == "" {
			return usageErr("--crypto kernel needs --online: offline there is no device-mapper device to do the crypto")
		}
		kernelCrypto = true
	default:
		return usageErr("--crypto %q: must be userspace or kernel", c.String("crypto"))
	}
	if name != "" && os.Getenv(onlineWorkerEnv) == "" {
		return guardOnline(c, stderr, name, dev)
	}
	var t engine.Target
	var cleanup func(bool)
	var holder *onlineHolder
	if name != "" {
		var live []dm.Target
		t, live, cleanup, err = onlineTarget(name, dev, c.String("metadata"), createMeta)
		if err != nil {
			return err
		}
		destOff, err := fillFromTable(&cfg, live, t, c.String("new-like"))
		if err != nil {
			cleanup(false)
			return err
		}
		holder = &onlineHolder{name: name, destOff: destOff, logf: func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }}
		defer holder.close()
	} else if t, cleanup, err = openTarget(dev, c.String("metadata"), createMeta, blockdev.Options{Exclusive: true}); err != nil {
		return err
	}
	in := watchSignals(c.Context, stderr)
	defer in.stop()
	m := newMeter(stderr, mode, dev, interval)
	defer watchMetrics(c.String("metrics-file"), dev, m, holder, stderr)()
	opts := engine.Options{Progress: m.Update}
	if holder != nil {
		opts.Holder = holder
		if kernelCrypto {
			opts.Crypto = holder
		}
	}
	if n, err := strconv.ParseUint(os.Getenv(testInterruptEnv), 10, 64); err == nil {
		opts.Hooks = &engine.Hooks{AfterWindow: selfInterrupt(in, n)}
	}
	if n, err := strconv.ParseUint(os.Getenv(testKillEnv), 10, 64); err == nil {
		opts.Hooks = &engine.Hooks{AfterWindow: func(done uint64) {
			if done == n {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // SIGKILL cannot be caught: this never runs on
			}
		}}
	}
	res, err := runConvert(in.ctx, t, cfg, opts, m)
	if holder != nil {
		holder.closeCrypto(stderr)
	}
	// A metadata file that never received a header (refused, wrong key)
	// is removed, so that retrying with corrected flags starts clean.
	cleanup(err != nil && !errors.Is(err, errclass.Paused) && !hasHeader(t.Meta))
	if holder != nil && holder.o != nil {
		printStalls(c.App.Writer, holder.o.Stats())
		if err != nil {
			// Paused or stopped between windows: leave NAME with exactly the
			// table recovery would build. After an abort this refuses, and
			// the window stays failed until `recover --activate`.
			if serr := holder.o.Settle(); serr != nil {
				fmt.Fprintf(stderr, "cryptshift: %s keeps its current table: %v\n", name, serr)
			}
		}
	}
	if err != nil {
		return err
	}
	if holder != nil {
		return finishOnline(c, holder, res)
	}
	fmt.Fprintf(c.App.Writer, "Conversion complete. Open the new mapping with:\n  %s\n", openCommand(dev, res.Header, res.Header.New, res.Header.NewOffset))
	return nil
}

// finishOnline serves the whole device with the new mapping as one target,
// and removes --new-like's DEST, which served the same data with it.
func finishOnline(c *cli.Context, h *onlineHolder, res *engine.Result) error {
	if h.o == nil { // already complete before this run
		fmt.Fprintf(c.App.Writer, "Conversion was already complete; if %s still has more than one target, `cryptshift recover --activate %s` makes it one.\n", h.name, h.name)
		return nil
	}
	if err := h.o.Finish(); err != nil {
		return fmt.Errorf("%w: the data is converted, but %s could not be switched to a single new target: %w (run `cryptshift recover --activate`)", errclass.Device, h.name, err)
	}
	if dest := c.String("new-like"); dest != "" {
		if err := dm.Remove(dest); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "cryptshift: warning: could not remove %s: %v\n", dest, err)
		}
	}
	fmt.Fprintf(c.App.Writer, "Conversion complete. %s now serves the data with %s.\n", h.name, res.Header.New.Cipher)
	return nil
}

// runConvert runs the engine and reports the outcome on the meter.
func runConvert(ctx context.Context, t engine.Target, cfg engine.Config, opts engine.Options, m *meter) (*engine.Result, error) {
	res, err := engine.Convert(ctx, t, cfg, opts)
	switch {
	case err == nil:
		m.finished()
		return res, nil
	case errors.Is(err, errclass.Paused) && res != nil && res.Header != nil:
		m.paused(res.Header.Done, res.Header.Windows())
		return res, reported{err}
	}
	m.endLine()
	return res, err
}

// selfInterrupt is the test hook behind testInterruptEnv.
func selfInterrupt(in *interrupter, after uint64) func(uint64) {
	return func(done uint64) {
		if done != after {
			return
		}
		for i := 1; i <= 2; i++ {
			if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
				panic(fmt.Sprintf("test hook: kill: %v", err))
			}
			// Bounded so that a broken signal path makes the test fail
			// (the conversion completes) instead of hanging.
			select {
			case <-in.handled:
			case <-time.After(time.Minute):
				return
			}
		}
	}
}

// openCommand is the cryptsetup (or, for plaintext, losetup) command that
// maps one side of the conversion; key material is never printed, only a
// placeholder for the key file.
func openCommand(dev string, h *header.Header, m header.Mapping, offset uint64) string {
	if m.Cipher == "none" {
		return fmt.Sprintf("losetup --find --show --offset %d --sizelimit %d %s", offset, h.DataSize, dev)
	}
	s := fmt.Sprintf("cryptsetup open --type plain --cipher %s --key-size %d --key-file KEYFILE --offset %d --size %d",
		m.Cipher, m.KeyBytes*8, offset/512, h.DataSize/512)
	if m.IVOffset != 0 {
		s += fmt.Sprintf(" --skip %d", m.IVOffset)
	}
	if m.SectorSize != 512 {
		s += fmt.Sprintf(" --sector-size %d", m.SectorSize)
	}
	if m.IVLargeSectors {
		s += " --iv-large-sectors"
	}
	return s + " " + dev + " NAME"
}

// crypttabOptions is the /etc/crypttab options field for one side, or ""
// with a reason when crypttab cannot express it.
func crypttabOptions(m header.Mapping, offset uint64) (string, string) {
	if m.Cipher == "none" {
		return "", "plaintext: no dm-crypt mapping"
	}
	if m.IVLargeSectors {
		return "", "iv_large_sectors: use the cryptsetup command instead"
	}
	// hash=plain: the key file is the raw key, as with cryptsetup --key-file.
	s := fmt.Sprintf("plain,cipher=%s,size=%d,hash=plain", m.Cipher, m.KeyBytes*8)
	if offset != 0 {
		s += fmt.Sprintf(",offset=%d", offset/512)
	}
	if m.IVOffset != 0 {
		s += fmt.Sprintf(",skip=%d", m.IVOffset)
	}
	if m.SectorSize != 512 {
		s += fmt.Sprintf(",sector-size=%d", m.SectorSize)
	}
	return s, ""
}
