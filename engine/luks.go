package engine

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/internal/secret"
	"github.com/cryptshift/cryptshift/luks"
)

// A LUKS2 conversion (docs/DESIGN.md, "LUKS2 conversion") is a conversion
// of the volume's data segment from the old volume key to a new one, with
// three LUKS2 header commits around it:
//
//	start: the new key's digest and one keyslot per carried passphrase,
//	       the area holding cryptshift's metadata reserved, a token
//	       recording the conversion, and LUKSRequirement, which makes stock
//	       cryptsetup refuse to activate the volume while its data are
//	       under two keys;
//	final: the segment handed to the new key (new cipher and sector size),
//	       the old keyslots and the reservation removed, the requirement
//	       dropped, the token now listing the areas to overwrite;
//	end:   after those areas are overwritten, the token removed.
const (
	// LUKSRequirement is the mandatory requirement a conversion sets.
	LUKSRequirement = "cryptshift-reencrypt"
	// luksMark is the type of the reserved keyslot and of the token.
	luksMark = "cryptshift"
)

// luksToken is the JSON of the token recording a conversion.
type luksToken struct {
	Type      string     `json:"type"`
	Keyslots  []string   `json:"keyslots"`
	State     string     `json:"state"` // luksConverting or luksWiping
	OldDigest string     `json:"old_digest,omitempty"`
	NewDigest string     `json:"new_digest,omitempty"`
	Reserved  string     `json:"reserved_keyslot,omitempty"` // "": metadata elsewhere (--metadata)
	Areas     []luksArea `json:"areas,omitempty"`
}

type luksArea struct {
	Offset string `json:"offset"`
	Size   string `json:"size"`
}

const (
	luksConverting = "converting"
	luksWiping     = "wiping"
)

// LUKSRequest is a LUKS2 conversion as the user asked for it.
type LUKSRequest struct {
	// Passphrases, one per keyslot to carry over.
	Passphrases [][]byte
	// KeySlot, unless luks.AnySlot, is the only keyslot to carry over;
	// the others are erased at the end.
	KeySlot       int
	NewCipher     string // "" = the segment's
	NewKeyBytes   int    // 0 = the old key's length
	NewSectorSize int    // 0 = the segment's
	Mode          string
	Window        int64
	Force         bool
	// Meta, when set, holds cryptshift's metadata instead of an area
	// reserved in the LUKS2 keyslots area.
	Meta blockdev.Device
	// Notify is told, before the first write, what will happen to the
	// keyslots.
	Notify func(string)
	// BeforeFinal, when set, runs once every window is durable and before
	// the final commit (online: the device-mapper device is switched to
	// the new key first, so that no table of the old key outlives it).
	BeforeFinal func() error
}

// LUKSResult is what a LUKS2 conversion or recovery ended with.
type LUKSResult struct {
	UUID   string
	Header *header.Header // the conversion's header, when there was one
	// Finished: the final commits are done; stock cryptsetup opens the
	// volume with the new key.
	Finished bool
	Action   string
}

// luksState is what the LUKS2 header says about a conversion.
type luksState struct {
	v        *luks.Volume
	tokenID  int
	tok      *luksToken // nil: no conversion recorded
	required bool       // LUKSRequirement is set
}

