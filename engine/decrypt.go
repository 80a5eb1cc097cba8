package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// Decrypting a LUKS2 volume (docs/DESIGN.md, "LUKS2 decryption"): the
// plaintext moves from the segment's offset D back to byte 0. The head, the
// first D bytes of plaintext, is decrypted into a stash on the --metadata
// device before anything else; the engine then shifts the rest by D under
// the untouched LUKS2 header (marked with LUKSRequirement); the head is
// written from the stash last, its first sector very last.

// decryptTrailerMagic starts the record that says a stash is complete.
var decryptTrailerMagic = []byte("cryptshift-decrypt-head\x00")

const decryptTrailerSize = 4096

// DecryptRequest is `convert --decrypt` of a LUKS2 volume.
type DecryptRequest struct {
	Passphrases [][]byte
	Meta        blockdev.Device // required: the --metadata device
	Window      int64
	Notify      func(string)
}

// DecryptResult is what a decryption or its recovery ended with.
type DecryptResult struct {
	Header   *header.Header
	Finished bool
	Action   string
}

// decryptTrailer describes the stash; it is written once, with the stash,
// before the flush that makes both durable, and never rewritten.
type decryptTrailer struct {
	uuid      [40]byte // the LUKS2 UUID
	dataOff   int64    // D
	dataSize  int64    // N, the plaintext's size
	stashHash [32]byte // sha256 of the stash
}

// decryptLayout splits the metadata device: the engine's area, the stash
// (D bytes), and the trailer in its last 4 KiB, where it is found without
// knowing D. The stash lies at least 1 MiB into the device, where no
// filesystem signature of byte 0 is looked for.
type decryptLayout struct {
	engine, trailer, stash blockdev.Device
}

func trailerOffset(meta blockdev.Device) int64 {
	return alignDown(meta.Size(), align) - decryptTrailerSize
}

func splitDecryptMeta(meta blockdev.Device, d int64) (decryptLayout, error) {
	var l decryptLayout
	to := trailerOffset(meta)
	e := to - d
	if e < minMetaSize {
		return l, fmt.Errorf("%w: --metadata must hold cryptshift's metadata (at least %d bytes) and a copy of the first %d bytes of plaintext: give one of at least %d bytes", errclass.Device, minMetaSize, d, minMetaSize+d+decryptTrailerSize)
	}
	var err error
	if l.engine, err = blockdev.Region(meta, 0, e); err != nil {
		return l, err
	}
	if l.stash, err = blockdev.Region(meta, e, d); err != nil {
		return l, err
	}
	l.trailer, err = blockdev.Region(meta, to, decryptTrailerSize)
	return l, err
}

func (t *decryptTrailer) encode() []byte {
	b := make([]byte, decryptTrailerSize)
	copy(b, decryptTrailerMagic)
	copy(b[32:72], t.uuid[:])
	binary.BigEndian.PutUint64(b[72:], uint64(t.dataOff))
	binary.BigEndian.PutUint64(b[80:], uint64(t.dataSize))
	copy(b[88:120], t.stashHash[:])
	s := sha256.Sum256(b[:120])
	copy(b[120:152], s[:])
	return b
}

// readDecryptStash returns the trailer of meta (nil, nil, nil when there
// is none) and the stash, nil when it no longer matches the trailer: its
// removal had begun (see stageOf).
func readDecryptStash(meta blockdev.Device) (*decryptTrailer, []byte, error) {
	to := trailerOffset(meta)
	if to < 0 {
		return nil, nil, nil
	}
	b := make([]byte, decryptTrailerSize)
	if _, err := meta.ReadAt(b, to); err != nil {
		return nil, nil, errclass.IOf("read the decryption record", err)
	}
	s := sha256.Sum256(b[:120])
	if !bytes.HasPrefix(b, decryptTrailerMagic) || !bytes.Equal(s[:], b[120:152]) {
		return nil, nil, nil
	}
	t := &decryptTrailer{dataOff: int64(binary.BigEndian.Uint64(b[72:])), dataSize: int64(binary.BigEndian.Uint64(b[80:]))}
	copy(t.uuid[:], b[32:72])
	copy(t.stashHash[:], b[88:120])
	l, err := splitDecryptMeta(meta, t.dataOff)
	if err != nil || t.dataOff%align != 0 {
		return nil, nil, fmt.Errorf("%w: the decryption record on --metadata names a data offset (%d) that does not fit it", errclass.Header, t.dataOff)
	}
	stash := make([]byte, t.dataOff)
	if _, err := l.stash.ReadAt(stash, 0); err != nil {
		return nil, nil, errclass.IOf("read the stashed head", err)
	}
	if sha256.Sum256(stash) != t.stashHash {
		stash = nil
	}
	return t, stash, nil
}

