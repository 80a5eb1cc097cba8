package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/internal/secret"
	"github.com/cryptshift/cryptshift/luks"
)

// A LUKS1 conversion (docs/DESIGN.md, "LUKS1 conversion") converts the
// data area from the old volume key to a new one with the LUKS1 header
// marked as in conversion (magic LUKS\xde\xad: stock cryptsetup sees no
// LUKS volume), and the header it will switch to kept in the header's
// padding (the conversion record, luks/pending1.go). Its steps:
//
//	start:  mark (luks1-mark); keyslots moved out of the new layout's way
//	        and the new keyslots' material (luks-keyslot-material); the
//	        record (luks1-start-commit). Only then is a window written.
//	final:  sector 0 of the new header, with the normal magic, in one
//	        sector write (luks1-final-switch); every unused sector of the
//	        keyslot area overwritten, the record included
//	        (luks-keyslot-wipe); the tag cleared (luks1-end-commit).

// LUKS1Request is a LUKS1 conversion as the user asked for it: a LUKS2
// request's fields, and, with the metadata at the end of DEVICE, its size
// and how much of the data area holds the user's data.
type LUKS1Request struct {
	LUKSRequest
	// DataSize, when set, is the user's word that the data area's first
	// DataSize bytes hold everything (the metadata at the end goes after
	// them).
	DataSize int64
	MetaSize int64
}

// luks1State is what a LUKS1 header says about a conversion.
type luks1State struct {
	v      *luks.Volume // the header on the device, marked or not
	marked bool         // marked as in conversion by cryptshift
	tagged bool         // cryptshift's tag is in the padding
	next   *luks.Volume // the conversion record's header, if valid
	place  luks.PendingMeta
}

// state names it: "none", "converting" (marked, record written),
// "starting" (marked, no record: the start never committed) or "wiping"
// (the switch is done; the old material may still be on disk).
func (s *luks1State) state() string {
	switch {
	case s.marked && s.next != nil:
		return luksConverting
	case s.marked:
		return "starting"
	case s.tagged || s.next != nil:
		return luksWiping
	}
	return "none"
}

func readLUKS1(dev blockdev.Device) (*luks1State, error) {
	sig, err := luks.Detect(dev, dev.Size())
	if err != nil {
		return nil, err
	}
	if sig == nil || sig.Version != 1 {
		return nil, fmt.Errorf("%w: no LUKS1 header", errclass.Device)
	}
	st := &luks1State{}
	if sig.Reencrypting {
		if !sig.InConversion {
			return nil, fmt.Errorf("%w: the LUKS1 volume is in the middle of a cryptsetup-reencrypt run (magic LUKS\\xde\\xad): finish it with cryptsetup first", errclass.Device)
		}
		st.v, err = luks.OpenMarked(dev, dev.Size())
		st.marked = true
	} else {
		st.v, err = luks.Open(dev, dev.Size())
	}
	if err != nil {
		return nil, err
	}
	if st.tagged, err = st.v.Tagged(); err != nil {
		return nil, err
	}
	if st.next, st.place, err = st.v.PendingLUKS1(); err != nil {
		return nil, err
	}
	if st.next != nil && !st.marked && st.next.V1.Raw != st.v.V1.Raw {
		return nil, fmt.Errorf("%w: the LUKS1 header is neither the one cryptshift's conversion record started from nor the one it switches to: it was changed by another tool", errclass.Header)
	}
	return st, nil
}

// target is where the conversion's metadata lives.
func (s *luks1State) target(dev, meta blockdev.Device) (Target, error) {
	switch {
	case s.place == luks.MetaSeparate && meta == nil:
		return Target{}, fmt.Errorf("%w: this LUKS1 conversion keeps its metadata in a separate file or device: give the --metadata PATH it was started with", errclass.Usage)
	case s.place == luks.MetaAtEnd && meta != nil:
		return Target{}, fmt.Errorf("%w: this LUKS1 conversion keeps its metadata at the end of DEVICE: leave out --metadata", errclass.Usage)
	case meta != nil:
		return Target{Data: dev, Meta: meta}, nil
	}
	return Target{Data: dev, Meta: dev, MetaOnData: true}, nil
}