func readLUKS(dev blockdev.Device) (*luksState, error) {
	v, err := luks.Open(dev, dev.Size())
	if err != nil {
		return nil, err
	}
	if v.V2 == nil {
		return nil, fmt.Errorf("%w: %s volumes are not converted by cryptshift yet (LUKS2 only)", errclass.Device, "LUKS1")
	}
	st := &luksState{v: v, tokenID: -1}
	for _, r := range v.Requirements() {
		st.required = st.required || r == LUKSRequirement
	}
	for id, t := range v.V2.Meta.Tokens {
		if t.Type != luksMark {
			continue
		}
		var tok luksToken
		if err := json.Unmarshal(t.Raw, &tok); err != nil || (tok.State != luksConverting && tok.State != luksWiping) {
			return nil, fmt.Errorf("%w: LUKS2 token %d of type %q is not a cryptshift conversion record", errclass.Header, id, luksMark)
		}
		st.tokenID, st.tok = id, &tok
	}
	if st.required && (st.tok == nil || st.tok.State != luksConverting) {
		return nil, fmt.Errorf("%w: the LUKS2 header carries %s but no conversion record (token); a cryptshift decryption keeps its record on --metadata only, so give the PATH it was started with (else the header was edited by something other than cryptshift)", errclass.Header, LUKSRequirement)
	}
	for _, r := range v.UnknownRequirements() {
		if r != LUKSRequirement {
			return nil, fmt.Errorf("%w: the LUKS2 header has a requirement neither cryptsetup 2.6 nor cryptshift knows (%s): refusing to touch it", errclass.Device, r)
		}
	}
	return st, nil
}

// pointDev routes the flushes of package luks through a named flush point.
type pointDev struct {
	blockdev.Device
	opts  *Options
	point FlushPoint
}

func (p pointDev) Flush() error {
	if p.opts.Hooks != nil && p.opts.Hooks.DropFlush[p.point] {
		return nil
	}
	if err := p.Device.Flush(); err != nil {
		return errclass.IOf("flush ("+string(p.point)+")", err)
	}
	return nil
}

func atoiID(s, what string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: cryptshift record: %s %q", errclass.Header, what, s)
	}
	return n, nil
}

// metaTarget is where the conversion's metadata lives: the reserved area,
// or the device given.
func (st *luksState) metaTarget(dev, meta blockdev.Device) (Target, error) {
	if st.tok.Reserved == "" {
		if meta == nil {
			return Target{}, fmt.Errorf("%w: this LUKS2 conversion keeps its metadata in a separate file or device: give --metadata", errclass.Usage)
		}
		return Target{Data: dev, Meta: meta}, nil
	}
	if meta != nil {
		return Target{}, fmt.Errorf("%w: this LUKS2 conversion keeps its metadata in the LUKS2 keyslots area: leave out --metadata", errclass.Usage)
	}
	id, err := atoiID(st.tok.Reserved, "reserved keyslot")
	if err != nil {
		return Target{}, err
	}
	k, ok := st.v.V2.Meta.Keyslots[id]
	if !ok || k.Type != luksMark {
		return Target{}, fmt.Errorf("%w: cryptshift record names keyslot %d, which is not its reserved area", errclass.Header, id)
	}
	r, err := blockdev.Region(dev, int64(k.Area.Offset), int64(k.Area.Size))
	if err != nil {
		return Target{}, fmt.Errorf("%w: reserved area: %w", errclass.Header, err)
	}
	return Target{Data: dev, Meta: r}, nil
}

// unlockedKeys are the two volume keys of a conversion in progress.
type unlockedKeys struct {
	old, new *luks.Unlocked
	mapping  *luks.DataMapping
}

func (u *unlockedKeys) wipe() {
	u.old.Wipe()
	u.new.Wipe()
}

// unlockBoth opens the old key (the segment's) and the new one (the
// recorded digest's keyslots) with any of the passphrases.
func (st *luksState) unlockBoth(passes [][]byte) (*unlockedKeys, error) {
	if len(passes) == 0 {
		return nil, fmt.Errorf("%w: a passphrase (--key-file) is needed to open both volume keys of the conversion", errclass.Usage)
	}
	nd, err := atoiID(st.tok.NewDigest, "new digest")
	if err != nil {
		return nil, err
	}
	dg, ok := st.v.V2.Meta.Digests[nd]
	if !ok {
		return nil, fmt.Errorf("%w: cryptshift record names digest %d, which does not exist", errclass.Header, nd)
	}
	var firstErr error
	for _, p := range passes {
		o, err := st.v.Unlock(p, luks.AnySlot)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			continue
		}
		for _, s := range dg.Keyslots {
			n, err := st.v.Unlock(p, s)
			if err != nil {
				firstErr = cmpErr(firstErr, err)
				continue
			}
			m, err := st.v.Mapping(o)
			if err != nil {
				o.Wipe()
				n.Wipe()
				return nil, err
			}
			return &unlockedKeys{old: o, new: n, mapping: m}, nil
		}
		o.Wipe()
	}
	if errclass.Code(firstErr) == errclass.ExitWrongKey || firstErr == nil {
		return nil, fmt.Errorf("%w: no passphrase given opens both an old keyslot and one of the new keyslots (%v) of this conversion", errclass.WrongKey, dg.Keyslots)
	}
	return nil, firstErr
}