// ConvertDecryptLUKS2 decrypts a LUKS2 volume in place, or goes on with the
// decryption recorded on req.Meta.
func ConvertDecryptLUKS2(ctx context.Context, dev blockdev.Device, req DecryptRequest, opts Options) (*DecryptResult, error) {
	if req.Meta == nil {
		return nil, fmt.Errorf("%w: --decrypt needs --metadata PATH (a file or device elsewhere of at least the LUKS2 data offset plus 1 MiB): the move overwrites every byte of DEVICE that cryptshift could use", errclass.Usage)
	}
	tr, stash, err := readDecryptStash(req.Meta)
	if err != nil {
		return nil, err
	}
	if tr != nil {
		return resumeDecrypt(ctx, dev, req, tr, stash, opts)
	}
	return startDecrypt(ctx, dev, req, false, opts)
}

// openDecryptLUKS reads the LUKS2 header of a volume to decrypt and says
// whether it carries cryptshift's requirement.
//
// A LUKS1 volume carries cryptshift's LUKS1 mark instead (luks.MarkLUKS1:
// the magic LUKS\xde\xad and a tag), which hides it from stock tools.
func openDecryptLUKS(dev blockdev.Device) (*luks.Volume, bool, error) {
	v, err := luks.Open(dev, dev.Size())
	if errors.Is(err, luks.ErrInConversion) {
		if v, err = luks.OpenMarked(dev, dev.Size()); err != nil {
			return nil, false, err
		}
		return v, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	if v.V2 == nil {
		return v, false, nil
	}
	required := false
	for _, r := range v.Requirements() {
		required = required || r == LUKSRequirement
	}
	for _, r := range v.UnknownRequirements() {
		if r != LUKSRequirement {
			return nil, false, fmt.Errorf("%w: the LUKS2 header has a requirement neither cryptsetup 2.6 nor cryptshift knows (%s): refusing to touch it", errclass.Device, r)
		}
	}
	for _, t := range v.V2.Meta.Tokens {
		if t.Type == luksMark {
			return nil, false, fmt.Errorf("%w: the LUKS2 volume records a cryptshift key rotation: finish it (cryptshift convert --key-file PASSFILE DEVICE) before decrypting", errclass.Conflict)
		}
	}
	return v, required, nil
}

// unlockDecrypt opens the segment's key with any passphrase.
func unlockDecrypt(v *luks.Volume, passes [][]byte) (*luks.Unlocked, *luks.DataMapping, error) {
	if len(passes) == 0 {
		return nil, nil, fmt.Errorf("%w: give a passphrase of the LUKS2 volume with --key-file PASSFILE", errclass.Usage)
	}
	var firstErr error
	for _, p := range passes {
		u, err := v.Unlock(p, luks.AnySlot)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			continue
		}
		m, err := v.Mapping(u)
		if err != nil {
			u.Wipe()
			return nil, nil, err
		}
		return u, m, nil
	}
	return nil, nil, firstErr
}

