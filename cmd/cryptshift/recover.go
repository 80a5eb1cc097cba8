package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/online"
)

func recoverCommand(stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "recover",
		Usage:     "finish or roll back the window a crash interrupted, leaving the conversion paused; with --activate or --all, also set up the device-mapper device",
		ArgsUsage: "DEVICE",
		Before:    protectKeys,
		Description: "Needs both keys: recovery state is authenticated with them, so a forged header cannot\n" +
			"make recovery write anything. Running it twice is harmless.\n\n" +
			"--activate NAME creates device-mapper device NAME serving the data with the table that\n" +
			"matches the recorded progress (new mapping over converted windows, old over the rest), so\n" +
			"the filesystem mounts and `convert --online NAME` resumes. Run it at boot before anything\n" +
			"mounts. If NAME is still live (the converting process died), it is brought to that table\n" +
			"in place, and I/O the dead process left waiting is served with the right key.\n\n" +
			"--all does that for every line of the table file (--tab, default " + defaultTab + "):\n" +
			"  NAME  DEVICE  OLD-KEY-FILE  NEW-KEY-FILE  [OPTIONS]\n" +
			"with - as the key file of a plaintext side; OPTIONS, separated by commas, are metadata=PATH\n" +
			"and the --table-options.\n\n" +
			"A live NAME keeps the dm-crypt options of its table (allow_discards, the workqueue\n" +
			"choices); a NAME created after a reboot gets the --table-options, in crypttab's names\n" +
			"(discard, same-cpu-crypt, submit-from-crypt-cpus, no-read-workqueue, no-write-workqueue,\n" +
			"high-priority): the header does not record them.\n\n" +
			"On a LUKS2 volume the keys are --key-file PASSFILE: one passphrase that opens an old and a\n" +
			"new keyslot of the conversion. --activate NAME then creates NAME (or brings a live one in\n" +
			"place) with cryptsetup's device-mapper UUID, and `convert --online NAME` resumes.",
		Flags: append(append([]cli.Flag{metadataFlag(), passFileFlag()}, keyFlags()...),
			&cli.BoolFlag{Name: "accept-damage", Usage: "leave sectors recovery cannot restore as they are (they are listed) so the conversion can go on"},
			&cli.StringFlag{Name: "activate", Usage: "afterwards, set up device-mapper device `NAME` for the recorded progress"},
			&cli.StringFlag{Name: "table-options", Usage: "with --activate, dm-crypt options for a NAME that does not exist, in crypttab's names: `LIST` of discard, same-cpu-crypt, submit-from-crypt-cpus, no-read-workqueue, no-write-workqueue, high-priority"},
			&cli.BoolFlag{Name: "all", Usage: "recover and activate every device listed in the table file (no DEVICE argument)"},
			&cli.StringFlag{Name: "tab", Value: defaultTab, Usage: "table `FILE` for --all"},
			&cli.DurationFlag{Name: "wait", Usage: "with --all, wait up to `DURATION` for each listed device to appear (at boot, udev may still be creating them)"},
		),
		Action: func(c *cli.Context) error {
			// Recovery of one window is short and must not stop half-way:
			// signals are caught (so they cannot kill it) but not acted on.
			in := watchSignals(c.Context, stderr)
			defer in.stop()
			if c.Bool("all") {
				if c.NArg() != 0 || c.IsSet("activate") || c.IsSet("metadata") || c.IsSet("old-key-file") || c.IsSet("new-key-file") || c.IsSet("table-options") {
					return usageErr("recover --all takes everything from --tab: no DEVICE, --activate, --metadata, --table-options or key files")
				}
				return recoverAll(c, c.String("tab"), c.Duration("wait"))
			}
			dev, err := deviceArg(c)
			if err != nil {
				return err
			}
			if decryptRecorded(c.String("metadata")) {
				return recoverDecrypt(c, dev)
			}
			if sig := luksVolume(dev); sig != nil {
				return recoverLUKS(c, dev, sig)
			}
			if c.IsSet("key-file") {
				return usageErr("--key-file is for LUKS volumes; DEVICE has no LUKS header cryptshift converts (give --old-key-file and --new-key-file)")
			}
			opts, err := parseTableOptions(c.String("table-options"))
			if err != nil {
				return err
			}
			if len(opts) > 0 && !c.IsSet("activate") {
				return usageErr("--table-options needs --activate")
			}
			oldKey, newKey, err := keys(c)
			if err != nil {
				return err
			}
			return recoverOne(c, recoverJob{name: c.String("activate"), dev: dev, meta: c.String("metadata"), oldKey: oldKey, newKey: newKey, tableOptions: opts})
		},
	}
}