func cmpErr(first, err error) error {
	if first == nil || errclass.Code(first) == errclass.ExitWrongKey {
		return err
	}
	return first
}

// keyslotIDs lists the luks2 keyslots of digest id, in order.
func keyslotIDs(m *luks.Metadata, id int) []int {
	dg, ok := m.Digests[id]
	if !ok {
		return nil
	}
	out := append([]int(nil), dg.Keyslots...)
	sort.Ints(out)
	return out
}

// segmentDigest is the digest mapping segment 0.
func segmentDigest(m *luks.Metadata) (int, error) {
	for id, dg := range m.Digests {
		for _, s := range dg.Segments {
			if s == 0 {
				return id, nil
			}
		}
	}
	return 0, fmt.Errorf("%w: no LUKS2 digest maps the data segment", errclass.Header)
}

// ConvertLUKS2 converts a LUKS2 volume to a new volume key (and cipher or
// sector size), or resumes the conversion recorded in its header, and at
// the end commits the header stock cryptsetup opens with every carried
// passphrase.
func ConvertLUKS2(ctx context.Context, dev blockdev.Device, req LUKSRequest, opts Options) (*LUKSResult, error) {
	st, err := readLUKS(dev)
	if err != nil {
		return nil, err
	}
	if req.Mode == "shift" {
		return nil, fmt.Errorf("%w: --resilience shift is not supported for LUKS2 volumes yet (the data would move into the keyslots area): use journal, checksum or none", errclass.Usage)
	}
	switch {
	case st.tok != nil && st.tok.State == luksWiping:
		return finishLUKS(dev, st, nil, opts)
	case st.tok != nil:
		return resumeLUKS(ctx, dev, st, req, opts)
	}
	return startLUKS(ctx, dev, st, req, opts)
}

// engineConfig is the engine request for a LUKS2 volume's data segment.
func engineConfig(m *luks.DataMapping, oldKey, newKey []byte, req LUKSRequest) Config {
	iv, large := m.Mapping.IVOffset, false
	off := m.Offset
	cfg := Config{
		Old: Side{Cipher: m.Mapping.Spec.String(), Key: oldKey, SectorSize: m.Mapping.SectorSize, IVOffset: &iv, IVLargeSectors: &large},
		New: Side{Cipher: req.NewCipher, Key: newKey, SectorSize: req.NewSectorSize, IVOffset: &iv, IVLargeSectors: &large},
		// The digest proves the old key: a volume fresh from luksFormat
		// holds noise and converts like any other.
		DataOffset: &off, DataSize: m.Size, Mode: req.Mode, Window: req.Window, Force: req.Force, KeyVerified: true,
	}
	return cfg
}

func (r LUKSRequest) beforeFinal() error {
	if r.BeforeFinal == nil {
		return nil
	}
	return r.BeforeFinal()
}