// decryptConfig is the engine's part: the plaintext after the head, shifted
// from 2D to D. The engine's data area starts D bytes into the segment, so
// the old IV offset grows by D in 512-byte units.
func decryptConfig(m *luks.DataMapping, key []byte, window int64) Config {
	d := m.Offset
	iv, large := m.Mapping.IVOffset+uint64(d/512), false
	off := 2 * d
	return Config{
		Old:        Side{Cipher: m.Mapping.Spec.String(), Key: key, SectorSize: m.Mapping.SectorSize, IVOffset: &iv, IVLargeSectors: &large},
		New:        Side{Cipher: "none", SectorSize: m.Mapping.SectorSize},
		DataOffset: &off, DataSize: m.Size - d, Mode: "shift", Shift: d, Window: window, KeyVerified: true,
	}
}

// startDecrypt starts afresh; reuse says req.Meta holds the stash of a
// start whose mark never became durable (DEVICE untouched).
func startDecrypt(ctx context.Context, dev blockdev.Device, req DecryptRequest, reuse bool, opts Options) (*DecryptResult, error) {
	v, required, err := openDecryptLUKS(dev)
	if err != nil {
		return nil, err
	}
	if required {
		return nil, fmt.Errorf("%w: the LUKS2 header carries %s but --metadata holds no decryption of it: give the --metadata PATH the decryption was started with", errclass.Header, LUKSRequirement)
	}
	if v.V2 != nil && len(v.V2.Meta.Segments) != 1 {
		return nil, fmt.Errorf("%w: the LUKS2 header has %d segments; cryptshift decrypts a volume with one", errclass.Device, len(v.V2.Meta.Segments))
	}
	u, m, err := unlockDecrypt(v, req.Passphrases)
	if err != nil {
		return nil, err
	}
	defer u.Wipe()
	d, n := m.Offset, m.Size
	unit := int64(max(m.Mapping.SectorSize, align))
	switch {
	case d <= 0 || d%align != 0:
		return nil, fmt.Errorf("%w: the LUKS2 data offset %d is not a positive multiple of %d", errclass.Device, d, align)
	case n <= d:
		return nil, fmt.Errorf("%w: the LUKS2 data area (%d bytes) is not larger than its offset (%d bytes): cryptshift decrypts volumes larger than their header", errclass.Device, n, d)
	case (n-d)%unit != 0:
		return nil, fmt.Errorf("%w: the LUKS2 data area (%d bytes) is not a whole number of %d-byte units", errclass.Device, n, unit)
	}
	l, err := splitDecryptMeta(req.Meta, d)
	if err != nil {
		return nil, err
	}
	if !reuse && !allZero(req.Meta) && !abandonedStart(l.engine, u.Key.Bytes()) {
		return nil, fmt.Errorf("%w: --metadata holds data that is no decryption of this volume: give an empty (all-zero) file or device", errclass.Device)
	}
	cfg := decryptConfig(m, u.Key.Bytes(), req.Window)
	var draft *luks.Draft2
	if v.V2 != nil {
		if draft, err = v.Draft(); err != nil {
			return nil, err
		}
		if err := draft.SetRequirement(LUKSRequirement, true); err != nil {
			return nil, err
		}
	}
	if req.Notify != nil {
		req.Notify(fmt.Sprintf("the plaintext moves %d bytes to byte 0; until it is done, stock cryptsetup refuses to open the volume (requirement %s), and the first %d bytes of plaintext wait on --metadata", d, LUKSRequirement, d))
	}
	// Zero what an abandoned start left, then the stash and its trailer.
	if err := zeroDevice(req.Meta); err != nil {
		return nil, err
	}
	head := make([]byte, d)
	if _, err := dev.ReadAt(head, d); err != nil {
		return nil, errclass.IOf("read the head of the data", err)
	}
	c, err := sectorcipher.New(m.Mapping)
	if err != nil {
		return nil, err
	}
	c.Decrypt(head, 0)
	if _, err := l.stash.WriteAt(head, 0); err != nil {
		return nil, errclass.IOf("write the stashed head", err)
	}
	tr := decryptTrailer{dataOff: d, dataSize: n, stashHash: sha256.Sum256(head)}
	copy(tr.uuid[:], v.UUID)
	if _, err := l.trailer.WriteAt(tr.encode(), 0); err != nil {
		return nil, errclass.IOf("write the decryption record", err)
	}
	// No flush of their own: the engine's first flush (create-digest-table)
	// is of this device and precedes the mark, the first write to DEVICE;
	// a trailer that reached the medium before its stash is recognised as
	// an abandoned start (stageOf: DEVICE's header has no mark).
	o := opts
	o.beforeRun = func(resumed bool) error {
		// The conversion's header is durable on --metadata; the mark comes
		// before the first window overwrites ciphertext the header maps.
		if draft == nil {
			if err := luks.MarkLUKS1(pointDev{dev, &o, FlushDecryptStartCommit}); err != nil {
				return fmt.Errorf("LUKS1 mark: %w", err)
			}
			return nil
		}
		if err := luks.CommitLUKS2(pointDev{dev, &o, FlushDecryptStartCommit}, draft); err != nil {
			return fmt.Errorf("LUKS2 start commit: %w", err)
		}
		return nil
	}
	res, err := Convert(ctx, Target{Data: dev, Meta: l.engine}, cfg, o)
	out := &DecryptResult{}
	if res != nil {
		out.Header = res.Header
	}
	if err != nil {
		return out, err
	}
	return out, finishDecrypt(dev, l, head, opts, out)
}