// haveHeader refuses a target without the conversion's header: the
// record says windows may have been converted, and a fresh conversion
// over them would decrypt converted data with the old key.
func haveHeader(t Target) error {
	s, err := header.ReadStore(t.Meta)
	if err != nil {
		return fmt.Errorf("%w: %w", errclass.Device, err)
	}
	if _, err := s.Current(nil); errors.Is(err, header.ErrNoHeader) || firstCommitTorn(s) {
		where := "at the end of DEVICE"
		if !t.MetaOnData {
			where = "in the --metadata given"
		}
		return fmt.Errorf("%w: the LUKS1 volume is in conversion, but no cryptshift header is %s: wrong --metadata?", errclass.Header, where)
	}
	return nil
}

// unlock1 opens the old key (the marked header's) and the new one (the
// record's) with one of the passphrases.
func (s *luks1State) unlock1(passes [][]byte) (*unlockedKeys, error) {
	if len(passes) == 0 {
		return nil, fmt.Errorf("%w: a passphrase (--key-file) is needed to open both volume keys of the conversion", errclass.Usage)
	}
	var firstErr error
	for _, p := range passes {
		o, err := s.v.Unlock(p, luks.AnySlot)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			continue
		}
		n, err := s.next.Unlock(p, luks.AnySlot)
		if err != nil {
			o.Wipe()
			firstErr = cmpErr(firstErr, err)
			continue
		}
		m, err := s.v.Mapping(o)
		if err != nil {
			o.Wipe()
			n.Wipe()
			return nil, err
		}
		return &unlockedKeys{old: o, new: n, mapping: m}, nil
	}
	if errclass.Code(firstErr) == errclass.ExitWrongKey || firstErr == nil {
		return nil, fmt.Errorf("%w: no passphrase given opens both an old keyslot and a new keyslot of this LUKS1 conversion", errclass.WrongKey)
	}
	return nil, firstErr
}

// ConvertLUKS1 converts a LUKS1 volume to a new volume key (and cipher or
// key size), or resumes or finishes the conversion its header records,
// and at the end switches to the header stock cryptsetup opens with every
// carried passphrase.
func ConvertLUKS1(ctx context.Context, dev blockdev.Device, req LUKS1Request, opts Options) (*LUKSResult, error) {
	st, err := readLUKS1(dev)
	if err != nil {
		return nil, err
	}
	if req.Mode == "shift" {
		return nil, fmt.Errorf("%w: --resilience shift is not supported for LUKS1 volumes (the header records no data offset cryptshift could move): use journal, checksum or none", errclass.Usage)
	}
	if req.NewSectorSize != 0 && req.NewSectorSize != 512 {
		return nil, fmt.Errorf("%w: --new-sector-size %d: LUKS1 volumes have 512-byte sectors only", errclass.Usage, req.NewSectorSize)
	}
	switch st.state() {
	case luksWiping:
		res, err := finishLUKS1(dev, st, nil, opts)
		if err != nil || st.next != nil || finishedHere(dev, req.Meta, req.Passphrases) {
			return res, err
		}
		// A tag without a record is also what a start that crashed
		// before its magic leaves: now cleared, the volume starts afresh.
		if st, err = readLUKS1(dev); err != nil {
			return nil, err
		}
	case luksConverting:
		return resumeLUKS1(ctx, dev, st, req, opts)
	}
	return startLUKS1(ctx, dev, st, req, opts)
}

