package main

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/online"
)

// onlineRequest is the online.Request the flags describe for NAME over
// DEVICE: package online runs the conversion, recovery and activation;
// the command line only decides how files are opened and where messages go.
func onlineRequest(c *cli.Context, stderr io.Writer, name, dev string, createMeta int64, cfg engine.Config) online.Request {
	meta := c.String("metadata")
	return online.Request{
		Name: name, Device: dev, Metadata: meta, NewLike: c.String("new-like"),
		Open: func(o blockdev.Options, create bool) (engine.Target, func(bool), error) {
			size := int64(0)
			if create {
				size = createMeta
			}
			t, cleanup, err := openTarget(dev, meta, size, o)
			if err != nil {
				return t, nil, err
			}
			if err := checkTarget(dev, meta, cfg, t); err != nil {
				cleanup(true) // removes only a metadata file this run created
				return t, nil, err
			}
			// A metadata file that never received a header (refused,
			// wrong key) is removed, so that retrying with corrected
			// flags starts clean.
			return t, func(failed bool) { cleanup(failed && !hasHeader(t.Meta)) }, nil
		},
		Logf: func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) },
	}
}

// printStalls reports how long application I/O waited, per window held and
// per table swap: the cost the online mode puts on the application.
func printStalls(w io.Writer, stats []online.WindowStat) {
	if len(stats) == 0 {
		return
	}
	held := make([]time.Duration, len(stats))
	swap := make([]time.Duration, len(stats))
	for i, s := range stats {
		held[i], swap[i] = s.Held, s.Swap
	}
	slices.Sort(held)
	slices.Sort(swap)
	fmt.Fprintf(w, "I/O to the window being converted waited at most %v per window (median %v); all I/O waited at most %v per table swap (median %v)\n",
		held[len(held)-1].Round(time.Millisecond), held[len(held)/2].Round(time.Millisecond),
		swap[len(swap)-1].Round(time.Millisecond), swap[len(swap)/2].Round(time.Millisecond))
}

func onlineFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "online", Usage: "convert while device-mapper device `NAME` serves DEVICE's data (and may be mounted); its live table gives the old mapping"},
		&cli.StringFlag{Name: "crypto", Value: cryptoAuto, Usage: "`ENGINE` that encrypts and decrypts: auto (userspace where cryptshift has the cipher, the kernel otherwise), userspace (cryptshift's own ciphers) or kernel (the kernel's dm-crypt through private devices, for any spec it accepts)"},
		&cli.StringFlag{Name: "new-like", Usage: "with --online: take the new mapping from the live table of device-mapper device `DEST` over DEVICE; DEST is removed at the end"},
	}
}