func allZero(d blockdev.Device) bool {
	buf := make([]byte, min(d.Size(), 1<<20))
	for off := int64(0); off < d.Size(); off += int64(len(buf)) {
		n := min(int64(len(buf)), d.Size()-off)
		if _, err := d.ReadAt(buf[:n], off); err != nil {
			return false
		}
		for _, b := range buf[:n] {
			if b != 0 {
				return false
			}
		}
	}
	return true
}

// decryptStage is where a recorded decryption stands.
type decryptStage int

const (
	stageAbandoned decryptStage = iota // stash durable, no mark: DEVICE untouched
	stageMoving                        // mark set, windows in progress
	stageHead                          // every window done: the head goes to byte 0
	stageDone                          // the head's first sector is at byte 0
)

func (s decryptStage) String() string {
	return [...]string{"not started (DEVICE untouched)", "moving the data", "writing the head", "done"}[s]
}

func stageOf(dev blockdev.Device, l decryptLayout, tr *decryptTrailer, stash []byte) (decryptStage, *header.Header, error) {
	if stash == nil {
		// The stash is removed before its trailer, and only once the
		// head is durable at byte 0: the head there proves it.
		head := make([]byte, tr.dataOff)
		if _, err := dev.ReadAt(head, 0); err != nil {
			return 0, nil, errclass.IOf("read DEVICE's head", err)
		}
		if sha256.Sum256(head) != tr.stashHash {
			if _, required, err := openDecryptLUKS(dev); err == nil && !required {
				// A restart of an abandoned start zeroes PATH before it
				// writes the stash again: DEVICE was never written.
				return stageAbandoned, nil, nil
			}
			return 0, nil, fmt.Errorf("%w: the stashed head on --metadata is damaged and DEVICE does not hold it: the first %d bytes of plaintext are lost", errclass.Header, tr.dataOff)
		}
		return stageDone, nil, nil
	}
	s0 := make([]byte, 512)
	if _, err := dev.ReadAt(s0, 0); err != nil {
		return 0, nil, errclass.IOf("read DEVICE's first sector", err)
	}
	if bytes.Equal(s0, stash[:512]) {
		return stageDone, nil, nil
	}
	st, serr := ReadStatus(Target{Data: dev, Meta: l.engine})
	if serr == nil && st.State == header.StateComplete {
		return stageHead, st.Header, nil
	}
	_, required, err := openDecryptLUKS(dev)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: the decryption recorded on --metadata is not complete, and DEVICE's LUKS2 header does not read: %w", errclass.Header, err)
	}
	if !required {
		return stageAbandoned, nil, nil
	}
	if serr != nil {
		return 0, nil, fmt.Errorf("%w: DEVICE carries %s but the conversion header on --metadata does not read: %w", errclass.Header, LUKSRequirement, serr)
	}
	return stageMoving, st.Header, nil
}

