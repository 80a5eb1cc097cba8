package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/fsck"
	"github.com/cryptshift/cryptshift/online"
)

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "audit a conversion's header, log and layout (and with --data every converted window); exit 0 when clean (or clean after --repair), 9 when problems remain",
		ArgsUsage: "DEVICE",
		Before:    protectKeys,
		Flags: append(append([]cli.Flag{metadataFlag(), passFileFlag()}, keyFlags()...),
			&cli.BoolFlag{Name: "data", Usage: "also read every converted window and compare it with the digest recorded when it was written"},
			&cli.StringFlag{Name: "online", Usage: "also check that device-mapper device `NAME` serves the data with the table the recorded progress calls for"},
			&cli.BoolFlag{Name: "repair", Usage: "if one header copy is damaged, altered or stale and the other is authentic, rewrite that copy only, from the authentic one, and flush; " +
				"otherwise write nothing. Not with --online: DEVICE is then opened shared (device-mapper holds it), so O_EXCL cannot keep another writer off the header; " +
				"repair with DEVICE not mapped, or resume with convert --online NAME, whose first checkpoint rewrites both copies"}),
		Action: func(c *cli.Context) error {
			dev, err := deviceArg(c)
			if err != nil {
				return err
			}
			if decryptRecorded(c.String("metadata")) {
				return verifyDecrypt(c, dev, func(t engine.Target, oldKey, newKey []byte) error {
					return runVerify(c.Context, c.App.Writer, c.App.ErrWriter, dev, t, oldKey, newKey, fsck.Options{Data: c.Bool("data")})
				})
			}
			if sig := luksVolume(dev); sig != nil {
				return verifyLUKS(c, dev, sig, func(t engine.Target, oldKey, newKey []byte) error {
					return runVerify(c.Context, c.App.Writer, c.App.ErrWriter, dev, t, oldKey, newKey, fsck.Options{Data: c.Bool("data")})
				})
			}
			if c.IsSet("key-file") {
				return usageErr("--key-file is for LUKS volumes; DEVICE has no LUKS header cryptshift converts (give --old-key-file and --new-key-file)")
			}
			repair := c.Bool("repair")
			if repair && c.String("online") != "" {
				return usageErr("verify --repair and --online cannot be combined: repair with DEVICE inactive (no device-mapper device on it), or resume with `convert --online NAME`, which rewrites both header copies")
			}
			oldKey, newKey, err := keys(c)
			if err != nil {
				return err
			}
			o := fsck.Options{Data: c.Bool("data"), Repair: repair}
			// Read-only, and exclusive unless a dm device holds DEVICE by
			// design: the lock keeps a running convert (which takes it too)
			// from changing the window while it is audited. --repair opens
			// for writing, still exclusive, so nothing else writes a header
			// while it rewrites a copy.
			bo := blockdev.Options{Exclusive: true, ReadOnly: !repair}
			if name := c.String("online"); name != "" {
				devno, err := dm.DevNo(dev)
				if err != nil {
					return fmt.Errorf("%w: %w", errclass.Device, err)
				}
				unlock, err := online.Lock(name)
				if err != nil {
					return err
				}
				defer unlock()
				o.Live = online.LiveAudit(name, devno)
				bo = blockdev.Options{ReadOnly: true, Direct: true}
			}
			t, cleanup, err := openTarget(dev, c.String("metadata"), 0, bo)
			if err != nil {
				return err
			}
			defer cleanup(false)
			if err := checkSizes(dev, c.String("metadata"), t); err != nil {
				return err
			}
			if err := checkKeysGiven("verify", t, oldKey, newKey); err != nil {
				return err
			}
			return runVerify(c.Context, c.App.Writer, c.App.ErrWriter, dev, t, oldKey, newKey, o)
		},
	}
}

// runVerify audits t and prints the report; findings worse than
// information make it return an ErrDamaged error. --data of a spec without
// a userspace cipher runs it in the kernel's dm-crypt (as --crypto auto
// does), saying so on errw; where the kernel cannot, it fails with
// errclass.NoCrypto.
func runVerify(ctx context.Context, out, errw io.Writer, dev string, t engine.Target, oldKey, newKey []byte, o fsck.Options) error {
	data := o.Data
	if data && o.Ciphers == nil {
		k := cipherMaker(cryptoAuto, errw)
		defer closeCiphers(k, errw)
		o.Ciphers = maker(k)
	}
	rep, err := fsck.Audit(ctx, t, oldKey, newKey, o)
	if err != nil {
		return fmt.Errorf("verify %s: %w", dev, explainLUKS(dev, err))
	}
	fmt.Fprint(out, rep.String())
	if data {
		fmt.Fprintf(out, "%d converted windows compared with their recorded digests\n", rep.Checked)
	}
	for _, slot := range rep.Repaired {
		fmt.Fprintf(out, "%s: repaired header copy %d from the authenticated copy %d\n", dev, slot, 1-slot)
	}
	if !rep.Clean() {
		n := 0
		for _, f := range rep.Findings {
			if f.Severity != fsck.Info {
				n++
			}
		}
		return fmt.Errorf("%w: verify %s: %d problem(s) found, listed above", errclass.Damaged, dev, n)
	}
	fmt.Fprintf(out, "%s: clean\n", dev)
	return nil
}
