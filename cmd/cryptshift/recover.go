package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
)

func recoverCommand(stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "recover",
		Usage:     "finish or roll back the window a crash interrupted, leaving the conversion paused",
		ArgsUsage: "DEVICE",
		Description: "Needs both keys: recovery state is authenticated with them, so a forged header cannot\n" +
			"make recovery write anything. Running it twice is harmless.",
		Flags: append(append([]cli.Flag{metadataFlag()}, keyFlags()...),
			&cli.BoolFlag{Name: "accept-damage", Usage: "leave sectors recovery cannot restore as they are (they are listed) so the conversion can go on"}),
		Action: func(c *cli.Context) error {
			dev, err := deviceArg(c)
			if err != nil {
				return err
			}
			oldKey, newKey, err := keys(c)
			if err != nil {
				return err
			}
			t, cleanup, err := openTarget(dev, c.String("metadata"), 0, blockdev.Options{Exclusive: true})
			if err != nil {
				return err
			}
			defer cleanup(false)
			// Recovery of one window is short and must not stop half-way:
			// signals are caught (so they cannot kill it) but not acted on.
			in := watchSignals(c.Context, stderr)
			defer in.stop()
			res, err := engine.Recover(c.Context, t, oldKey, newKey,
				engine.RecoverOptions{AcceptDamage: c.Bool("accept-damage")}, engine.Options{})
			if res != nil && res.Damaged != nil && err == nil {
				fmt.Fprintf(c.App.Writer, "Damaged (accepted): %v\n", res.Damaged)
			}
			if err != nil {
				return fmt.Errorf("recover %s: %w", dev, err)
			}
			fmt.Fprintf(c.App.Writer, "Recovered: %s\n", res.Action)
			return nil
		},
	}
}