func resumeDecrypt(ctx context.Context, dev blockdev.Device, req DecryptRequest, tr *decryptTrailer, stash []byte, opts Options) (*DecryptResult, error) {
	l, err := splitDecryptMeta(req.Meta, tr.dataOff)
	if err != nil {
		return nil, err
	}
	stage, h, err := stageOf(dev, l, tr, stash)
	if err != nil {
		return nil, err
	}
	out := &DecryptResult{Header: h}
	switch stage {
	case stageAbandoned:
		return startDecrypt(ctx, dev, req, true, opts)
	case stageMoving:
		v, _, err := openDecryptLUKS(dev)
		if err != nil {
			return nil, err
		}
		u, m, err := unlockDecrypt(v, req.Passphrases)
		if err != nil {
			return nil, err
		}
		defer u.Wipe()
		if m.Offset != tr.dataOff || m.Size != tr.dataSize {
			return nil, fmt.Errorf("%w: --metadata records the decryption of another volume (data offset %d, size %d; DEVICE has %d, %d)", errclass.Conflict, tr.dataOff, tr.dataSize, m.Offset, m.Size)
		}
		res, err := Convert(ctx, Target{Data: dev, Meta: l.engine}, decryptConfig(m, u.Key.Bytes(), req.Window), opts)
		if res != nil {
			out.Header = res.Header
		}
		if err != nil {
			return out, err
		}
	}
	return out, finishDecrypt(dev, l, stash, opts, out)
}

// finishDecrypt writes the head (unless it is there) and removes the stash.
func finishDecrypt(dev blockdev.Device, l decryptLayout, stash []byte, opts Options, out *DecryptResult) error {
	s0 := make([]byte, 512)
	if _, err := dev.ReadAt(s0, 0); err != nil {
		return errclass.IOf("read DEVICE's first sector", err)
	}
	if stash != nil && !bytes.Equal(s0, stash[:512]) {
		// Everything but the first 4 KiB, then all of it but the first
		// sector, then that sector: a filesystem superblock in the first
		// 4 KiB appears only over final data, and the first sector, which
		// held the LUKS2 magic, says when the head is complete.
		p := pointDev{dev, &opts, FlushDecryptHead}
		for _, r := range [][2]int64{{4096, int64(len(stash))}, {512, 4096}, {0, 512}} {
			if _, err := dev.WriteAt(stash[r[0]:r[1]], r[0]); err != nil {
				return errclass.IOf("write the head", err)
			}
			if err := p.Flush(); err != nil {
				return err
			}
		}
	}
	// The stash goes first and is durable before its trailer goes: a
	// trailer without its stash is recognised by the head at byte 0, a
	// stash without its trailer would be plaintext no run removes.
	if err := zeroDevice(l.stash); err != nil {
		return err
	}
	if err := (pointDev{l.stash, &opts, FlushDecryptStashWipe}).Flush(); err != nil {
		return err
	}
	if _, err := l.trailer.WriteAt(make([]byte, decryptTrailerSize), 0); err != nil {
		return errclass.IOf("remove the decryption record", err)
	}
	if err := (pointDev{l.trailer, &opts, FlushDecryptRecordWipe}).Flush(); err != nil {
		return err
	}
	out.Finished = true
	out.Action = "the plaintext is at byte 0 of DEVICE"
	return nil
}