// finishedHere reports whether the metadata holds a complete conversion
// whose new key is the volume's key now (a passphrase opens it): the
// conversion that just ended, whose last step (the tag) a crash undid.
// Without it, a tag alone means a start that never got further.
func finishedHere(dev, meta blockdev.Device, passes [][]byte) bool {
	t := Target{Data: dev, Meta: dev, MetaOnData: true}
	if meta != nil {
		t = Target{Data: dev, Meta: meta}
	}
	if t.Meta.Size() < 2*header.Size {
		return false
	}
	s, err := header.ReadStore(t.Meta)
	if err != nil {
		return false
	}
	h, err := s.Current(nil)
	if err != nil || h.State != header.StateComplete {
		return false
	}
	v, err := luks.Open(dev, dev.Size())
	if err != nil {
		return false
	}
	for _, p := range passes {
		u, err := v.Unlock(p, luks.AnySlot)
		if err != nil {
			continue
		}
		same := header.KCV(u.Key.Bytes(), h.UUID) == h.NewKCV
		u.Wipe()
		return same
	}
	return false
}

func startLUKS1(ctx context.Context, dev blockdev.Device, st *luks1State, req LUKS1Request, opts Options) (*LUKSResult, error) {
	v := st.v
	if len(req.Passphrases) == 0 {
		return nil, fmt.Errorf("%w: give the passphrase of each active keyslot with --key-file (or --key-slot N and its passphrase)", errclass.Usage)
	}
	if req.Meta != nil && (req.DataSize != 0 || req.MetaSize != 0) {
		return nil, fmt.Errorf("%w: --data-size and --metadata-size are for metadata at the end of DEVICE, not with --metadata", errclass.Usage)
	}
	opened, oldU, err := unlockEach(v, req.Passphrases, req.KeySlot)
	if err != nil {
		return nil, err
	}
	defer oldU.Wipe()
	var carried, erased []int
	for i, k := range v.V1.Keyslots {
		if !k.Enabled() {
			continue
		}
		if _, ok := opened[i]; ok {
			carried = append(carried, i)
		} else {
			erased = append(erased, i)
		}
	}
	if len(erased) > 0 && req.KeySlot == luks.AnySlot {
		return nil, fmt.Errorf("%w: keyslot(s) %s of the LUKS1 volume are active and no passphrase given opens them: give each one's passphrase with --key-file, or --key-slot N to keep only keyslot N (the others are then erased at the end)", errclass.Usage, intList(erased))
	}
	mapping, err := v.Mapping(oldU)
	if err != nil {
		return nil, err
	}
	if err := luks.CheckPendingRoom(v.V1); err != nil {
		return nil, err
	}
	cipher := v.V1.Cipher()
	if req.NewCipher != "" {
		cipher = req.NewCipher
	}
	keyBytes := len(oldU.Key.Bytes())
	if req.NewKeyBytes != 0 {
		keyBytes = req.NewKeyBytes
	}
	newKey, err := secret.New(keyBytes)
	if err != nil {
		return nil, fmt.Errorf("new volume key: %w", err)
	}
	defer newKey.Wipe()
	if _, err := rand.Read(newKey.Bytes()); err != nil {
		return nil, fmt.Errorf("new volume key: %w", err)
	}
	cfg := engineConfig(mapping, oldU.Key.Bytes(), newKey.Bytes(), req.LUKSRequest)
	cfg.New.Cipher, cfg.New.SectorSize = cipher, 512
	if _, err := buildMapping("new", cfg.New); err != nil {
		return nil, fmt.Errorf("%w (a LUKS1 volume's new key size is --new-key-size BITS)", err)
	}
	keep := make([]luks.Carry1, len(carried))
	for i, s := range carried {
		keep[i] = luks.Carry1{Slot: s, Pass: opened[s]}
	}
	params := luks.Relayout1Params{Cipher: cipher, Key: newKey.Bytes(), DigestIterations: max(v.V1.MKDigestIterations, 1000), Keep: keep}
	// Planned now so that every refusal (no room for the new keyslots
	// among the old ones) comes before the first write; planned again
	// once the volume is marked, whose magic the plan records.
	plan, err := luks.PlanRelayout1(v, oldU.Key.Bytes(), params)
	if err != nil {
		return nil, err
	}
	newSlots := plan.Slots
	plan.Wipe()

	t := Target{Data: dev, Meta: dev, MetaOnData: true}
	place := luks.MetaAtEnd
	if req.Meta != nil {
		t, place = Target{Data: dev, Meta: req.Meta}, luks.MetaSeparate
	} else {
		cfg.DataSize, cfg.MetaSize = req.DataSize, req.MetaSize
	}
	if st.marked {
		if err := noProgress(t); err != nil {
			return nil, err
		}
	}
	if err := dropAbandoned(t, oldU.Key.Bytes()); err != nil {
		return nil, err
	}
	if req.Notify != nil {
		msg := fmt.Sprintf("LUKS1 keyslot(s) %s get the new volume key, as keyslot(s) %s", intList(carried), intList(newSlots))
		if len(erased) > 0 {
			msg += fmt.Sprintf("; keyslot(s) %s are erased at the end (--key-slot %d)", intList(erased), req.KeySlot)
		}
		if req.Meta == nil {
			ms := req.MetaSize
			if ms == 0 {
				ms = DefaultMetaSize
			}
			msg += fmt.Sprintf("; cryptshift's metadata goes into the last %s of DEVICE, inside the LUKS1 data area (the filesystem must not use them; else give --metadata PATH)", mib(ms))
		} else {
			msg += "; cryptshift's metadata goes into the --metadata given (a LUKS1 header has no room for it)"
		}
		msg += "; until the conversion completes, stock cryptsetup sees no LUKS volume on DEVICE (magic LUKS\\xde\\xad)"
		req.Notify(msg)
	}
	o := opts
	o.beforeRun = func(bool) error {
		// The conversion's header is durable on the metadata; now the
		// mark, the new keyslots and the record. Only after the record is
		// durable is any window written.
		if err := luks.MarkLUKS1(pointDev{dev, &o, FlushLUKS1Mark}); err != nil {
			return err
		}
		mv, err := luks.OpenMarked(dev, dev.Size())
		if err != nil {
			return err
		}
		p, err := luks.PlanRelayout1(mv, oldU.Key.Bytes(), params)
		if err != nil {
			return err
		}
		defer p.Wipe()
		if err := p.Prepare(pointDev{dev, &o, FlushLUKSKeyslotMaterial}); err != nil {
			return fmt.Errorf("LUKS1 new keyslots: %w", err)
		}
		if err := luks.WritePendingLUKS1(pointDev{dev, &o, FlushLUKS1StartCommit}, p, place); err != nil {
			return fmt.Errorf("LUKS1 start commit: %w", err)
		}
		return nil
	}
	res, err := Convert(ctx, t, cfg, o)
	out := &LUKSResult{UUID: v.UUID}
	if res != nil {
		out.Header = res.Header
	}
	if err != nil {
		return out, err
	}
	if st, err = readLUKS1(dev); err != nil {
		return out, err
	}
	return finishLUKS1(dev, st, res.Header, opts)
}

