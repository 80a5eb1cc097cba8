package online

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
)

// An online LUKS2 conversion (docs/DESIGN.md, "Online LUKS2 conversion")
// is engine.ConvertLUKS2 with the holder of a plain online conversion. The
// live table stock cryptsetup made names the volume key in the kernel
// keyring, where no process can read it back; the key comes from a
// keyslot instead, and the table is first swapped for the same mapping
// with the key written out, which is what the holder's tables (and
// recovery's) are built from.

// LUKSResult is what an online LUKS2 conversion did.
type LUKSResult struct {
	Engine *engine.LUKSResult
	Stats  []WindowStat
}

// LUKSUUID is the device-mapper UUID stock cryptsetup gives a LUKS2
// mapping; an activation by cryptshift gives NAME the same, so that
// cryptsetup and systemd-cryptsetup take it for the volume's own.
func LUKSUUID(uuid, name string) string {
	return "CRYPT-LUKS2-" + strings.ReplaceAll(uuid, "-", "") + "-" + name
}

// openLUKS opens req.Device as an online conversion does: O_DIRECT and not
// exclusively, since device-mapper holds it.
func openLUKS(req Request) (*blockdev.File, error) {
	f, err := blockdev.Open(req.Device, blockdev.Options{Direct: true})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errclass.Device, err)
	}
	return f, nil
}

// luksRequest is req with the conversion's metadata found from the LUKS2
// header (the reserved area), for Activate.
func luksRequest(req Request, uuid string) Request {
	req.Open = func(o blockdev.Options, _ bool) (engine.Target, func(bool), error) {
		f, err := blockdev.Open(req.Device, o)
		if err != nil {
			return engine.Target{}, nil, fmt.Errorf("%w: %w", errclass.Device, err)
		}
		t, err := engine.LUKS2Target(f, nil)
		if err != nil {
			f.Close()
			return engine.Target{}, nil, err
		}
		return t, func(bool) { f.Close() }, nil
	}
	req.dmUUID = LUKSUUID(uuid, req.Name)
	return req
}

// servedFrom checks that every target of live reads from devno (a linear
// target onto one of name's hold devices, left by a killed run, aside).
func servedFrom(name string, live []dm.Target, devno string) error {
	if len(live) == 0 {
		return fmt.Errorf("%w: --online %s has no live table", errclass.Device, name)
	}
	holds := map[string]bool{}
	for _, hd := range holdNames(name) {
		if inf, err := dm.Info(hd); err == nil && inf.Exists {
			holds[fmt.Sprintf("%d:%d", inf.Major, inf.Minor)] = true
		}
	}
	for _, t := range live {
		var from string
		switch t.Type {
		case "crypt":
			c, err := dm.ParseCrypt(t.Params)
			if err != nil {
				return fmt.Errorf("%w: --online %s: %w", errclass.Device, name, err)
			}
			from = c.Device
		case "linear":
			l, err := dm.ParseLinear(t.Params)
			if err != nil {
				return fmt.Errorf("%w: --online %s: %w", errclass.Device, name, err)
			}
			if holds[l.Device] {
				continue
			}
			from = l.Device
		default:
			return fmt.Errorf("%w: --online %s has a %s target: not a LUKS2 mapping", errclass.Device, name, t.Type)
		}
		if from != devno {
			return fmt.Errorf("%w: --online %s is served from %s, not from the LUKS2 volume (%s)", errclass.Device, name, from, devno)
		}
	}
	return nil
}

