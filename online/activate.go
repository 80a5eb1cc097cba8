package online

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/internal/kcipher"
)

// Recovery is what Activate did.
type Recovery struct {
	// Recovered is the engine's recovery; nil when it did not run.
	Recovered *engine.RecoverResult
	// Reactivated: Name was live (its converting process died) and was
	// brought to the recorded progress in place; otherwise it was created.
	Reactivated bool
}

// Activate is `recover --activate`: it finishes or rolls back the window a
// crash interrupted, then makes req.Name serve the data with the table the
// recorded progress calls for (new mapping over the done windows, old over
// the rest). A Name that does not exist is created; a live one is brought
// to that table in place (Reactivate), so I/O a dead process left waiting
// is served with the right key. The Recovery is returned even when the
// activation fails after the recovery.
func Activate(ctx context.Context, req Request, oldKey, newKey []byte, ro engine.RecoverOptions) (*Recovery, error) {
	// Checked before recovery writes anything: bad input leaves the
	// device as it was.
	if err := dm.CheckNeutralOptions(req.TableOptions); err != nil {
		return nil, fmt.Errorf("%w: %w", errclass.Usage, err)
	}
	inf, err := dm.Info(req.Name)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errclass.Device, req.Name, err)
	}
	// A live Name holds Device: open it as an online conversion does.
	o := blockdev.Options{Exclusive: true}
	if inf.Exists {
		o = blockdev.Options{Direct: true}
	}
	unlock, err := Lock(req.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if !inf.Exists {
		if err := removeOrphans(sysControl{}, req.Name); err != nil {
			return nil, err
		}
	}
	t, cleanup, err := req.open(o, false)
	if err != nil {
		return nil, err
	}
	// A spec without a userspace cipher is run by the kernel.
	km := &kcipher.Maker{Logf: req.logf}
	res, err := engine.Recover(ctx, t, oldKey, newKey, ro, engine.Options{Ciphers: km.Make})
	if cerr := km.Close(); cerr != nil {
		req.logf("cryptshift: warning: removing the kernel cipher devices: %v", cerr)
	}
	// Device-mapper cannot claim Device for Name while it is open
	// exclusively here; the lock on Name still keeps other runs out.
	cleanup(false)
	if err != nil {
		return nil, fmt.Errorf("recover %s: %w", req.Device, err)
	}
	rec := &Recovery{Recovered: res, Reactivated: inf.Exists}
	keys := Keys{Old: oldKey, New: newKey}
	if inf.Exists {
		devno, err := dm.DevNo(req.Device)
		if err != nil {
			return rec, fmt.Errorf("%w: %w", errclass.Device, err)
		}
		if err := Reactivate(req.Name, res.Header, keys, devno, req.TableOptions); err != nil {
			return rec, fmt.Errorf("%w: reactivate %s: %w", errclass.Device, req.Name, err)
		}
		return rec, nil
	}
	if err := activateRecovered(req.Name, req.dmUUID, res.Header, keys, req.Device, req.TableOptions); err != nil {
		return rec, fmt.Errorf("%w: activate %s: %w", errclass.Device, req.Name, err)
	}
	return rec, nil
}

// Heal is Activate for a conversion whose process was just killed, with
// the keys found as a resume finds them: in cfg (the key files), in Name's
// live table, in the tables of its hold devices (the last window's old key
// may be only there) and in NewLike's table. It reports what it did in one
// sentence.
func Heal(ctx context.Context, req Request, cfg engine.Config) (string, error) {
	unlock, err := Lock(req.Name)
	if err != nil {
		return "", err
	}
	t, cleanup, err := req.open(blockdev.Options{Direct: true}, false)
	if err != nil {
		unlock()
		return "", err
	}
	_, serr := engine.ReadStatus(t)
	live, lerr := dm.Table(req.Name)
	if serr == nil && lerr == nil {
		for _, h := range HoldTables(req.Name) {
			live = append(live, h...)
		}
		_, err = fillFromTable(&cfg, live, t, req.NewLike)
	}
	cleanup(false)
	unlock()
	switch {
	case errors.Is(serr, errclass.Header):
		// Killed before the first header: nothing was held or written.
		return fmt.Sprintf("no conversion was recorded yet; %s is unchanged", req.Name), nil
	case serr != nil:
		return "", serr
	case lerr != nil:
		return "", lerr
	case err != nil:
		return "", err
	}
	rec, err := Activate(ctx, req, cfg.Old.Key, cfg.New.Key, engine.RecoverOptions{})
	if err != nil {
		return "", err
	}
	removeDeadKernelCiphers(req.logf)
	h := rec.Recovered.Header
	return fmt.Sprintf("%s is recovered and serves the data with the recorded progress (%d of %d windows converted; recovery: %s)", req.Name, h.Done, h.Windows(), rec.Recovered.Action), nil
}

// removeDeadKernelCiphers removes the kernel cipher devices (kcipher) that
// a killed process left: a live process holds each of its own open
// (exclusively) for as long as it runs, so one nobody opens serves no one.
// Their memory-backed loop devices detach by themselves once the table is
// gone. A failure here leaves a device, never data, behind: it is logged.
func removeDeadKernelCiphers(logf func(string, ...any)) {
	names, err := dm.List()
	if err != nil {
		return
	}
	for _, n := range names {
		if !strings.HasPrefix(n, kcipher.Prefix) {
			continue
		}
		if inf, err := dm.Info(n); err != nil || !inf.Exists || inf.OpenCount > 0 {
			continue
		}
		if err := dm.Remove(n); err != nil && logf != nil {
			logf("cryptshift: warning: could not remove %s, left by the killed process: %v", n, err)
		}
	}
}
