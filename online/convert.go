package online

import (
	"context"
	"errors"
	"fmt"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// Result is what an online conversion did.
type Result struct {
	// Engine is the engine's result; nil when the conversion was refused
	// before the engine ran.
	Engine *engine.Result
	// Stats are how long application I/O waited, per window held.
	Stats []WindowStat
	// AlreadyComplete: the recorded conversion was complete before this
	// run, so Name was left as it was.
	AlreadyComplete bool
}

// Convert runs the online conversion req asks for, with cfg as the
// command line gives it (completed from the live tables) and opts for the
// engine (its Holder and Crypto are set here). In order: Name is checked
// to be served from Device and locked; the old mapping (or, resuming, the
// keys) come from its live table; the engine converts with a holder that
// builds Name's tables from the authenticated header; at the end Name
// serves the whole device with the new mapping as one target, or, when
// paused or stopped, exactly the table recovery would build.
func Convert(ctx context.Context, req Request, cfg engine.Config, opts engine.Options) (*Result, error) {
	if leftHolds(sysControl{}, req.Name) {
		// An earlier run stopped (a neighbour's change, an abort) or died
		// with Name still routed through its hold devices. Bring Name to
		// the table of the recorded progress first, as `recover
		// --activate` would, so that "the same command" continues.
		msg, err := Heal(ctx, req, cfg)
		if err != nil {
			return nil, fmt.Errorf("online: %s is still routed through the hold devices of an earlier run: %w", req.Name, err)
		}
		req.logf("cryptshift: %s", msg)
	}
	t, live, cleanup, err := openTarget(req, true)
	if err != nil {
		return nil, err
	}
	destOff, err := fillFromTable(&cfg, live, t, req.NewLike)
	if err != nil {
		cleanup(false)
		return nil, err
	}
	h := &holder{name: req.Name, destOff: destOff, logf: req.logf, hooks: req.Hooks}
	defer h.close()
	opts.Holder = h
	opts.Crypto = nil
	if req.KernelCrypto || req.AutoKernelCrypto && kernelOnly(cfg) {
		opts.Crypto = h
	}
	res, err := engine.Convert(ctx, t, cfg, opts)
	h.closeCrypto()
	cleanup(err != nil && !errors.Is(err, errclass.Paused))
	out := &Result{Engine: res}
	if h.o == nil {
		// Begin never ran: refused, or complete before this run.
		out.AlreadyComplete = err == nil
		return out, err
	}
	out.Stats = h.o.Stats()
	if err != nil {
		// Paused or stopped between windows: leave Name with exactly the
		// table recovery would build. After an abort this refuses, and
		// the window stays failed until `recover --activate`.
		if serr := h.o.Settle(); serr != nil {
			req.logf("cryptshift: %s keeps its current table: %v", req.Name, serr)
		}
		return out, err
	}
	return out, finish(req, h.o)
}

// finish serves the whole device with the new mapping as one target, and
// removes NewLike's device, which served the same data with it.
func finish(req Request, o *Online) error {
	if err := o.Finish(); err != nil {
		return fmt.Errorf("%w: the data is converted, but %s could not be switched to a single new target: %w (run `cryptshift recover --activate`)", errclass.Device, req.Name, err)
	}
	if req.NewLike != "" {
		if err := dm.Remove(req.NewLike); err != nil {
			req.logf("cryptshift: warning: could not remove %s: %v", req.NewLike, err)
		}
	}
	return nil
}

// leftHolds reports whether a hold device of name exists: only a stopped or
// dead run leaves one behind.
func leftHolds(ctl control, name string) bool {
	for _, hd := range holdNames(name) {
		if inf, err := ctl.info(hd); err == nil && inf.Exists {
			return true
		}
	}
	return false
}

// kernelOnly reports whether a side of cfg (completed from the live table
// and, resuming, the record) has no userspace cipher.
func kernelOnly(cfg engine.Config) bool {
	for _, c := range []string{cfg.Old.Cipher, cfg.New.Cipher} {
		if sp, err := sectorcipher.ParseKernelSpec(c); err == nil && sp.KernelOnly() {
			return true
		}
	}
	return false
}