// keyedTable checks that live, the single target stock cryptsetup made for
// the volume, maps exactly what the header's segment says with the key a
// keyslot gave (cipher, offset, IV offset, sector size, size; the key
// itself when the table holds it, its size and the volume's keyring
// description when it names a keyring key), and returns the same table
// with the key written out.
func keyedTable(name string, live []dm.Target, l *engine.LUKSLive) ([]dm.Target, error) {
	if len(live) != 1 || live[0].Type != "crypt" {
		return nil, fmt.Errorf("%w: --online %s has %d targets and the LUKS2 volume records no conversion: want the single crypt target of `cryptsetup open`", errclass.Device, name, len(live))
	}
	c, err := dm.ParseCrypt(live[0].Params)
	if err != nil {
		return nil, fmt.Errorf("%w: --online %s: %w", errclass.Device, name, err)
	}
	key := l.Mapping.Key
	// The layout first, with a stand-in key of the table's own length:
	// a table of another cipher is refused as such, whatever its key.
	n := len(c.Key)
	if c.KeyRef != "" {
		n, _ = strconv.Atoi(strings.SplitN(c.KeyRef[1:], ":", 2)[0])
	}
	probe := c
	probe.KeyRef, probe.Key = "", make([]byte, n)
	m, err := probe.Mapping()
	if err != nil {
		return nil, fmt.Errorf("%w: --online %s: %w", errclass.Conflict, name, err)
	}
	if m.Spec != l.Mapping.Spec || m.SectorSize != l.Mapping.SectorSize || m.IVOffset != l.Mapping.IVOffset || m.IVLargeSectors != l.Mapping.IVLargeSectors ||
		int64(c.Offset)*512 != l.Offset || int64(live[0].Length)*512 != l.Size || live[0].Start != 0 {
		return nil, fmt.Errorf("%w: --online %s maps %s (sector size %d, IV offset %d) from byte %d, %d bytes; the LUKS2 header says %s (sector size %d, IV offset %d) from byte %d, %d bytes",
			errclass.Conflict, name, m.Spec, m.SectorSize, m.IVOffset, int64(c.Offset)*512, int64(live[0].Length)*512,
			l.Mapping.Spec, l.Mapping.SectorSize, l.Mapping.IVOffset, l.Offset, l.Size)
	}
	switch {
	case c.KeyRef != "":
		// cryptsetup's description is "cryptsetup:<UUID>-d<digest>".
		desc := strings.SplitN(c.KeyRef[1:], ":", 3)[2]
		want := "cryptsetup:" + l.UUID + "-d" + strconv.Itoa(l.Digest)
		if n != len(key) || desc != want {
			return nil, fmt.Errorf("%w: --online %s names keyring key %s, but the LUKS2 volume's %d-byte key of digest %d would be %s", errclass.WrongKey, name, c.KeyRef, len(key), l.Digest, want)
		}
	case n != len(key) || !equal(c.Key, key):
		return nil, fmt.Errorf("%w: the key in --online %s's table is not the LUKS2 volume key the passphrase opens", errclass.WrongKey, name)
	}
	c.KeyRef, c.Key = "", append([]byte(nil), key...)
	return []dm.Target{{Start: 0, Length: live[0].Length, Type: "crypt", Params: c.Params()}}, nil
}