// dropAbandoned clears the metadata of a start of this volume's current
// key that never wrote its conversion record (the LUKS1 header has none,
// so no window was written): its cryptshift header names a new key that
// is lost. A separate file is zeroed, as for LUKS2; at the end of DEVICE
// only the header copies are, the rest of the area is free again.
func dropAbandoned(t Target, oldKey []byte) error {
	if !t.MetaOnData {
		if abandonedStart(t.Meta, oldKey) {
			return zeroDevice(t.Meta)
		}
		return nil
	}
	if t.Meta.Size() < 2*header.Size || !abandonedStart(t.Meta, oldKey) {
		return nil
	}
	r, err := blockdev.Region(t.Meta, t.Meta.Size()-2*header.Size, 2*header.Size)
	if err != nil {
		return err
	}
	return zeroDevice(r)
}

// noProgress refuses to treat a marked LUKS1 volume without a conversion
// record as a start that never committed when the metadata beside it
// records converted windows of this volume's current key (the header
// read without keys: it can only refuse). The protocol never removes the
// record before the switch, so this is a damaged or edited header, and
// unmarking it would let stock cryptsetup map converted data with the
// old key.
func noProgress(t Target) error {
	if t.Meta.Size() < 2*header.Size {
		return nil
	}
	s, err := header.ReadStore(t.Meta)
	if err != nil {
		return nil
	}
	h, err := s.Current(nil)
	// A complete header may be an earlier, finished conversion's (whose
	// new key is this one's old key): only a conversion under way counts.
	if err != nil || h.State == header.StateComplete || h.State != header.StateInProgress && h.Done == 0 {
		return nil
	}
	return fmt.Errorf("%w: the LUKS1 volume is marked as in conversion without cryptshift's conversion record, but the metadata records a conversion under way (state %s, %d windows done): the header was damaged or edited; refusing to unmark or restart it (restore a header backup, or ask for help)", errclass.Header, h.State, h.Done)
}

