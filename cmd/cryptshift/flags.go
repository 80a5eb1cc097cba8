package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/engine"
)

// Flag names are a contract with scripts and tests: never rename one.

func metadataFlag() cli.Flag {
	return &cli.StringFlag{Name: "metadata", Usage: "`PATH` of a separate metadata file or device (default: the end of DEVICE)"}
}

func keyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "old-key-file", Usage: "`PATH` of the old mapping's raw key, as cryptsetup open --type plain --key-file reads it"},
		&cli.StringFlag{Name: "new-key-file", Usage: "`PATH` of the new mapping's raw key"},
	}
}

func mappingFlags() []cli.Flag {
	var fs []cli.Flag
	for _, side := range []string{"old", "new"} {
		fs = append(fs,
			&cli.StringFlag{Name: side + "-cipher", Usage: "dm-crypt cipher `SPEC` of the " + side + " mapping, or none (new conversion default: aes-xts-plain64)"},
			&cli.IntFlag{Name: side + "-sector-size", DefaultText: "512", Usage: "dm-crypt sector_size `N` of the " + side + " mapping: 512, 1024, 2048 or 4096"},
			&cli.Uint64Flag{Name: side + "-iv-offset", Usage: "dm-crypt iv_offset `N` of the " + side + " mapping, in 512-byte sectors"},
			&cli.BoolFlag{Name: side + "-iv-large-sectors", Usage: "dm-crypt iv_large_sectors for the " + side + " mapping"},
		)
	}
	return fs
}

func convertFlags() []cli.Flag {
	fs := mappingFlags()
	fs = append(fs, keyFlags()...)
	return append(fs,
		&cli.StringFlag{Name: "data-offset", Usage: "`BYTES` from the start of DEVICE to the data (default 0)"},
		&cli.StringFlag{Name: "data-size", Usage: "`BYTES` of data to convert (default: up to the metadata area)"},
		metadataFlag(),
		&cli.StringFlag{Name: "metadata-size", Value: "32M", Usage: "`SIZE` of the metadata area at the end of DEVICE, or of a --metadata file convert creates"},
		&cli.StringFlag{Name: "resilience", Usage: "`MODE` protecting each window while it is rewritten: journal, checksum, shift or none (default journal)"},
		&cli.StringFlag{Name: "window", Usage: "`SIZE` of the unit rewritten at a time (default 8M, 4M with --online; journal takes less when the metadata area is small)"},
		&cli.StringFlag{Name: "shift", Usage: "gap `SIZE` by which --resilience shift moves the data (default: one window)"},
		&cli.BoolFlag{Name: "force", Usage: "do what is otherwise refused (resilience none, data that does not decrypt plausibly)"},
		progressFlag(),
		progressIntervalFlag(),
	)
}

func progressFlag() cli.Flag {
	return &cli.StringFlag{Name: "progress", Value: progressAuto, Usage: "progress display `MODE`: auto, bar, plain, json or none (auto: bar on a terminal, plain lines otherwise and under systemd)"}
}

func progressIntervalFlag() cli.Flag {
	return &cli.DurationFlag{Name: "progress-interval", Value: 5 * time.Second,
		Usage: "`DURATION` between plain progress lines (json: default 1s; 0: after every window)"}
}

// sizeFlag parses a size flag; ok is false when it was not given.
func sizeFlag(c *cli.Context, name string) (n int64, ok bool, err error) {
	if !c.IsSet(name) {
		return 0, false, nil
	}
	n, err = parseSize(c.String(name))
	if err != nil {
		return 0, false, usageErr("--%s: %v", name, err)
	}
	return n, true, nil
}

// side builds one mapping from the flags. What was not given stays unset,
// so that on resume the engine takes the recorded value instead of a
// default that might differ from it.
func side(c *cli.Context, name string) (engine.Side, error) {
	var s engine.Side
	if c.IsSet(name + "-cipher") {
		s.Cipher = c.String(name + "-cipher")
		if s.Cipher == "" {
			return s, usageErr("--%s-cipher: empty cipher spec", name)
		}
	}
	if c.IsSet(name + "-sector-size") {
		s.SectorSize = c.Int(name + "-sector-size")
		if s.SectorSize <= 0 {
			return s, usageErr("--%s-sector-size %d: want 512, 1024, 2048 or 4096", name, s.SectorSize)
		}
	}
	if c.IsSet(name + "-iv-offset") {
		v := c.Uint64(name + "-iv-offset")
		s.IVOffset = &v
	}
	if c.IsSet(name + "-iv-large-sectors") {
		v := c.Bool(name + "-iv-large-sectors")
		s.IVLargeSectors = &v
	}
	key, err := readKeyFile(keyStore(c), name+"-key-file", c.String(name+"-key-file"))
	if err != nil {
		return s, err
	}
	s.Key = key
	return s, nil
}

// keys reads --old-key-file and --new-key-file.
func keys(c *cli.Context) (oldKey, newKey []byte, err error) {
	if oldKey, err = readKeyFile(keyStore(c), "old-key-file", c.String("old-key-file")); err != nil {
		return nil, nil, err
	}
	if newKey, err = readKeyFile(keyStore(c), "new-key-file", c.String("new-key-file")); err != nil {
		return nil, nil, err
	}
	return oldKey, newKey, nil
}

// configFromFlags builds the engine request from convert's flags.
func configFromFlags(c *cli.Context) (engine.Config, error) {
	var cfg engine.Config
	var err error
	if cfg.Old, err = side(c, "old"); err != nil {
		return cfg, err
	}
	if cfg.New, err = side(c, "new"); err != nil {
		return cfg, err
	}
	if n, ok, err := sizeFlag(c, "data-offset"); err != nil {
		return cfg, err
	} else if ok {
		cfg.DataOffset = &n
	}
	if cfg.DataSize, _, err = sizeFlag(c, "data-size"); err != nil {
		return cfg, err
	}
	if cfg.Window, _, err = sizeFlag(c, "window"); err != nil {
		return cfg, err
	}
	if cfg.Shift, _, err = sizeFlag(c, "shift"); err != nil {
		return cfg, err
	}
	if cfg.MetaSize, _, err = sizeFlag(c, "metadata-size"); err != nil {
		return cfg, err
	}
	if c.IsSet("resilience") {
		cfg.Mode = c.String("resilience")
		if cfg.Mode == "" {
			return cfg, usageErr("--resilience: empty mode")
		}
	}
	for name, v := range map[string]int64{"data-size": cfg.DataSize, "window": cfg.Window, "shift": cfg.Shift, "metadata-size": cfg.MetaSize} {
		if c.IsSet(name) && v == 0 {
			return cfg, usageErr("--%s must not be 0", name)
		}
	}
	cfg.Force = c.Bool("force")
	return cfg, nil
}
