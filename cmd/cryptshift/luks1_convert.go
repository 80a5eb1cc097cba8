package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/luks"
)

// isLUKS1 reports whether sig is a LUKS1 volume cryptshift converts: a
// plain one, or one it marked as in conversion itself (a cryptsetup-
// reencrypt run in progress is not).
func isLUKS1(sig *luks.Signature) bool {
	return sig != nil && sig.Version == 1 && (!sig.Reencrypting || sig.InConversion)
}

// luks1PlainOnly are the plain-mapping flags refused on a LUKS1 volume:
// the header gives the mapping. --data-size and --metadata-size stay, for
// the metadata area at the end of DEVICE.
func luks1PlainOnly() []string {
	var out []string
	for _, f := range plainOnlyFlags {
		if f != "data-size" && f != "metadata-size" {
			out = append(out, f)
		}
	}
	return out
}

// convertLUKS1 converts a LUKS1 volume offline (engine.ConvertLUKS1).
func convertLUKS1(c *cli.Context, stderr io.Writer, dev string, sig *luks.Signature) error {
	if c.String("online") != "" {
		return fmt.Errorf("%w: %s is a %s: cryptshift converts LUKS1 volumes offline only (no --online: close it and give its passphrases with --key-file); converting its data area as a plain mapping would leave the keyslots wrapping the old volume key",
			errclass.Device, dev, sig)
	}
	if c.IsSet("old-key-file") || c.IsSet("new-key-file") {
		return fmt.Errorf("%w: %s is a %s: give its passphrases with --key-file, not --old-key-file/--new-key-file: converting its data area as a plain mapping would leave the keyslots wrapping the old volume key",
			errclass.Device, dev, sig)
	}
	for _, f := range luks1PlainOnly() {
		if c.IsSet(f) {
			return usageErr("--%s does not apply to a LUKS1 volume: its header gives the mapping", f)
		}
	}
	if c.IsSet("new-sector-size") && c.Int("new-sector-size") != 512 {
		return usageErr("--new-sector-size %d: LUKS1 volumes have 512-byte sectors only", c.Int("new-sector-size"))
	}
	passes, err := readPassFiles(c)
	if err != nil {
		return err
	}
	if len(passes) == 0 {
		return usageErr("%s is a %s: give the passphrase of each active keyslot with --key-file PASSFILE (or --key-slot N and its passphrase)", dev, sig)
	}
	req := engine.LUKS1Request{LUKSRequest: engine.LUKSRequest{Passphrases: passes, KeySlot: luks.AnySlot,
		Mode: c.String("resilience"), Force: c.Bool("force")}}
	if c.IsSet("key-slot") {
		if req.KeySlot = c.Int("key-slot"); req.KeySlot < 0 || req.KeySlot > 7 {
			return usageErr("--key-slot %d: LUKS1 keyslots are 0 to 7", req.KeySlot)
		}
	}
	if c.IsSet("new-cipher") {
		if req.NewCipher = c.String("new-cipher"); req.NewCipher == "" || req.NewCipher == "none" {
			return usageErr("--new-cipher %q: a LUKS1 volume needs a cipher", req.NewCipher)
		}
	}
	if c.IsSet("new-key-size") {
		bits := c.Int("new-key-size")
		if bits <= 0 || bits%8 != 0 {
			return usageErr("--new-key-size %d: a multiple of 8 bits", bits)
		}
		req.NewKeyBytes = bits / 8
	}
	if req.Window, _, err = sizeFlag(c, "window"); err != nil {
		return err
	}
	if c.String("metadata") != "" {
		if c.IsSet("data-size") || c.IsSet("metadata-size") {
			return usageErr("--data-size and --metadata-size are for the metadata area at the end of DEVICE; with --metadata the whole LUKS1 data area is converted")
		}
	} else {
		if req.DataSize, _, err = sizeFlag(c, "data-size"); err != nil {
			return err
		}
		if req.MetaSize, _, err = sizeFlag(c, "metadata-size"); err != nil {
			return err
		}
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
	req.Notify = func(s string) { fmt.Fprintf(c.App.Writer, "%s: %s\n", dev, s) }
	return convertLUKSOffline(c, dev, "LUKS1", m, func(data, meta blockdev.Device) (*engine.LUKSResult, error) {
		req.Meta = meta
		return engine.ConvertLUKS1(in.ctx, data, req, engine.Options{Progress: m.Update, Hooks: engineHooks})
	})
}

// luksEngine are the engine calls for a LUKS volume of either version.
type luksEngine struct {
	recover func(c *cli.Context, dev, meta blockdev.Device, passes [][]byte, ro engine.RecoverOptions) (*engine.LUKSResult, error)
	open    func(dev, meta blockdev.Device, passes [][]byte) (*engine.LUKSOpened, error)
	status  func(dev, meta blockdev.Device) (*engine.LUKSStatus, error)
}

func luksEngineFor(sig *luks.Signature) luksEngine {
	if isLUKS1(sig) {
		return luksEngine{
			recover: func(c *cli.Context, dev, meta blockdev.Device, passes [][]byte, ro engine.RecoverOptions) (*engine.LUKSResult, error) {
				return engine.RecoverLUKS1(c.Context, dev, meta, passes, ro, engine.Options{})
			},
			open: engine.OpenLUKS1, status: engine.ReadLUKS1Status,
		}
	}
	return luksEngine{
		recover: func(c *cli.Context, dev, meta blockdev.Device, passes [][]byte, ro engine.RecoverOptions) (*engine.LUKSResult, error) {
			return engine.RecoverLUKS2(c.Context, dev, meta, passes, ro, engine.Options{})
		},
		open: engine.OpenLUKS2, status: engine.ReadLUKS2Status,
	}
}

// luksConversionLine is status's "Conversion:" line for a LUKS state.
func luksConversionLine(version int, state string) string {
	if version == 1 {
		return map[string]string{
			"none":       "none recorded",
			"converting": "in progress (magic LUKS\\xde\\xad: stock cryptsetup sees no LUKS volume)",
			"starting":   "started, but no window was written (run `cryptshift recover DEVICE` to unmark it, or convert again)",
			"wiping":     "done; the old key material is still being overwritten",
		}[state]
	}
	return map[string]string{"none": "none recorded", "converting": "in progress (requirement " + engine.LUKSRequirement + " set: stock cryptsetup refuses to open it)", "wiping": "done; old keyslot areas still being overwritten"}[state]
}
