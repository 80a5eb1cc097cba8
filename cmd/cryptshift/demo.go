package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/demo"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/fsck"
)

// demoCommand parses demo's flags; package demo does the rest.
func demoCommand(stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "convert a throw-away encrypted image end to end and check every byte (needs no root)",
		Description: "Creates an image of --size in a new directory under --dir, fills it with recognisable\n" +
			"text encrypted under a random aes-xts-plain64 key, converts it in place to another random key\n" +
			"(journal resilience), verifies it, decrypts it with the new key, compares every byte with\n" +
			"the original, reports the throughput against an in-place copy of the same range, and\n" +
			"removes everything it created.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "`DIR` to create the demo directory in (default: the system temporary directory)"},
			&cli.StringFlag{Name: "size", Value: "256M", Usage: "image `SIZE`, metadata included"},
			progressFlag(),
			progressIntervalFlag(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErr("demo takes no arguments, got %q", c.Args().Slice())
			}
			size, err := parseSize(c.String("size"))
			if err != nil {
				return usageErr("--size: %v", err)
			}
			mode, err := resolveProgress(c.String("progress"), isTerminal(int(os.Stderr.Fd())), os.Getenv("JOURNAL_STREAM") != "")
			if err != nil {
				return err
			}
			dir := c.String("dir")
			if dir == "" {
				dir = os.TempDir()
			}
			interval, err := progressInterval(c)
			if err != nil {
				return err
			}
			// The meter exists before the watcher, so that a signal is
			// reported in the progress format.
			m := newMeter(stderr, mode, "", interval)
			in := watchSignalsTo(c.Context, m.notice)
			defer in.stop()
			return runDemo(in.ctx, c.App.Writer, stderr, dir, size, m)
		},
	}
}

// runDemo runs package demo with the command line's convert (reporting on
// m) and verify.
func runDemo(ctx context.Context, stdout, stderr io.Writer, dir string, size int64, m *meter) error {
	// Everything the demo made is removed when it returns: there is
	// nothing to resume, so the pause message must not promise it.
	m.next = "the demo image and its keys are removed, so there is nothing to resume: run `cryptshift demo` again to start over"
	return demo.Run(ctx, demo.Params{Dir: dir, Size: size, Stdout: stdout, Stderr: stderr,
		Convert: func(ctx context.Context, img string, t engine.Target, cfg engine.Config) error {
			m.device = img
			_, err := runConvert(ctx, t, cfg, engine.Options{Progress: m.Update}, m)
			var r reported
			if errors.Is(err, errclass.Paused) && !errors.As(err, &r) {
				return fmt.Errorf("%w: demo interrupted before its first window; its files are removed", err)
			}
			return err
		},
		Verify: func(ctx context.Context, img string, t engine.Target, oldKey, newKey []byte) error {
			return runVerify(ctx, stdout, stderr, img, t, oldKey, newKey, fsck.Options{Data: true})
		},
	})
}