func startLUKS(ctx context.Context, dev blockdev.Device, st *luksState, req LUKSRequest, opts Options) (*LUKSResult, error) {
	v := st.v
	meta := v.V2.Meta
	if len(req.Passphrases) == 0 {
		return nil, fmt.Errorf("%w: give the passphrase of each active keyslot with --key-file (or --key-slot N and its passphrase)", errclass.Usage)
	}
	oldDigest, err := segmentDigest(meta)
	if err != nil {
		return nil, err
	}
	// Every passphrase must open a keyslot of the data segment, and every
	// such keyslot must be opened, or --key-slot names the one to keep.
	opened, oldU, err := unlockEach(v, req.Passphrases, req.KeySlot)
	if err != nil {
		return nil, err
	}
	defer oldU.Wipe()
	active := keyslotIDs(meta, oldDigest)
	var carried, erased []int
	for _, s := range active {
		if _, ok := opened[s]; ok {
			carried = append(carried, s)
		} else {
			erased = append(erased, s)
		}
	}
	if len(erased) > 0 && req.KeySlot == luks.AnySlot {
		return nil, fmt.Errorf("%w: keyslot(s) %s of the LUKS2 volume are active and no passphrase given opens them: give each one's passphrase with --key-file, or --key-slot N to keep only keyslot N (the others are then erased at the end)", errclass.Usage, intList(erased))
	}
	if len(carried) == 0 {
		return nil, fmt.Errorf("%w: no passphrase opens a keyslot of the data segment", errclass.WrongKey)
	}
	mapping, err := v.Mapping(oldU)
	if err != nil {
		return nil, err
	}
	// The new mapping: the segment's, but for what the request changes.
	cipher := mapping.Mapping.Spec.String()
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
	cfg := engineConfig(mapping, oldU.Key.Bytes(), newKey.Bytes(), req)
	cfg.New.Cipher = cipher
	if cfg.New.SectorSize == 0 {
		cfg.New.SectorSize = mapping.Mapping.SectorSize
	}
	if _, err := buildMapping("new", cfg.New); err != nil {
		return nil, fmt.Errorf("%w (a LUKS2 volume's new key size is --new-key-size BITS)", err)
	}

	// The start commit, built now so that every refusal comes before the
	// first write.
	d, err := v.Draft()
	if err != nil {
		return nil, err
	}
	dg := meta.Digests[oldDigest]
	newDigest, err := d.AddDigest(newKey.Bytes(), dg.Hash, int(max(dg.Iterations, 1000)))
	if err != nil {
		return nil, err
	}
	var mats []*luks.KeyslotMaterial
	defer func() {
		for _, m := range mats {
			m.Wipe()
		}
	}()
	var newSlots []int
	for _, s := range carried {
		mat, err := d.AddKeyslot(luks.AnySlot, newKey.Bytes(), opened[s], meta.Keyslots[s].Spec(), newDigest)
		if err != nil {
			return nil, fmt.Errorf("keyslot for the new key (from keyslot %d): %w", s, err)
		}
		mats = append(mats, mat)
		newSlots = append(newSlots, mat.Slot)
		if err := d.CopyTokenBindings(s, mat.Slot); err != nil {
			return nil, err
		}
	}
	tok := luksToken{Type: luksMark, Keyslots: []string{}, State: luksConverting,
		OldDigest: strconv.Itoa(oldDigest), NewDigest: strconv.Itoa(newDigest)}
	var area luks.Area
	metaDev := req.Meta
	if metaDev == nil {
		free, err := d.LargestFree()
		if err != nil {
			return nil, err
		}
		size := min(free, DefaultMetaSize)
		if size < minMetaSize {
			return nil, fmt.Errorf("%w: the LUKS2 keyslots area has %d bytes free after the new keyslots, and cryptshift's metadata needs at least %d: give --metadata PATH (a file or device of at least 1 MiB elsewhere)", errclass.Device, free, minMetaSize)
		}
		var slot int
		if slot, area, err = d.ReserveArea(luksMark, size); err != nil {
			return nil, err
		}
		tok.Reserved = strconv.Itoa(slot)
		if metaDev, err = blockdev.Region(dev, int64(area.Offset), int64(area.Size)); err != nil {
			return nil, err
		}
	}
	tid, err := d.FreeToken()
	if err != nil {
		return nil, err
	}
	tj, err := json.Marshal(tok)
	if err != nil {
		return nil, err
	}
	if err := d.SetToken(tid, tj); err != nil {
		return nil, err
	}
	if err := d.SetRequirement(LUKSRequirement, true); err != nil {
		return nil, err
	}
	if req.Notify != nil {
		msg := fmt.Sprintf("LUKS2 keyslot(s) %s get the new volume key, as keyslot(s) %s", intList(carried), intList(newSlots))
		if len(erased) > 0 {
			msg += fmt.Sprintf("; keyslot(s) %s are erased at the end (--key-slot %d)", intList(erased), req.KeySlot)
		}
		msg += "; until the conversion completes, stock cryptsetup refuses to open the volume (requirement " + LUKSRequirement + ")"
		req.Notify(msg)
	}
	if req.Meta == nil || abandonedStart(req.Meta, oldU.Key.Bytes()) {
		// Free space holds whatever an earlier keyslot left, and a
		// --metadata file may hold the header of a start that crashed
		// before its start commit (no window was written then): zero it,
		// so that the engine takes it for the empty metadata device it is.
		// The engine's first flush (create-digest-table) makes it durable.
		if err := zeroDevice(metaDev); err != nil {
			return nil, err
		}
	}
	o := opts
	o.beforeRun = func(resumed bool) error {
		// The conversion's header is durable in space no LUKS2 header
		// names; now the new keyslots, then the start commit. Only after
		// it is durable is any window written.
		for _, m := range mats {
			if err := luks.WriteKeyslotMaterial(pointDev{dev, &o, FlushLUKSKeyslotMaterial}, m); err != nil {
				return err
			}
		}
		if err := luks.CommitLUKS2(pointDev{dev, &o, FlushLUKSStartCommit}, d); err != nil {
			return fmt.Errorf("LUKS2 start commit: %w", err)
		}
		return nil
	}
	res, err := Convert(ctx, Target{Data: dev, Meta: metaDev}, cfg, o)
	out := &LUKSResult{UUID: v.UUID}
	if res != nil {
		out.Header = res.Header
	}
	if err != nil {
		return out, err
	}
	if err := req.beforeFinal(); err != nil {
		return out, err
	}
	st, err = readLUKS(dev)
	if err != nil {
		return out, err
	}
	return finishLUKS(dev, st, res.Header, opts)
}

