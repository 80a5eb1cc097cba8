package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/online"
)

func convertCommand(stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "convert",
		Usage:     "start a conversion, or resume one by giving the same arguments again",
		ArgsUsage: "DEVICE",
		Description: "Rewrites the data on DEVICE from the old mapping to the new one. Ctrl-C (SIGINT),\n" +
			"SIGTERM or SIGHUP pauses after the current window; run the same command again to resume.\n" +
			"Key files hold raw key bytes, as `cryptsetup open --type plain --key-file` reads them.",
		Flags:  append(append(append(convertFlags(), luksConvertFlags()...), onlineFlags()...), metricsFileFlag()),
		Before: protectKeys,
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
	if c.Bool("decrypt") || decryptRecorded(c.String("metadata")) {
		// A decryption recorded on --metadata resumes with or without
		// --decrypt repeated.
		return convertDecrypt(c, stderr, dev)
	}
	if sig := detectLUKS(dev); sig != nil {
		return convertLUKS(c, stderr, dev, sig)
	}
	if err := luksFlagsOn(c); err != nil {
		return err
	}
	cfg, err := configFromFlags(c)
	if err != nil {
		return err
	}
	if err := checkPlaintextKey(c); err != nil {
		return err
	}
	mode, interval, err := progressFlags(c)
	if err != nil {
		return err
	}
	name := c.String("online")
	crypto, err := onlineModeFlags(c, name)
	if err != nil {
		return err
	}
	if name != "" && os.Getenv(onlineWorkerEnv) == "" {
		return guardOnline(c, stderr, name, dev)
	}
	// The meter exists before the watcher, so that a signal is reported
	// in the progress format.
	m := newMeter(stderr, mode, dev, interval)
	in := watchSignalsTo(c.Context, m.notice)
	defer in.stop()
	stopMetrics, stalls := watchMetrics(c.String("metrics-file"), dev, m, stderr)
	defer stopMetrics()
	engineHooks, onlineHooks := testHooks(in)
	ciphers := cipherMaker(crypto, stderr)
	defer closeCiphers(ciphers, stderr)
	opts := engine.Options{Progress: m.Update, Hooks: engineHooks, Ciphers: maker(ciphers)}
	createMeta := metaCreateSize(c, cfg)
	if name == "" {
		return convertOffline(in.ctx, c, dev, createMeta, cfg, opts, m)
	}
	req := onlineRequest(c, stderr, name, dev, createMeta, cfg)
	req.KernelCrypto, req.AutoKernelCrypto, req.Hooks = crypto == cryptoKernel, crypto == cryptoAuto, stalls.chain(onlineHooks)
	return convertOnline(in.ctx, c, req, cfg, opts, m)
}

// progressFlags resolves --progress and --progress-interval for where
// the output goes.
func progressFlags(c *cli.Context) (string, time.Duration, error) {
	mode, err := resolveProgress(c.String("progress"), isTerminal(int(os.Stderr.Fd())), os.Getenv("JOURNAL_STREAM") != "")
	if err != nil {
		return mode, 0, err
	}
	interval, err := progressInterval(c)
	if err != nil {
		return mode, 0, err
	}
	if mode == progressJSON && !c.IsSet("progress-interval") {
		interval = defaultJSONInterval
	}
	return mode, interval, nil
}

// metaCreateSize is the size of the metadata file convert creates when
// --metadata names one that does not exist yet; 0 without --metadata.
func metaCreateSize(c *cli.Context, cfg engine.Config) int64 {
	if c.String("metadata") == "" {
		return 0
	}
	if cfg.MetaSize != 0 {
		return cfg.MetaSize
	}
	return engine.DefaultMetaSize
}

// onlineModeFlags checks the flags that only make sense with --online and
// returns --crypto's engine.
func onlineModeFlags(c *cli.Context, name string) (crypto string, err error) {
	if c.IsSet("new-like") && name == "" {
		return "", usageErr("--new-like needs --online")
	}
	switch v := c.String("crypto"); v {
	case cryptoAuto, cryptoUserspace, cryptoKernel:
		return v, nil
	}
	return "", usageErr("--crypto %q: must be auto, userspace or kernel", c.String("crypto"))
}

// convertOffline converts DEVICE, opened exclusively, with nothing mapped
// over it.
func convertOffline(ctx context.Context, c *cli.Context, dev string, createMeta int64, cfg engine.Config, opts engine.Options, m *meter) error {
	t, cleanup, err := openTarget(dev, c.String("metadata"), createMeta, blockdev.Options{Exclusive: true})
	if err != nil {
		return err
	}
	if err := checkTarget(dev, c.String("metadata"), cfg, t); err != nil {
		cleanup(true) // removes only a metadata file this run created
		return err
	}
	res, err := runConvert(ctx, t, cfg, opts, m)
	// A metadata file that never received a header (refused, wrong key)
	// is removed, so that retrying with corrected flags starts clean.
	cleanup(err != nil && !errors.Is(err, errclass.Paused) && !hasHeader(t.Meta))
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Conversion complete. Open the new mapping with:\n  %s\n", openCommand(dev, res.Header, res.Header.New, res.Header.NewOffset))
	return nil
}

// convertOnline runs the online conversion (package online does it all)
// and reports what application I/O waited.
func convertOnline(ctx context.Context, c *cli.Context, req online.Request, cfg engine.Config, opts engine.Options, m *meter) error {
	res, err := online.Convert(ctx, req, cfg, opts)
	var er *engine.Result
	if res != nil {
		er = res.Engine
	}
	err = reportOutcome(m, er, err)
	if res != nil {
		printStalls(c.App.Writer, res.Stats)
	}
	switch {
	case err != nil:
		return err
	case res.AlreadyComplete:
		fmt.Fprintf(c.App.Writer, "Conversion was already complete; if %s still has more than one target, `cryptshift recover --activate %s` makes it one.\n", req.Name, req.Name)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "Conversion complete. %s now serves the data with %s.\n", req.Name, er.Header.New.Cipher)
	return nil
}

// runConvert runs the engine and reports the outcome on the meter.
func runConvert(ctx context.Context, t engine.Target, cfg engine.Config, opts engine.Options, m *meter) (*engine.Result, error) {
	res, err := engine.Convert(ctx, t, cfg, opts)
	return res, reportOutcome(m, res, err)
}

// reportOutcome reports the engine's outcome on the meter.
func reportOutcome(m *meter, res *engine.Result, err error) error {
	switch {
	case err == nil:
		m.finished()
		return nil
	case errors.Is(err, errclass.Paused) && res != nil && res.Header != nil:
		m.paused(res.Header.Done, res.Header.Windows())
		return reported{err}
	}
	m.endLine()
	return err
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