func resumeLUKS1(ctx context.Context, dev blockdev.Device, st *luks1State, req LUKS1Request, opts Options) (*LUKSResult, error) {
	t, err := st.target(dev, req.Meta)
	if err != nil {
		return nil, err
	}
	if err := haveHeader(t); err != nil {
		return nil, err
	}
	keys, err := st.unlock1(req.Passphrases)
	if err != nil {
		return nil, err
	}
	defer keys.wipe()
	if n := len(keys.new.Key.Bytes()); req.NewKeyBytes != 0 && req.NewKeyBytes != n {
		return nil, fmt.Errorf("%w: the conversion in progress was started differently: --new-key-size %d (recorded %d)", errclass.Conflict, req.NewKeyBytes*8, n*8)
	}
	cfg := engineConfig(keys.mapping, keys.old.Key.Bytes(), keys.new.Key.Bytes(), req.LUKSRequest)
	cfg.DataSize = 0 // recorded
	res, err := Convert(ctx, t, cfg, opts)
	out := &LUKSResult{UUID: st.v.UUID}
	if res != nil {
		out.Header = res.Header
	}
	if err != nil {
		return out, err
	}
	return finishLUKS1(dev, st, res.Header, opts)
}

// finishLUKS1 makes the switch of a complete conversion (h), or goes on
// after it (h unused): overwrite what the old header used, clear the tag.
func finishLUKS1(dev blockdev.Device, st *luks1State, h *header.Header, opts Options) (*LUKSResult, error) {
	out := &LUKSResult{UUID: st.v.UUID, Header: h, Finished: true}
	if st.state() == luksConverting {
		if h == nil || h.State != header.StateComplete {
			return out, errors.New("engine: LUKS1 switch before the conversion is complete")
		}
		if err := luks.SwitchLUKS1(pointDev{dev, &opts, FlushLUKS1FinalSwitch}, st.next.V1); err != nil {
			return out, fmt.Errorf("LUKS1 final switch: %w", err)
		}
	}
	cur, err := luks.Open(dev, dev.Size())
	if err != nil {
		return out, fmt.Errorf("LUKS1 header after the switch: %w", err)
	}
	if err := luks.WipeLUKS1Unused(pointDev{dev, &opts, FlushLUKSKeyslotWipe}, cur.V1); err != nil {
		return out, err
	}
	if err := luks.UnmarkLUKS1(pointDev{dev, &opts, FlushLUKS1EndCommit}); err != nil {
		return out, fmt.Errorf("LUKS1 end commit: %w", err)
	}
	out.Action = "the LUKS1 header is final: its unused keyslot sectors overwritten (old key material included), cryptshift's tag cleared"
	return out, nil
}