// abandonedStart reports whether meta holds the header of a conversion of
// this volume's current key whose start commit never became durable: the
// LUKS2 header has no requirement (the caller is starting afresh), so
// that conversion wrote no window, and its header is garbage.
func abandonedStart(meta blockdev.Device, oldKey []byte) bool {
	s, err := header.ReadStore(meta)
	if err != nil {
		return false
	}
	if firstCommitTorn(s) {
		return true
	}
	h, err := s.Current(nil)
	return err == nil && header.KCV(oldKey, h.UUID) == h.OldKCV
}

func zeroDevice(d blockdev.Device) error {
	buf := make([]byte, min(d.Size(), 1<<20))
	for off := int64(0); off < d.Size(); off += int64(len(buf)) {
		n := min(int64(len(buf)), d.Size()-off)
		if _, err := d.WriteAt(buf[:n], off); err != nil {
			return errclass.IOf("zero the reserved metadata area", err)
		}
	}
	return nil
}

func intList(s []int) string {
	p := make([]string, len(s))
	for i, x := range s {
		p[i] = strconv.Itoa(x)
	}
	return strings.Join(p, ", ")
}

func resumeLUKS(ctx context.Context, dev blockdev.Device, st *luksState, req LUKSRequest, opts Options) (*LUKSResult, error) {
	t, err := st.metaTarget(dev, req.Meta)
	if err != nil {
		return nil, err
	}
	keys, err := st.unlockBoth(req.Passphrases)
	if err != nil {
		return nil, err
	}
	defer keys.wipe()
	if n := len(keys.new.Key.Bytes()); req.NewKeyBytes != 0 && req.NewKeyBytes != n {
		return nil, fmt.Errorf("%w: the conversion in progress was started differently: --new-key-size %d (recorded %d)", errclass.Conflict, req.NewKeyBytes*8, n*8)
	}
	cfg := engineConfig(keys.mapping, keys.old.Key.Bytes(), keys.new.Key.Bytes(), req)
	res, err := Convert(ctx, t, cfg, opts)
	out := &LUKSResult{UUID: st.v.UUID}
	if res != nil {
		out.Header = res.Header
	}
	if err != nil {
		return out, err
	}
	if err := req.beforeFinal(); err != nil {
		return out, err
	}
	return finishLUKS(dev, st, res.Header, opts)
}