type recoverJob struct {
	name, dev, meta string // name "" = no activation
	oldKey, newKey  []byte
	tableOptions    []string // dm-crypt names, for a NAME created
}

func recoverOne(c *cli.Context, j recoverJob) error {
	ro := engine.RecoverOptions{AcceptDamage: c.Bool("accept-damage")}
	if j.name != "" {
		return recoverActivate(c, j, ro)
	}
	t, cleanup, err := openTarget(j.dev, j.meta, 0, blockdev.Options{Exclusive: true})
	if err != nil {
		return err
	}
	err = checkSizes(j.dev, j.meta, t)
	if err == nil {
		err = checkKeysGiven("recover", t, j.oldKey, j.newKey)
	}
	if err != nil {
		cleanup(false)
		return err
	}
	ciphers := cipherMaker(cryptoAuto, c.App.ErrWriter)
	res, err := engine.Recover(c.Context, t, j.oldKey, j.newKey, ro, engine.Options{Ciphers: maker(ciphers)})
	closeCiphers(ciphers, c.App.ErrWriter)
	cleanup(false)
	if err != nil {
		return fmt.Errorf("recover %s: %w", j.dev, explainLUKS(j.dev, err))
	}
	printRecovered(c.App.Writer, j.dev, res)
	return nil
}

// recoverActivate is recover --activate NAME: package online recovers and
// sets NAME up (or brings a live NAME to the recorded progress).
func recoverActivate(c *cli.Context, j recoverJob, ro engine.RecoverOptions) error {
	req := online.Request{Name: j.name, Device: j.dev, Metadata: j.meta, TableOptions: j.tableOptions,
		Open: func(o blockdev.Options, _ bool) (engine.Target, func(bool), error) {
			t, cleanup, err := openTarget(j.dev, j.meta, 0, o)
			if err != nil {
				return t, nil, err
			}
			if err := checkKeysGiven("recover", t, j.oldKey, j.newKey); err != nil {
				cleanup(false)
				return t, nil, err
			}
			return t, cleanup, nil
		}}
	rec, err := online.Activate(c.Context, req, j.oldKey, j.newKey, ro)
	if rec == nil {
		return err
	}
	h := rec.Recovered.Header
	printRecovered(c.App.Writer, j.dev, rec.Recovered)
	switch {
	case err != nil:
		return err
	case rec.Reactivated:
		fmt.Fprintf(c.App.Writer, "%s now serves %d of %d windows with the new mapping\n", j.name, h.Done, h.Windows())
	default:
		fmt.Fprintf(c.App.Writer, "Activated %s: %d of %d windows with the new mapping\n", j.name, h.Done, h.Windows())
	}
	return nil
}

func printRecovered(w io.Writer, dev string, res *engine.RecoverResult) {
	if res.Damaged != nil {
		fmt.Fprintf(w, "Damaged (accepted): %v\n", res.Damaged)
	}
	fmt.Fprintf(w, "Recovered %s: %s\n", dev, res.Action)
}

// recoverAll runs recoverOne for every line of the table file and fails if
// any line failed, after trying them all: one bad device must not keep the
// others from coming up at boot.
func recoverAll(c *cli.Context, tab string, wait time.Duration) error {
	entries, err := readTab(tab)
	if err != nil {
		return err
	}
	var first error
	failed := 0
	deadline := time.Now().Add(wait)
	for _, e := range entries {
		for _, p := range []string{e.device, e.metadata} {
			for p != "" && time.Now().Before(deadline) {
				if _, err := os.Stat(p); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		oldKey, err := readTabKey(c, e.oldKeyFile)
		if err == nil {
			var newKey []byte
			if newKey, err = readTabKey(c, e.newKeyFile); err == nil {
				err = recoverOne(c, recoverJob{name: e.name, dev: e.device, meta: e.metadata, oldKey: oldKey, newKey: newKey, tableOptions: e.tableOptions})
			}
		}
		if err != nil {
			failed++
			fmt.Fprintf(c.App.ErrWriter, "cryptshift: %s:%d (%s): %v\n", tab, e.line, e.name, err)
			if first == nil {
				first = err
			}
		}
	}
	if first != nil {
		return fmt.Errorf("recover --all: %d of %d devices failed; the first: %w", failed, len(entries), first)
	}
	fmt.Fprintf(c.App.Writer, "recover --all: %d device(s) ready\n", len(entries))
	return nil
}

func readTabKey(c *cli.Context, path string) ([]byte, error) {
	if path == "-" {
		return nil, nil
	}
	if path == "" {
		return nil, errors.New("no key file")
	}
	return readKeyFile(keyStore(c), "key-file", path)
}