func equal(a, b []byte) bool {
	v := byte(0)
	for i := range a {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// swap replaces name's table. Both tables map every sector the same way,
// so I/O requeued from the old table (noflush) is served alike.
func swap(ctl control, name string, table []dm.Target) error {
	if err := ctl.load(name, table); err != nil {
		return err
	}
	if err := ctl.suspend(name, dm.NoFlush|dm.SkipLockfs); err != nil {
		return err
	}
	return ctl.resume(name, dm.NoFlush|dm.SkipLockfs)
}

// ConvertLUKS2 converts the LUKS2 volume req.Device while req.Name, its
// mapping, serves it (and may be mounted), or resumes that conversion, and
// leaves req.Name serving the new volume key as one target.
func ConvertLUKS2(ctx context.Context, req Request, lreq engine.LUKSRequest, opts engine.Options) (*LUKSResult, error) {
	if req.Metadata != "" {
		return nil, fmt.Errorf("%w: an online LUKS2 conversion keeps its metadata in the LUKS2 keyslots area: leave out --metadata", errclass.Usage)
	}
	if leftHolds(sysControl{}, req.Name) {
		msg, err := HealLUKS2(ctx, req, lreq.Passphrases)
		if err != nil {
			return nil, fmt.Errorf("online: %s is still routed through the hold devices of an earlier run: %w", req.Name, err)
		}
		req.logf("cryptshift: %s", msg)
	}
	devno, err := dm.DevNo(req.Device)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errclass.Device, err)
	}
	live, err := dm.Table(req.Name)
	if err != nil {
		return nil, fmt.Errorf("%w: --online %s: %w", errclass.Device, req.Name, err)
	}
	if err := servedFrom(req.Name, live, devno); err != nil {
		return nil, err
	}
	unlock, err := Lock(req.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	dev, err := openLUKS(req)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	vol, err := engine.OpenLUKS2Live(dev, nil, lreq.Passphrases)
	if err != nil {
		return nil, err
	}
	swapped := false
	if vol.State == "none" {
		keyed, err := keyedTable(req.Name, live, vol)
		vol.Close()
		if err != nil {
			return nil, err
		}
		if err := swap(sysControl{}, req.Name, keyed); err != nil {
			return nil, fmt.Errorf("%w: %s: the same mapping with the key in the table: %w", errclass.Device, req.Name, err)
		}
		swapped = true
	} else {
		vol.Close()
	}
	h := &holder{name: req.Name, logf: req.logf, hooks: req.Hooks}
	defer h.close()
	opts.Holder = h
	opts.Crypto = nil
	if req.KernelCrypto {
		opts.Crypto = h
	}
	lreq.Meta = nil
	after := lreq.BeforeFinal
	lreq.BeforeFinal = func() error {
		// Name moves to the new key before the final commit: a crash
		// after that commit then finds Name already as it must stay.
		if h.o != nil {
			if err := h.o.Finish(); err != nil {
				return fmt.Errorf("%w: the data is converted, but %s could not be switched to a single new target: %w (run `cryptshift recover --activate`)", errclass.Device, req.Name, err)
			}
		}
		if after != nil {
			return after()
		}
		return nil
	}
	res, err := engine.ConvertLUKS2(ctx, dev, lreq, opts)
	h.closeCrypto()
	out := &LUKSResult{Engine: res}
	if h.o != nil {
		out.Stats = h.o.Stats()
	}
	if err != nil {
		switch {
		case h.o != nil:
			if serr := h.o.Settle(); serr != nil {
				req.logf("cryptshift: %s keeps its current table: %v", req.Name, serr)
			}
		case swapped:
			// Refused before anything was written: give Name back the
			// table cryptsetup made.
			if rerr := swap(sysControl{}, req.Name, live); rerr != nil {
				req.logf("cryptshift: %s keeps the same mapping with the key in its table: %v", req.Name, rerr)
			}
		}
		return out, err
	}
	if h.o == nil {
		// Complete before this run (a crash after Name's switch): Name
		// must serve the new key already.
		if err := servesCurrentKey(req, dev, devno, lreq.Passphrases); err != nil {
			return out, err
		}
	}
	return out, nil
}

// servesCurrentKey makes sure Name serves the LUKS2 segment, as the header
// now maps it, as one target: a run that finished the final commits after
// Name's switch finds it so; a table that serves any sector otherwise is
// refused.
func servesCurrentKey(req Request, dev blockdev.Device, devno string, passes [][]byte) error {
	vol, err := engine.OpenLUKS2Live(dev, nil, passes)
	if err != nil {
		return err
	}
	defer vol.Close()
	if vol.State != "none" {
		return fmt.Errorf("%w: the LUKS2 conversion is not finished (%s)", errclass.Header, vol.State)
	}
	live, err := dm.Table(req.Name)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", errclass.Device, req.Name, err)
	}
	l, err := wholeLayout(live, devno, vol)
	if err != nil {
		return fmt.Errorf("%w: the LUKS2 volume is converted, but %s does not serve its new key everywhere (%v): run `cryptshift recover --activate %s` after closing it", errclass.Device, req.Name, err, req.Name)
	}
	if len(live) == 1 {
		return nil
	}
	return swap(sysControl{}, req.Name, l.table(span{0, l.size}, span{}, ""))
}

// wholeLayout checks that every target of live serves vol's segment with
// its key at its place, and returns the layout of one such target.
func wholeLayout(live []dm.Target, devno string, vol *engine.LUKSLive) (*layout, error) {
	l := &layout{dev: devno, oldOff: uint64(vol.Offset) / 512, newOff: uint64(vol.Offset) / 512, size: uint64(vol.Size) / 512,
		old: vol.Mapping, new: vol.Mapping, extra: dm.TableOptions(live)}
	if dm.Size(live) != l.size {
		return nil, fmt.Errorf("the table has %d sectors, the segment %d", dm.Size(live), l.size)
	}
	for _, t := range live {
		k, err := l.classify(t)
		if err != nil {
			return nil, fmt.Errorf("target at sector %d: %w", t.Start, err)
		}
		if k < 0 {
			return nil, fmt.Errorf("target at sector %d serves another mapping", t.Start)
		}
	}
	return l, nil
}