// RecoverDecryptLUKS2 brings a decryption recorded on meta to a consistent
// state: a window in flight is redone (with a passphrase), a complete move
// gets its head (no passphrase needed: the head is on meta in plaintext).
func RecoverDecryptLUKS2(ctx context.Context, dev, meta blockdev.Device, passes [][]byte, opts Options) (*DecryptResult, error) {
	tr, stash, err := readDecryptStash(meta)
	if err != nil {
		return nil, err
	}
	if tr == nil {
		return nil, fmt.Errorf("%w: --metadata records no cryptshift decryption", errclass.Header)
	}
	l, err := splitDecryptMeta(meta, tr.dataOff)
	if err != nil {
		return nil, err
	}
	stage, h, err := stageOf(dev, l, tr, stash)
	if err != nil {
		return nil, err
	}
	out := &DecryptResult{Header: h}
	switch stage {
	case stageAbandoned:
		out.Action = "the decryption never started moving data; DEVICE is the LUKS2 volume it was"
		return out, nil
	case stageMoving:
		v, _, err := openDecryptLUKS(dev)
		if err != nil {
			return nil, err
		}
		u, m, err := unlockDecrypt(v, passes)
		if err != nil {
			return nil, err
		}
		defer u.Wipe()
		cfg := decryptConfig(m, u.Key.Bytes(), 0)
		r, err := Recover(ctx, Target{Data: dev, Meta: l.engine}, cfg.Old.Key, nil, RecoverOptions{}, opts)
		if err != nil {
			return nil, err
		}
		out.Header, out.Action = r.Header, r.Action
		if r.Header.State != header.StateComplete {
			return out, nil
		}
	}
	if err := finishDecrypt(dev, l, stash, opts, out); err != nil {
		return out, err
	}
	out.Action = "the head was written: the plaintext is at byte 0 of DEVICE"
	return out, nil
}

// DecryptStatus is where a decryption recorded on meta stands, without keys.
type DecryptStatus struct {
	Recorded bool
	Stage    string
	Engine   *Status
}

// ReadDecryptStatus reads the decryption recorded on meta.
func ReadDecryptStatus(dev, meta blockdev.Device) (*DecryptStatus, error) {
	tr, stash, err := readDecryptStash(meta)
	if err != nil || tr == nil {
		return &DecryptStatus{}, err
	}
	l, err := splitDecryptMeta(meta, tr.dataOff)
	if err != nil {
		return nil, err
	}
	stage, _, err := stageOf(dev, l, tr, stash)
	if err != nil {
		return nil, err
	}
	ds := &DecryptStatus{Recorded: true, Stage: stage.String()}
	if st, err := ReadStatus(Target{Data: dev, Meta: l.engine}); err == nil {
		ds.Engine = st
	}
	return ds, nil
}

// IsDecryptMeta reports whether meta records a decryption.
func IsDecryptMeta(meta blockdev.Device) bool {
	tr, _, err := readDecryptStash(meta)
	return err == nil && tr != nil
}

// DecryptOpened is a decryption opened for verify: while the data move
// (Moving), the engine's target and the old key; afterwards only the stage,
// since the head's write overwrites the keyslots, and the stash was found
// whole (it hashes to its trailer's value).
type DecryptOpened struct {
	Stage  string
	Moving bool
	Target Target
	OldKey []byte
	u      *luks.Unlocked
}

// Close wipes the key.
func (o *DecryptOpened) Close() {
	if o.u != nil {
		o.u.Wipe()
	}
}

// OpenDecryptLUKS2 opens the decryption recorded on meta with a passphrase.
func OpenDecryptLUKS2(dev, meta blockdev.Device, passes [][]byte) (*DecryptOpened, error) {
	tr, stash, err := readDecryptStash(meta)
	if err != nil {
		return nil, err
	}
	if tr == nil {
		return nil, fmt.Errorf("%w: --metadata records no cryptshift decryption", errclass.Header)
	}
	l, err := splitDecryptMeta(meta, tr.dataOff)
	if err != nil {
		return nil, err
	}
	stage, _, err := stageOf(dev, l, tr, stash)
	if err != nil {
		return nil, err
	}
	o := &DecryptOpened{Stage: stage.String()}
	if stage != stageMoving {
		return o, nil
	}
	v, _, err := openDecryptLUKS(dev)
	if err != nil {
		return nil, err
	}
	u, _, err := unlockDecrypt(v, passes)
	if err != nil {
		return nil, err
	}
	o.u, o.Moving, o.Target, o.OldKey = u, true, Target{Data: dev, Meta: l.engine}, u.Key.Bytes()
	return o, nil
}
