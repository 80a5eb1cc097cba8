package online

import (
	"fmt"
	"strings"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
)

// Reactivate brings name, still live after the process converting it died,
// to the table of the recovered conversion h, without unmounting anything.
// A dead process can leave name routing a window to a hold device that is
// suspended with application I/O queued in it (or failing it, after an
// abort). Each such hold device first gets the mapping the disk now holds
// for its range, as recovery left it (new when the window was rolled
// forward, old otherwise), and is resumed, so queued I/O lands under the
// right key; then name swaps to the composite table and the hold devices
// are removed. h must come from recovery (authenticated, nothing in flight).
// The format-neutral crypt options (allow_discards, ...) of name's live
// table, or of its hold devices when name has no crypt target left, are
// kept in every table loaded; options is what to use when none has any
// crypt target.
func Reactivate(name string, h *header.Header, keys Keys, device string, options []string) error {
	return reactivate(sysControl{}, name, h, keys, device, options)
}

func reactivate(ctl control, name string, h *header.Header, keys Keys, device string, options []string) error {
	if h.State == header.StateInProgress {
		return fmt.Errorf("online: reactivate %s: the conversion is marked in progress; run recover first", name)
	}
	if err := dm.CheckNeutralOptions(options); err != nil {
		return fmt.Errorf("online: reactivate %s: %w", name, err)
	}
	l, err := layoutFromHeader(h, keys, device)
	if err != nil {
		return err
	}
	conv := convertedAt(h)
	live, err := ctl.table(name)
	if err != nil {
		return fmt.Errorf("online: reactivate %s: %w", name, err)
	}
	holds := holdNames(name)
	devnos := map[string]string{}
	crypt := false
	all := append([]dm.Target(nil), live...)
	for _, hd := range holds {
		inf, err := ctl.info(hd)
		if err != nil {
			return err
		}
		if inf.Exists {
			devnos[fmt.Sprintf("%d:%d", inf.Major, inf.Minor)] = hd
			if ts, err := ctl.table(hd); err == nil {
				all = append(all, ts...)
			}
		}
	}
	for _, t := range all {
		crypt = crypt || t.Type == "crypt"
	}
	l.extra = options
	if crypt {
		l.extra = dm.TableOptions(all)
	}
	for _, t := range live {
		if t.Type != "linear" {
			continue
		}
		lin, err := dm.ParseLinear(t.Params)
		if err != nil {
			return fmt.Errorf("online: reactivate %s: %w", name, err)
		}
		hd, ok := devnos[lin.Device]
		if !ok {
			continue
		}
		win := span{t.Start, t.Start + t.Length}
		m, base := l.old, l.oldOff
		switch {
		case win.lo >= conv.lo && win.hi <= conv.hi && !conv.empty():
			m, base = l.new, l.newOff
		case win.hi <= conv.lo || win.lo >= conv.hi || conv.empty():
		default:
			return fmt.Errorf("online: reactivate %s: held sectors %d-%d straddle the converted part %d-%d", name, win.lo, win.hi, conv.lo, conv.hi)
		}
		if err := ctl.load(hd, l.windowTable(m, base, win)); err != nil {
			return err
		}
		if err := ctl.resume(hd, dm.NoFlush|dm.SkipLockfs); err != nil {
			return err
		}
	}
	if err := ctl.load(name, l.table(conv, span{}, "")); err != nil {
		return err
	}
	if err := ctl.suspend(name, dm.NoFlush|dm.SkipLockfs); err != nil {
		return err
	}
	if err := ctl.resume(name, dm.NoFlush|dm.SkipLockfs); err != nil {
		return err
	}
	for _, hd := range holds {
		inf, err := ctl.info(hd)
		if err != nil {
			return err
		}
		if !inf.Exists {
			continue
		}
		if inf.Suspended {
			if err := ctl.resume(hd, dm.NoFlush|dm.SkipLockfs); err != nil {
				return err
			}
		}
		if err := ctl.remove(hd); err != nil {
			return fmt.Errorf("online: reactivate %s: remove %s: %w", name, hd, err)
		}
	}
	// A run with kernel crypto also leaves its private devices; they serve
	// nothing, and a dead process no longer holds them open.
	for _, cd := range cryptoNames(name) {
		inf, err := ctl.info(cd)
		if err != nil {
			return err
		}
		if inf.Exists && inf.OpenCount == 0 {
			if err := ctl.remove(cd); err != nil {
				return fmt.Errorf("online: reactivate %s: remove %s: %w", name, cd, err)
			}
		}
	}
	return nil
}

// IsHoldDevice reports whether a device name is one of cryptshift's hold
// or private kernel crypto devices, for listings and audits.
func IsHoldDevice(name string) bool {
	return strings.HasPrefix(name, holdPrefix) && (strings.Contains(name, "-hold") || strings.Contains(name, "-crypt-"))
}

// HoldTables returns the live tables of name's hold devices that exist. A
// dead converting process may have left the only copy of a key in them
// (the old key, while the last window was held); reading a table does no
// I/O, so this works on a suspended device.
func HoldTables(name string) [][]dm.Target {
	var out [][]dm.Target
	for _, hd := range holdNames(name) {
		if inf, err := dm.Info(hd); err != nil || !inf.Exists {
			continue
		}
		if ts, err := dm.Table(hd); err == nil {
			out = append(out, ts)
		}
	}
	return out
}

// removeOrphans removes the hold and private crypto devices of a name that
// no longer exists. A neighbour's `cryptsetup close` mid-conversion leaves
// them behind, holding the backing device, which recovery must then open
// exclusively. Without name nothing routes I/O to them, so nothing queued
// in one can be lost; one that something else still opens is not ours to
// remove, and recovery stops there.
func removeOrphans(ctl control, name string) error {
	holds, cryptos := holdNames(name), cryptoNames(name)
	for _, d := range append(holds[:], cryptos[:]...) {
		inf, err := ctl.info(d)
		if err != nil {
			return fmt.Errorf("online: %s: %w", d, err)
		}
		if !inf.Exists {
			continue
		}
		if inf.OpenCount > 0 {
			return fmt.Errorf("%w: %s does not exist, but cryptshift's device %s for it is still open (%d users); close what uses it, then run this again",
				errclass.Device, name, d, inf.OpenCount)
		}
		if inf.Suspended {
			if err := ctl.resume(d, dm.NoFlush|dm.SkipLockfs); err != nil {
				return fmt.Errorf("online: resume %s: %w", d, err)
			}
		}
		if err := ctl.remove(d); err != nil {
			return fmt.Errorf("online: remove %s (left by the conversion of %s): %w", d, name, err)
		}
	}
	return nil
}
