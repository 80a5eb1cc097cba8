package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/fsck"
)

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "audit a conversion's header, log and layout (and with --data every converted window); exit 0 when clean",
		ArgsUsage: "DEVICE",
		Flags: append(append([]cli.Flag{metadataFlag()}, keyFlags()...),
			&cli.BoolFlag{Name: "data", Usage: "also read every converted window and compare it with the digest recorded when it was written"}),
		Action: func(c *cli.Context) error {
			dev, err := deviceArg(c)
			if err != nil {
				return err
			}
			oldKey, newKey, err := keys(c)
			if err != nil {
				return err
			}
			// Read-only, but exclusive: auditing a device a conversion is
			// rewriting would report its window in flight as damage.
			t, cleanup, err := openTarget(dev, c.String("metadata"), 0, blockdev.Options{Exclusive: true, ReadOnly: true})
			if err != nil {
				return err
			}
			defer cleanup(false)
			return runVerify(c.Context, c.App.Writer, dev, t, oldKey, newKey, c.Bool("data"))
		},
	}
}

// runVerify audits t and prints the report; findings worse than
// information make it return an ErrDamaged error.
func runVerify(ctx context.Context, out io.Writer, dev string, t engine.Target, oldKey, newKey []byte, data bool) error {
	rep, err := fsck.Audit(ctx, t, oldKey, newKey, fsck.Options{Data: data})
	if err != nil {
		return fmt.Errorf("verify %s: %w", dev, err)
	}
	fmt.Fprint(out, rep.String())
	if data {
		fmt.Fprintf(out, "%d converted windows compared with their recorded digests\n", rep.Checked)
	}
	if !rep.Clean() {
		n := 0
		for _, f := range rep.Findings {
			if f.Severity != fsck.Info {
				n++
			}
		}
		return fmt.Errorf("%w: verify %s: %d problem(s) found, listed above", engine.ErrDamaged, dev, n)
	}
	fmt.Fprintf(out, "%s: clean\n", dev)
	return nil
}
