package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/online"
)

// convertLUKSOnline is convert --online NAME on a LUKS2 volume: package
// online runs it; the passphrases are the keys.
func convertLUKSOnline(ctx context.Context, c *cli.Context, stderr io.Writer, name, dev string, req engine.LUKSRequest, opts engine.Options, hooks online.Hooks, m *meter) error {
	oreq := online.Request{Name: name, Device: dev, Hooks: hooks, KernelCrypto: c.String("crypto") == cryptoKernel,
		Logf: func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }}
	req.BeforeFinal = luksBeforeFinalHook()
	res, err := online.ConvertLUKS2(ctx, oreq, req, opts)
	var er *engine.Result
	if res != nil && res.Engine != nil && res.Engine.Header != nil {
		er = &engine.Result{Header: res.Engine.Header}
	}
	err = reportOutcome(m, er, err)
	if res != nil {
		printStalls(c.App.Writer, res.Stats)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Conversion complete. The LUKS2 volume %s (UUID %s) has a new volume key, and %s serves it; `cryptsetup close %s` and `cryptsetup open` work as before.\n",
		dev, res.Engine.UUID, name, name)
	return nil
}

// healLUKS is healOnline for a LUKS2 volume: the passphrases open both keys.
func healLUKS(c *cli.Context, name, dev string) (string, error) {
	passes, err := readPassFiles(c)
	if err != nil {
		return "", err
	}
	return online.HealLUKS2(c.Context, online.Request{Name: name, Device: dev, Logf: func(f string, a ...any) { fmt.Fprintf(c.App.ErrWriter, f+"\n", a...) }}, passes)
}

// activateLUKS is recover --activate NAME on a LUKS2 volume.
func activateLUKS(c *cli.Context, dev string, passes [][]byte) error {
	opts, err := parseTableOptions(c.String("table-options"))
	if err != nil {
		return err
	}
	name := c.String("activate")
	msg, err := online.ActivateLUKS2(c.Context, online.Request{Name: name, Device: dev, TableOptions: opts,
		Logf: func(f string, a ...any) { fmt.Fprintf(c.App.ErrWriter, f+"\n", a...) }}, passes)
	if err != nil {
		return fmt.Errorf("recover %s: %w", dev, err)
	}
	fmt.Fprintf(c.App.Writer, "Recovered %s: %s\n", dev, msg)
	return nil
}