// finishLUKS makes the final commit of a complete conversion (h), or goes
// on from it (token state wiping, h unused): overwrite the areas it
// freed, then the end commit.
func finishLUKS(dev blockdev.Device, st *luksState, h *header.Header, opts Options) (*LUKSResult, error) {
	out := &LUKSResult{UUID: st.v.UUID, Header: h, Finished: true}
	if st.tok.State == luksConverting {
		if h == nil || h.State != header.StateComplete {
			return out, errors.New("engine: LUKS2 final commit before the conversion is complete")
		}
		if err := finalCommit(dev, st, h, opts); err != nil {
			return out, err
		}
		var err error
		if st, err = readLUKS(dev); err != nil {
			return out, err
		}
		if st.tok == nil || st.tok.State != luksWiping {
			return out, fmt.Errorf("%w: the LUKS2 final commit is not on the device", errclass.IO)
		}
	}
	m := st.v.V2.Meta
	lo := 2 * st.v.V2.HdrSize
	hi := lo + m.Config.KeyslotsSize
	for _, a := range st.tok.Areas {
		off, err1 := strconv.ParseUint(a.Offset, 10, 64)
		size, err2 := strconv.ParseUint(a.Size, 10, 64)
		if err1 != nil || err2 != nil || size == 0 || off < lo || off+size > hi || off+size < off {
			return out, fmt.Errorf("%w: cryptshift record: area to overwrite [%s, +%s) is not inside the keyslots area", errclass.Header, a.Offset, a.Size)
		}
		// A keyslot added since the final commit (by cryptsetup, before
		// this recovery) may already use the space: leave it alone.
		if overlapsKeyslot(m, off, size) {
			continue
		}
		if err := luks.WipeKeyslotArea(pointDev{dev, &opts, FlushLUKSKeyslotWipe}, luks.Area{Offset: off, Size: size}); err != nil {
			return out, err
		}
	}
	d, err := st.v.Draft()
	if err != nil {
		return out, err
	}
	if err := d.SetToken(st.tokenID, nil); err != nil {
		return out, err
	}
	if err := luks.CommitLUKS2(pointDev{dev, &opts, FlushLUKSEndCommit}, d); err != nil {
		return out, fmt.Errorf("LUKS2 end commit: %w", err)
	}
	out.Action = "the LUKS2 header maps the new volume key; old keyslots overwritten"
	return out, nil
}

func overlapsKeyslot(m *luks.Metadata, off, size uint64) bool {
	for _, k := range m.Keyslots {
		if k.Area.Offset < off+size && off < k.Area.Offset+k.Area.Size {
			return true
		}
	}
	return false
}