// HealLUKS2 is Heal for a LUKS2 volume: the keys come from its keyslots.
func HealLUKS2(ctx context.Context, req Request, passes [][]byte) (string, error) {
	rec, err := ActivateLUKS2(ctx, req, passes)
	if err != nil {
		return "", err
	}
	removeDeadKernelCiphers(req.logf)
	return rec, nil
}

// ActivateLUKS2 is `recover --activate NAME` for a LUKS2 volume: a
// conversion in progress is recovered and NAME created (or, live, brought
// in place) with the table of the recorded progress; one past its final
// commit gets its end commits, and NAME (if absent) the new key as one
// target. It reports what it did in one sentence.
func ActivateLUKS2(ctx context.Context, req Request, passes [][]byte) (string, error) {
	unlock, err := Lock(req.Name)
	if err != nil {
		return "", err
	}
	dev, err := openLUKS(req)
	if err != nil {
		unlock()
		return "", err
	}
	vol, err := engine.OpenLUKS2Live(dev, nil, passes)
	dev.Close()
	unlock()
	if err != nil {
		return "", err
	}
	defer vol.Close()
	if vol.State == "converting" {
		rec, err := Activate(ctx, luksRequest(req, vol.UUID), vol.OldKey, vol.NewKey, engine.RecoverOptions{})
		if err != nil {
			return "", err
		}
		h := rec.Recovered.Header
		msg := fmt.Sprintf("%s serves the LUKS2 volume with the recorded progress (%d of %d windows converted; recovery: %s)", req.Name, h.Done, h.Windows(), rec.Recovered.Action)
		if h.State == header.StateComplete {
			msg += "; the same convert command makes the final LUKS2 commits"
		}
		return msg, nil
	}
	return activateDone(ctx, req, vol, passes)
}

// activateDone handles a volume past its final commit: the end commits
// need no key, and the header maps the new key for every sector.
func activateDone(ctx context.Context, req Request, vol *engine.LUKSLive, passes [][]byte) (string, error) {
	unlock, err := Lock(req.Name)
	if err != nil {
		return "", err
	}
	defer unlock()
	if err := removeIdleHolds(sysControl{}, req.Name); err != nil {
		return "", err
	}
	msg := "the LUKS2 volume records no conversion"
	if vol.State == "wiping" {
		f, err := blockdev.Open(req.Device, blockdev.Options{Direct: true})
		if err != nil {
			return "", fmt.Errorf("%w: %w", errclass.Device, err)
		}
		res, err := engine.RecoverLUKS2(ctx, f, nil, passes, engine.RecoverOptions{}, engine.Options{})
		f.Close()
		if err != nil {
			return "", err
		}
		msg = res.Action
	}
	inf, err := dm.Info(req.Name)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", errclass.Device, req.Name, err)
	}
	if inf.Exists {
		return msg + "; " + req.Name + " is left as it is", nil
	}
	devno, err := dm.DevNo(req.Device)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errclass.Device, err)
	}
	if err := dm.CheckNeutralOptions(req.TableOptions); err != nil {
		return "", fmt.Errorf("%w: %w", errclass.Usage, err)
	}
	t := dm.MappingTarget(vol.Mapping, devno, uint64(vol.Offset)/512, 0, uint64(vol.Size)/512, req.TableOptions)
	if err := (sysControl{}).create(req.Name, LUKSUUID(vol.UUID, req.Name), []dm.Target{t}); err != nil {
		return "", fmt.Errorf("%w: activate %s: %w", errclass.Device, req.Name, err)
	}
	return msg + "; " + req.Name + " serves the new volume key", nil
}

// removeIdleHolds removes hold devices of name that no one opens: a run
// killed while switching name to its last table leaves them unused.
func removeIdleHolds(ctl control, name string) error {
	for _, hd := range holdNames(name) {
		inf, err := ctl.info(hd)
		if err != nil || !inf.Exists {
			continue
		}
		if inf.OpenCount > 0 {
			return fmt.Errorf("%w: hold device %s of %s is still in use, though the LUKS2 conversion is past its final commit", errclass.Device, hd, name)
		}
		if err := ctl.remove(hd); err != nil {
			return err
		}
	}
	return nil
}
