package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
)

// decryptMetaCreate is the size of a --metadata file --decrypt creates: the
// head of a volume with a data offset up to 32 MiB, and the engine's area.
const decryptMetaCreate = 64<<20 + 4096

func decryptFlag() cli.Flag {
	return &cli.BoolFlag{Name: "decrypt", Usage: "LUKS2, LUKS1: decrypt DEVICE in place: the plaintext ends at byte 0 and the LUKS header is gone (needs --metadata PATH and --key-file)"}
}

// decryptConflicts are convert's flags that --decrypt leaves no room for.
var decryptConflicts = []string{"new-cipher", "new-key-size", "new-sector-size", "key-slot", "resilience", "online", "crypto"}

// decryptRecorded reports whether the --metadata file records a decryption.
func decryptRecorded(metaPath string) bool {
	if metaPath == "" {
		return false
	}
	m, err := blockdev.Open(metaPath, blockdev.Options{ReadOnly: true})
	if err != nil {
		return false
	}
	defer m.Close()
	return engine.IsDecryptMeta(m)
}

// convertDecrypt is convert --decrypt (engine.ConvertDecryptLUKS2).
func convertDecrypt(c *cli.Context, stderr io.Writer, dev string) error {
	for _, f := range append(append([]string{}, decryptConflicts...), plainOnlyFlags...) {
		if c.IsSet(f) {
			return usageErr("--decrypt leaves the data as plaintext at byte 0: --%s does not apply", f)
		}
	}
	if c.IsSet("old-key-file") || c.IsSet("new-key-file") {
		return usageErr("--decrypt takes the LUKS2 passphrase with --key-file")
	}
	meta := c.String("metadata")
	if meta == "" {
		return usageErr("--decrypt needs --metadata PATH on another disk: moving the plaintext to byte 0 overwrites every byte of DEVICE cryptshift could keep its metadata in")
	}
	if !decryptRecorded(meta) {
		sig := detectLUKS(dev)
		if sig == nil {
			return fmt.Errorf("%w: %s has no LUKS header, and --metadata records no decryption of it: there is nothing to decrypt", errclass.Device, dev)
		}
		if sig.Version != 1 && sig.Version != 2 || sig.Reencrypting || sig.InConversion {
			return fmt.Errorf("%w: %s is a %s: cryptshift decrypts LUKS1 and LUKS2 volumes that no other conversion is under way on", errclass.Device, dev, sig)
		}
	}
	passes, err := readPassFiles(c)
	if err != nil {
		return err
	}
	if len(passes) == 0 {
		return usageErr("--decrypt needs the volume's passphrase: --key-file PASSFILE")
	}
	window, _, err := sizeFlag(c, "window")
	if err != nil {
		return err
	}
	mode, interval, err := progressFlags(c)
	if err != nil {
		return err
	}
	m := newMeter(stderr, mode, dev, interval)
	in := watchSignalsTo(c.Context, m.notice)
	defer in.stop()
	stopMetrics, _ := watchMetrics(c.String("metrics-file"), dev, m, stderr)
	defer stopMetrics()
	engineHooks, _ := testHooks(in)
	t, cleanup, err := openTarget(dev, meta, decryptMetaCreate, blockdev.Options{Exclusive: true})
	if err != nil {
		return err
	}
	req := engine.DecryptRequest{Passphrases: passes, Meta: t.Meta, Window: window,
		Notify: func(s string) { fmt.Fprintf(c.App.Writer, "%s: %s\n", dev, s) }}
	res, err := engine.ConvertDecryptLUKS2(in.ctx, t.Data, req, engine.Options{Progress: m.Update, Hooks: engineHooks})
	cleanup(err != nil && !hasHeader(t.Meta) && !engine.IsDecryptMeta(t.Meta))
	var er *engine.Result
	if res != nil && res.Header != nil {
		er = &engine.Result{Header: res.Header}
	}
	if err := reportOutcome(m, er, err); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Decryption complete. The plaintext starts at byte 0 of %s (mount it directly); %s may be removed.\n", dev, meta)
	return nil
}

// recoverDecrypt is recover on a device whose --metadata records a
// decryption.
func recoverDecrypt(c *cli.Context, dev string) error {
	if c.IsSet("activate") || c.IsSet("old-key-file") || c.IsSet("new-key-file") {
		return usageErr("a decryption is recovered with --metadata and --key-file only")
	}
	passes, err := readPassFiles(c)
	if err != nil {
		return err
	}
	t, cleanup, err := openTarget(dev, c.String("metadata"), 0, blockdev.Options{Exclusive: true})
	if err != nil {
		return err
	}
	defer cleanup(false)
	res, err := engine.RecoverDecryptLUKS2(c.Context, t.Data, t.Meta, passes, engine.Options{})
	if err != nil {
		return fmt.Errorf("recover %s: %w", dev, err)
	}
	fmt.Fprintf(c.App.Writer, "Recovered %s: %s\n", dev, res.Action)
	if !res.Finished {
		fmt.Fprintf(c.App.Writer, "The decryption is paused; run `cryptshift convert --decrypt --metadata %s --key-file PASSFILE %s` to go on.\n", c.String("metadata"), dev)
	}
	return nil
}

// statusDecrypt is status on a device whose --metadata records a
// decryption; it needs no keys.
func statusDecrypt(c *cli.Context, dev string) error {
	t, cleanup, err := openTarget(dev, c.String("metadata"), 0, blockdev.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer cleanup(false)
	st, err := engine.ReadDecryptStatus(t.Data, t.Meta)
	if err != nil {
		return fmt.Errorf("status %s: %w", dev, err)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "Device:      %s\n", dev)
	fmt.Fprintf(w, "Conversion:  LUKS2 decryption (--decrypt), %s\n", st.Stage)
	if e := st.Engine; e != nil {
		fmt.Fprintf(w, "Windows:     %d of %d moved\n", e.Done, e.Total)
	}
	fmt.Fprintf(w, "Next:        run `cryptshift convert --decrypt --metadata %s --key-file PASSFILE %s` (or recover) to go on\n", c.String("metadata"), dev)
	return nil
}

// verifyDecrypt audits a decryption recorded on --metadata: while the data
// move, as verify does any conversion (with the LUKS2 passphrase).
func verifyDecrypt(c *cli.Context, dev string, run func(t engine.Target, oldKey, newKey []byte) error) error {
	if c.String("online") != "" || c.Bool("repair") || c.IsSet("old-key-file") || c.IsSet("new-key-file") {
		return usageErr("a decryption is verified with --metadata and --key-file only (no --online, --repair)")
	}
	passes, err := readPassFiles(c)
	if err != nil {
		return err
	}
	t, cleanup, err := openTarget(dev, c.String("metadata"), 0, blockdev.Options{Exclusive: true, ReadOnly: true})
	if err != nil {
		return err
	}
	defer cleanup(false)
	o, err := engine.OpenDecryptLUKS2(t.Data, t.Meta, passes)
	if err != nil {
		return fmt.Errorf("verify %s: %w", dev, err)
	}
	defer o.Close()
	if !o.Moving {
		fmt.Fprintf(c.App.Writer, "%s: decryption %s; the stashed head on --metadata is whole (run recover or convert --decrypt to finish)\n", dev, o.Stage)
		return nil
	}
	return run(o.Target, o.OldKey, nil)
}