// finalCommit hands the segment to the new key and removes what the old
// key and the conversion left in the header, in one commit.
func finalCommit(dev blockdev.Device, st *luksState, h *header.Header, opts Options) error {
	od, err := atoiID(st.tok.OldDigest, "old digest")
	if err != nil {
		return err
	}
	nd, err := atoiID(st.tok.NewDigest, "new digest")
	if err != nil {
		return err
	}
	d, err := st.v.Draft()
	if err != nil {
		return err
	}
	if err := d.MoveSegments(od, nd); err != nil {
		return err
	}
	if err := d.SetSegmentCrypt(0, h.New.Cipher, h.New.SectorSize); err != nil {
		return err
	}
	var areas []luksArea
	add := func(a luks.Area) {
		areas = append(areas, luksArea{strconv.FormatUint(a.Offset, 10), strconv.FormatUint(a.Size, 10)})
	}
	for _, s := range keyslotIDs(st.v.V2.Meta, od) {
		a, err := d.RemoveKeyslot(s)
		if err != nil {
			return err
		}
		add(a)
	}
	if st.tok.Reserved != "" {
		id, err := atoiID(st.tok.Reserved, "reserved keyslot")
		if err != nil {
			return err
		}
		a, err := d.RemoveOther(id)
		if err != nil {
			return err
		}
		add(a)
	}
	if err := d.SetRequirement(LUKSRequirement, false); err != nil {
		return err
	}
	tj, err := json.Marshal(luksToken{Type: luksMark, Keyslots: []string{}, State: luksWiping, Areas: areas})
	if err != nil {
		return err
	}
	if err := d.SetToken(st.tokenID, tj); err != nil {
		return err
	}
	if err := luks.CommitLUKS2Own(pointDev{dev, &opts, FlushLUKSFinalCommit}, d, LUKSRequirement); err != nil {
		return fmt.Errorf("LUKS2 final commit: %w", err)
	}
	return nil
}

// RecoverLUKS2 brings a LUKS2 volume in conversion to a consistent state:
// the window a crash interrupted is finished (the conversion is then
// paused, and `convert` goes on), and a complete conversion gets its final
// commits. An interrupted overwrite of the old keyslots needs no key.
func RecoverLUKS2(ctx context.Context, dev, meta blockdev.Device, passes [][]byte, ro RecoverOptions, opts Options) (*LUKSResult, error) {
	st, err := readLUKS(dev)
	if err != nil {
		return nil, err
	}
	switch {
	case st.tok == nil:
		return nil, fmt.Errorf("%w: the LUKS2 volume records no cryptshift conversion: nothing to recover", errclass.Header)
	case st.tok.State == luksWiping:
		return finishLUKS(dev, st, nil, opts)
	}
	t, err := st.metaTarget(dev, meta)
	if err != nil {
		return nil, err
	}
	keys, err := st.unlockBoth(passes)
	if err != nil {
		return nil, err
	}
	defer keys.wipe()
	return recoverThenFinish(ctx, t, keys.old.Key.Bytes(), keys.new.Key.Bytes(), ro, opts, st.v.UUID, func(h *header.Header) (*LUKSResult, error) {
		return finishLUKS(dev, st, h, opts)
	})
}

// LUKSOpened is a LUKS2 conversion in progress, opened with a passphrase:
// where its metadata is and both volume keys (for verify).
type LUKSOpened struct {
	Target         Target
	OldKey, NewKey []byte
	wipe           func()
}

// Close wipes the keys.
func (o *LUKSOpened) Close() { o.wipe() }

// OpenLUKS2 opens the conversion recorded in a LUKS2 header.
func OpenLUKS2(dev, meta blockdev.Device, passes [][]byte) (*LUKSOpened, error) {
	st, err := readLUKS(dev)
	if err != nil {
		return nil, err
	}
	if st.tok == nil || st.tok.State != luksConverting {
		return nil, fmt.Errorf("%w: the LUKS2 volume has no cryptshift conversion in progress", errclass.Header)
	}
	t, err := st.metaTarget(dev, meta)
	if err != nil {
		return nil, err
	}
	keys, err := st.unlockBoth(passes)
	if err != nil {
		return nil, err
	}
	return &LUKSOpened{Target: t, OldKey: keys.old.Key.Bytes(), NewKey: keys.new.Key.Bytes(), wipe: keys.wipe}, nil
}