// RecoverLUKS1 brings a LUKS1 volume in conversion to a consistent state:
// a start that never wrote its record is undone (no key needed: the
// volume opens in stock cryptsetup as before), the window a crash
// interrupted is finished (the conversion is then paused), a complete
// conversion is switched, and an interrupted overwrite of the old key
// material is redone (no key needed).
func RecoverLUKS1(ctx context.Context, dev, meta blockdev.Device, passes [][]byte, ro RecoverOptions, opts Options) (*LUKSResult, error) {
	st, err := readLUKS1(dev)
	if err != nil {
		return nil, err
	}
	switch st.state() {
	case "none":
		return nil, fmt.Errorf("%w: the LUKS1 volume records no cryptshift conversion: nothing to recover", errclass.Header)
	case luksWiping:
		return finishLUKS1(dev, st, nil, opts)
	case "starting":
		t := Target{Data: dev, Meta: dev, MetaOnData: true}
		if meta != nil {
			t = Target{Data: dev, Meta: meta}
		}
		if err := noProgress(t); err != nil {
			return nil, err
		}
		if err := luks.AbandonLUKS1(pointDev{dev, &opts, FlushLUKS1Mark}); err != nil {
			return nil, err
		}
		return &LUKSResult{UUID: st.v.UUID, Finished: true,
			Action: "the conversion had not started (no window was written): the LUKS1 volume is unmarked and opens with its old key as before"}, nil
	}
	t, err := st.target(dev, meta)
	if err != nil {
		return nil, err
	}
	if err := haveHeader(t); err != nil {
		return nil, err
	}
	keys, err := st.unlock1(passes)
	if err != nil {
		return nil, err
	}
	defer keys.wipe()
	return recoverThenFinish(ctx, t, keys.old.Key.Bytes(), keys.new.Key.Bytes(), ro, opts, st.v.UUID, func(h *header.Header) (*LUKSResult, error) {
		return finishLUKS1(dev, st, h, opts)
	})
}

// OpenLUKS1 opens the conversion recorded in a LUKS1 header (for verify).
func OpenLUKS1(dev, meta blockdev.Device, passes [][]byte) (*LUKSOpened, error) {
	st, err := readLUKS1(dev)
	if err != nil {
		return nil, err
	}
	if st.state() != luksConverting {
		return nil, fmt.Errorf("%w: the LUKS1 volume has no cryptshift conversion in progress", errclass.Header)
	}
	t, err := st.target(dev, meta)
	if err != nil {
		return nil, err
	}
	if err := haveHeader(t); err != nil {
		return nil, err
	}
	keys, err := st.unlock1(passes)
	if err != nil {
		return nil, err
	}
	return &LUKSOpened{Target: t, OldKey: keys.old.Key.Bytes(), NewKey: keys.new.Key.Bytes(), wipe: keys.wipe}, nil
}

// ReadLUKS1Status reads the status of a LUKS1 volume without keys; meta
// is the separate metadata, if given.
func ReadLUKS1Status(dev, meta blockdev.Device) (*LUKSStatus, error) {
	st, err := readLUKS1(dev)
	if err != nil {
		return nil, err
	}
	out := &LUKSStatus{Version: 1, UUID: st.v.UUID, State: st.state()}
	active := func(h *luks.LUKS1) []int {
		var s []int
		for i, k := range h.Keyslots {
			if k.Enabled() {
				s = append(s, i)
			}
		}
		return s
	}
	if st.state() != luksConverting {
		out.Keyslots = active(st.v.V1)
		return out, nil
	}
	out.Keyslots, out.Erased = active(st.next.V1), active(st.v.V1)
	out.Metadata = "end of device"
	if st.place == luks.MetaSeparate {
		out.Metadata = "separate"
	}
	t, err := st.target(dev, meta)
	if err != nil {
		if errors.Is(err, errclass.Usage) {
			return out, nil // separate metadata not given: progress unknown
		}
		return out, err
	}
	if out.Engine, err = ReadStatus(t); err != nil {
		return out, err
	}
	return out, nil
}
