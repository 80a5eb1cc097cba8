package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/bench"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// benchCommand parses bench's flags; package bench does the rest.
func benchCommand(stderr io.Writer) *cli.Command {
	var specs []string
	for _, s := range sectorcipher.SupportedSpecs() {
		if s != "none" {
			specs = append(specs, s)
		}
	}
	return &cli.Command{
		Name:  "bench",
		Usage: "measure cipher throughput and, with --convert, conversion time against an in-place copy",
		Description: "Like cryptsetup benchmark: per cipher spec, key size and sector size, the sector cipher's\n" +
			"throughput on one core in MB/s (10^6 bytes), with golang.org/x/crypto/xts measured in the\n" +
			"same rounds as a reference for the XTS specs. With --convert SIZE it also builds a\n" +
			"throw-away image of SIZE in --dir per sector size (512 and 4096 by default) and, for each\n" +
			"mode, times a full offline conversion (each in its own process, for its peak RSS) right\n" +
			"after a streaming in-place O_DIRECT copy of the same range (4 MiB blocks, the next read\n" +
			"while the last is written, one flush at the end, like dd bs=4M iflag=direct oflag=direct\n" +
			"conv=notrunc,fsync), --repeat times, and reports the median and best of the paired ratios;\n" +
			"beside them, the ratio to a copy that flushes every window (--flushed-copy). As root\n" +
			"it drops the page cache before every timed run. Figures from a shared machine only mean\n" +
			"something as ratios measured in the same run.",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "cipher", Value: cli.NewStringSlice(specs...), Usage: "cipher `SPEC` to measure (repeatable; none skips the cipher part)"},
			&cli.DurationFlag{Name: "time", Value: 200 * time.Millisecond, Usage: "`DURATION` of each cipher round"},
			&cli.IntFlag{Name: "repeat", Value: 3, Usage: "`N` cipher rounds per figure, and conversions per mode"},
			&cli.StringFlag{Name: "convert", Usage: "image `SIZE` for the conversion benchmark (default: no conversion benchmark)"},
			&cli.StringFlag{Name: "dir", Usage: "`DIR` to create the image in (default: $TMPDIR or /tmp); put it on the disk you care about"},
			&cli.StringSliceFlag{Name: "mode", Value: cli.NewStringSlice("journal", "checksum", "shift", "none"), Usage: "resilience `MODE` to time (repeatable; none runs with --force)"},
			&cli.StringFlag{Name: "window", Usage: "conversion window `SIZE` (default 8M, 1M for images under 256M)"},
			&cli.IntSliceFlag{Name: "sector-size", Value: cli.NewIntSlice(512, 4096), Usage: "dm-crypt sector size `N` of the image's mapping (repeatable; each gets its own image and table)"},
			&cli.BoolFlag{Name: "flushed-copy", Value: true, Usage: "also time a per-window flushed copy after each conversion and print the ratio to it beside the baseline's"},
			&cli.BoolFlag{Name: "verify", Value: true, Usage: "decrypt and compare the data after every conversion (outside the timing)"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of tables"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErr("bench takes no arguments, got %q", c.Args().Slice())
			}
			if c.Int("repeat") < 1 {
				return usageErr("--repeat %d: want at least 1", c.Int("repeat"))
			}
			for _, s := range c.StringSlice("cipher") {
				if _, err := sectorcipher.ParseSpec(s); err != nil {
					return usageErr("--cipher: %v", err)
				}
			}
			p := bench.Params{Ciphers: c.StringSlice("cipher"), Time: c.Duration("time"), Repeat: c.Int("repeat"), JSON: c.Bool("json")}
			if c.String("convert") != "" {
				cp, err := convertParamsFrom(c)
				if err != nil {
					return err
				}
				p.Convert = &cp
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own binary to run conversions in: %w", err)
			}
			in := watchSignals(c.Context, stderr)
			defer in.stop()
			return bench.Run(in.ctx, p, exe, c.App.Writer, stderr)
		},
	}
}

func convertParamsFrom(c *cli.Context) (bench.ConvertParams, error) {
	size, err := parseSize(c.String("convert"))
	if err != nil {
		return bench.ConvertParams{}, usageErr("--convert: %v", err)
	}
	var window int64
	if c.String("window") != "" {
		if window, err = parseSize(c.String("window")); err != nil {
			return bench.ConvertParams{}, usageErr("--window: %v", err)
		}
	}
	dir := c.String("dir")
	if dir == "" {
		dir = os.TempDir()
	}
	p := bench.ConvertParams{Dir: dir, Size: size, Window: window, SectorSizes: c.IntSlice("sector-size"),
		Repeat: c.Int("repeat"), Modes: c.StringSlice("mode"), Verify: c.Bool("verify"), FlushedCopy: c.Bool("flushed-copy")}
	return p, p.Check()
}

// benchChildCommand is the hidden subcommand bench runs each timed
// conversion in (bench.ChildCommand).
func benchChildCommand() *cli.Command {
	return &cli.Command{
		Name:   bench.ChildCommand,
		Hidden: true,
		Usage:  "internal to bench: one timed conversion",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "image", Required: true},
			&cli.StringFlag{Name: "old-key-file", Required: true},
			&cli.StringFlag{Name: "new-key-file", Required: true},
			&cli.StringFlag{Name: "mode", Required: true},
			&cli.Int64Flag{Name: "data-offset"},
			&cli.Int64Flag{Name: "data-size", Required: true},
			&cli.Int64Flag{Name: "window", Required: true},
			&cli.Int64Flag{Name: "meta-size", Required: true},
			&cli.IntFlag{Name: "sector-size", Required: true},
		},
		Action: func(c *cli.Context) error {
			return bench.Child(c.Context, bench.ChildParams{Image: c.String("image"),
				OldKeyFile: c.String("old-key-file"), NewKeyFile: c.String("new-key-file"), Mode: c.String("mode"),
				DataOffset: c.Int64("data-offset"), DataSize: c.Int64("data-size"), Window: c.Int64("window"),
				MetaSize: c.Int64("meta-size"), SectorSize: c.Int("sector-size")}, c.App.Writer)
		},
	}
}