// LUKSStatus is what a LUKS2 header says about a conversion, without keys.
type LUKSStatus struct {
	Version int
	UUID    string
	Label   string
	// State: "none" (no conversion recorded), "converting", or "wiping"
	// (the final commit is done; the old keyslots' areas are being
	// overwritten).
	State string
	// Keyslots are the luks2 keyslots that hold (or, converting, will
	// hold) the volume key after the conversion; Erased those the end
	// removes.
	Keyslots, Erased []int
	// Metadata: "keyslots area" or "separate" (converting only).
	Metadata string
	// Engine is the conversion's progress (converting, metadata in the
	// keyslots area or given).
	Engine *Status
}

// ReadLUKS2Status reads the status of a LUKS2 volume; meta is the
// separate metadata, if any.
func ReadLUKS2Status(dev, meta blockdev.Device) (*LUKSStatus, error) {
	st, err := readLUKS(dev)
	if err != nil {
		return nil, err
	}
	m := st.v.V2.Meta
	out := &LUKSStatus{Version: 2, UUID: st.v.UUID, Label: st.v.V2.Label, State: "none"}
	if st.tok == nil {
		if sd, err := segmentDigest(m); err == nil {
			out.Keyslots = keyslotIDs(m, sd)
		}
		return out, nil
	}
	out.State = st.tok.State
	if st.tok.State == luksWiping {
		if sd, err := segmentDigest(m); err == nil {
			out.Keyslots = keyslotIDs(m, sd)
		}
		return out, nil
	}
	if nd, err := atoiID(st.tok.NewDigest, "new digest"); err == nil {
		out.Keyslots = keyslotIDs(m, nd)
	}
	if od, err := atoiID(st.tok.OldDigest, "old digest"); err == nil {
		out.Erased = keyslotIDs(m, od)
	}
	out.Metadata = "keyslots area"
	if st.tok.Reserved == "" {
		out.Metadata = "separate"
	}
	t, err := st.metaTarget(dev, meta)
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

// unlockEach opens a keyslot with every passphrase (a passphrase that opens
// none is refused by its position) and returns the passphrase of each slot
// opened, once per slot, with the first slot's unlocked key; the other
// unlocked keys are wiped at once, since one copy of the volume key is all
// a conversion needs.
func unlockEach(v *luks.Volume, passes [][]byte, keySlot int) (map[int][]byte, *luks.Unlocked, error) {
	opened := map[int][]byte{}
	var first *luks.Unlocked
	for i, p := range passes {
		u, err := v.Unlock(p, keySlot)
		if err != nil {
			if first != nil {
				first.Wipe()
			}
			return nil, nil, fmt.Errorf("passphrase %d: %w", i+1, err)
		}
		if _, dup := opened[u.Slot]; dup {
			u.Wipe()
			continue
		}
		opened[u.Slot] = p
		if first == nil {
			first = u
		} else {
			u.Wipe()
		}
	}
	return opened, first, nil
}

// recoverThenFinish recovers the window in flight of a LUKS conversion's
// data area and, when that leaves the engine's conversion complete, makes
// the LUKS header's final steps (finish), so one recover brings the volume
// as far as the disk allows.
func recoverThenFinish(ctx context.Context, t Target, oldKey, newKey []byte, ro RecoverOptions, opts Options, uuid string, finish func(*header.Header) (*LUKSResult, error)) (*LUKSResult, error) {
	rr, err := Recover(ctx, t, oldKey, newKey, ro, opts)
	if err != nil {
		return nil, err
	}
	if rr.Header.State == header.StateComplete {
		out, err := finish(rr.Header)
		if out != nil && err == nil {
			out.Action = rr.Action + "; " + out.Action
		}
		return out, err
	}
	return &LUKSResult{UUID: uuid, Header: rr.Header, Action: rr.Action}, nil
}
