// Package engine is the conversion state machine: it moves a data area from
// an old dm-crypt mapping to a new one, window by window, so that a crash at
// any instant can be rolled forward or back by Recover. The order of every
// write and flush here is argued in docs/DESIGN.md; change neither without
// the other, and without the crash enumeration in tests/fault passing.
package engine

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
	"github.com/cryptshift/cryptshift/wal"
)

// Defaults for a new conversion.
const (
	// DefaultWindow: large enough that the per-window flushes cost little
	// next to the transfer (8 MiB measured within the speed targets), and
	// four windows in memory stay far below 64 MiB.
	DefaultWindow = 8 << 20
	// DefaultOnlineWindow is smaller: online, I/O to the window waits while
	// it is converted.
	DefaultOnlineWindow = 4 << 20
	DefaultMetaSize     = 32 << 20
	minMetaSize         = 1 << 20
)

// Target is where a conversion lives: the data device and the device that
// holds the header, digest table and log. When MetaOnData is set they are
// the same device and the metadata area is at its end.
type Target struct {
	Data       blockdev.Device
	Meta       blockdev.Device
	MetaOnData bool
}

// Side is one mapping as the user asked for it. Zero values mean "not
// given": on a new conversion they take defaults, on resume the recorded
// value, so a resume with no options at all is always consistent.
type Side struct {
	Cipher         string // "" = not given; "none" = plaintext
	Key            []byte
	SectorSize     int     // 0 = not given
	IVOffset       *uint64 // nil = not given
	IVLargeSectors *bool   // nil = not given
}

// Config is a conversion request.
type Config struct {
	Old, New   Side
	DataOffset *int64 // where the old data starts on Data; nil = 0 / recorded
	DataSize   int64  // 0 = up to the metadata area / recorded
	Mode       string // "" = journal / recorded
	Window     int64  // 0 = default / recorded
	Shift      int64  // shift mode gap; 0 = one window
	MetaSize   int64  // size of the metadata area on Data; 0 = default
	Force      bool   // accept what is otherwise refused (see errclass.Refused)
	// KeyVerified: the old key is proven by other means than the data (a
	// LUKS digest), so the samples of the data are not asked whether they
	// decrypt plausibly under it (a LUKS volume never written holds noise).
	KeyVerified bool
}

// Progress is reported after every window.
type Progress struct {
	Done, Total uint64 // windows
	BytesDone   uint64
	BytesTotal  uint64
	Mode        header.Mode
	Resumed     bool
}

// Hooks are test-only seams. Production callers leave them nil.
type Hooks struct {
	// DropFlush names flush points that are skipped, so tests can prove
	// the crash harness notices a missing flush.
	DropFlush map[FlushPoint]bool
	// AfterWindow runs after each window's progress is committed.
	AfterWindow func(done uint64)
}

// Holder serializes application I/O with the conversion of a window, for
// online conversion (package online provides one). The engine calls Hold before
// it reads window w, and Release only once the converted window and a
// progress record saying so are durable: from then on the application may
// write new data into the window, and recovery must never redo it.
type Holder interface {
	// Hold returns once I/O in flight to the window has completed and new
	// I/O to it waits.
	Hold(w uint64, start, length int64) error
	// Release serves the window with the new mapping and lets waiting I/O go.
	Release(w uint64, start, length int64) error
	// Abort is called instead of Release when the step failed: the window
	// must fail further I/O rather than serve it with the wrong mapping.
	Abort(w uint64, start, length int64, cause error)
}

// HolderBeginner is a Holder that must know the authenticated conversion
// before the first window: the engine calls Begin once the header is
// created or authenticated and any interrupted window recovered, before it
// holds anything. An error stops the conversion with nothing written to
// the data area.
type HolderBeginner interface {
	Holder
	Begin(h *header.Header, oldKey, newKey []byte) error
}

// CryptoDevices lets devices that do the crypto themselves carry the data
// instead of the userspace ciphers: online, private dm-crypt mappings of
// the data area, so the kernel's crypto engine does the work. The engine
// still computes the plaintext digests and writes the metadata itself.
//
// Every mode can use it: journal's record is the old ciphertext, which the
// engine reads raw from Target.Data; checksum's record also needs the new
// ciphertext, which only a Sealer can show (see Sealer).
type CryptoDevices interface {
	// Open is called once, after a HolderBeginner's Begin and before the
	// first window. Byte 0 of old and new is the data area's first byte:
	// reads from old return the plaintext as the old mapping decrypts it
	// from OldOffset; writes to new store plaintext encrypted with the new
	// mapping at NewOffset, no earlier than the write returns, and are
	// durable once new's Flush returns. The caller closes both after
	// Convert returns.
	Open(h *header.Header, oldKey, newKey []byte) (old, new blockdev.Device, err error)
}

// Options are how Convert runs, as opposed to what it converts.
type Options struct {
	// Holder, when set, makes the conversion online (see Holder).
	Holder Holder
	// Crypto, when set, moves the data through devices that encrypt and
	// decrypt it (see CryptoDevices) instead of userspace ciphers.
	Crypto CryptoDevices
	// Ciphers, when set, builds the transforms of the two mappings
	// instead of sectorcipher.New: the kernel's (package kcipher), for
	// specs without a userspace cipher or when the user asks for it.
	Ciphers  CipherMaker
	Progress func(Progress)
	Hooks    *Hooks
	// UUID fixes the conversion identity of a new conversion; tests use it
	// for reproducible traces. Zero means random.
	UUID [16]byte
	// Now stamps headers; nil means time.Now.
	Now func() time.Time
	// beforeRun runs once the conversion is created or authenticated and
	// any interrupted window recovered, before the first window is
	// written: a LUKS conversion commits its start there (luks.go).
	beforeRun func(resumed bool) error
}

// Result describes a finished or paused conversion.
type Result struct {
	Header  *header.Header
	Resumed bool
	// AlreadyComplete: the same conversion had already finished; nothing
	// was written.
	AlreadyComplete bool
}

var errAlreadyComplete = errors.New("already complete")

// conv is one open conversion: header authenticated, ciphers ready.
type conv struct {
	t      Target
	store  *header.Store
	h      *header.Header
	macKey []byte
	sum    *header.Summer
	oldC   sectorcipher.Cipher
	newC   sectorcipher.Cipher
	log    *wal.Log
	opts   Options
	buf    buffers
	// The keys, for a Holder that builds tables (HolderBeginner).
	oldKey, newKey []byte
	// plainOld and plainNew are Options.Crypto's devices, once opened.
	plainOld, plainNew blockdev.Device
	// keyVerified: Config.KeyVerified of a new conversion.
	keyVerified bool
}

func (c *conv) now() int64 {
	if c.opts.Now != nil {
		return c.opts.Now().Unix()
	}
	return time.Now().Unix()
}

// Convert starts a conversion, or resumes the one recorded on the target,
// and runs it to the end or until ctx is cancelled (then it finishes the
// window in hand, records a clean pause and returns errclass.Paused).
func Convert(ctx context.Context, t Target, cfg Config, opts Options) (*Result, error) {
	c, resumed, err := open(t, cfg, opts)
	if errors.Is(err, errAlreadyComplete) {
		return &Result{Header: c.h, Resumed: true, AlreadyComplete: true}, nil
	}
	if err != nil {
		return nil, err
	}
	if b, ok := opts.Holder.(HolderBeginner); ok {
		if err := b.Begin(c.h, c.oldKey, c.newKey); err != nil {
			return &Result{Header: c.h, Resumed: resumed}, fmt.Errorf("%w: %w", errclass.Device, err)
		}
	}
	if opts.Crypto != nil {
		old, nw, err := opts.Crypto.Open(c.h, c.oldKey, c.newKey)
		if err != nil {
			return &Result{Header: c.h, Resumed: resumed}, fmt.Errorf("%w: kernel crypto devices: %w", errclass.Device, err)
		}
		c.plainOld, c.plainNew = old, nw
	}
	if opts.beforeRun != nil {
		if err := opts.beforeRun(resumed); err != nil {
			return &Result{Header: c.h, Resumed: resumed}, err
		}
	}
	boundMemory(c.h.Window)
	if err := c.run(ctx, resumed); err != nil {
		return &Result{Header: c.h, Resumed: resumed}, err
	}
	return &Result{Header: c.h, Resumed: resumed}, nil
}

// boundMemory sets the garbage collector's soft memory limit to what a run
// needs, four window buffers and some room, unless GOMEMLIMIT says
// otherwise. With the default GOGC alone the heap may grow to twice the
// live buffers before a collection, and peak memory would creep up with the
// device size even though nothing live does. A soft limit never fails an
// allocation; it only makes the collector run sooner.
func boundMemory(window uint64) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(int64(4*window) + 24<<20)
}

// open authenticates an existing conversion (recovering an interrupted
// window) or creates a new one. Nothing is written to the data area here.
func open(t Target, cfg Config, opts Options) (*conv, bool, error) {
	if t.Data == nil || t.Meta == nil {
		return nil, false, fmt.Errorf("%w: no device", errclass.Usage)
	}
	store, err := header.ReadStore(t.Meta)
	if err != nil {
		return nil, false, errclass.IOf("read header", err)
	}
	peek, err := store.Current(nil)
	switch {
	case errors.Is(err, header.ErrNoHeader):
		c, err := create(t, store, cfg, opts, true)
		return c, false, err
	case firstCommitTorn(store):
		c, err := create(t, store, cfg, opts, false)
		return c, false, err
	case err != nil:
		return nil, false, fmt.Errorf("%w: %w", errclass.Header, err)
	}
	if peek.State == header.StateComplete {
		return openComplete(t, store, peek, cfg, opts)
	}
	c, err := resume(t, store, peek, cfg, opts)
	return c, true, err
}

// firstCommitTorn reports the state a crash during the first header commit
// of a conversion leaves: one slot never written, the other torn. Once that
// commit completes, every later commit rewrites one slot while the other
// stays valid, so this state cannot hide a conversion in progress; and the
// data area is written only after the first commit, so it is untouched. It
// means "no conversion", not a corrupt one that must be refused.
func firstCommitTorn(s *header.Store) bool {
	a, b := s.Copies[0].Err, s.Copies[1].Err
	return errors.Is(a, header.ErrNoHeader) && errors.Is(b, header.ErrCorrupt) ||
		errors.Is(a, header.ErrCorrupt) && errors.Is(b, header.ErrNoHeader)
}

// authenticate derives the MAC key from the given keys, checks them against
// the recorded key check values, and returns the authenticated header.
func authenticate(store *header.Store, peek *header.Header, oldKey, newKey []byte) (*header.Header, []byte, error) {
	if header.KCV(oldKey, peek.UUID) != peek.OldKCV {
		return nil, nil, fmt.Errorf("%w: the old key does not match the key this conversion started with", errclass.WrongKey)
	}
	if header.KCV(newKey, peek.UUID) != peek.NewKCV {
		return nil, nil, fmt.Errorf("%w: the new key does not match the key this conversion started with", errclass.WrongKey)
	}
	macKey, err := header.MACKey(oldKey, newKey, peek.UUID)
	if err != nil {
		return nil, nil, err
	}
	h, err := store.Current(macKey)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w (the header was altered, or belongs to other keys)", errclass.Header, err)
	}
	return h, macKey, nil
}

func mappingOf(m header.Mapping, key []byte) (sectorcipher.Mapping, error) {
	mm, err := m.WithKey(key)
	if err != nil {
		return sectorcipher.Mapping{}, fmt.Errorf("%w: %w", errclass.Header, err)
	}
	return mm, nil
}

// newConv builds the ciphers and the log for an authenticated header.
func newConv(t Target, store *header.Store, h *header.Header, macKey, oldKey, newKey []byte, opts Options) (*conv, error) {
	om, err := mappingOf(h.Old, oldKey)
	if err != nil {
		return nil, err
	}
	nm, err := mappingOf(h.New, newKey)
	if err != nil {
		return nil, err
	}
	oc, err := opts.cipher(om, h.DataSize/512)
	if err != nil {
		return nil, fmt.Errorf("%w: old mapping: %w", errclass.Usage, err)
	}
	nc, err := opts.cipher(nm, h.DataSize/512)
	if err != nil {
		return nil, fmt.Errorf("%w: new mapping: %w", errclass.Usage, err)
	}
	if uint64(t.Meta.Size()) < h.MetaOffset+h.MetaSize || uint64(t.Data.Size()) < h.DeviceSize {
		return nil, fmt.Errorf("%w: device is smaller than recorded (%d bytes, recorded %d)", errclass.Device, t.Data.Size(), h.DeviceSize)
	}
	sum, err := header.NewSummer(macKey)
	if err != nil {
		return nil, err
	}
	c := &conv{t: t, store: store, h: h, macKey: macKey, sum: sum, oldC: oc, newC: nc, opts: opts, oldKey: oldKey, newKey: newKey}
	c.log = wal.New(t.Meta, int64(h.LogOffset), int64(h.LogSize), h.UUID, macKey, int64(h.LogHeadOff), h.LogHeadSeq)
	store.Flush = func() error { return c.flush(t.Meta, FlushHeaderCommit) }
	return c, nil
}

// resume opens a recorded, unfinished conversion: keys checked, options
// checked against the record, the device checked to be the recorded one,
// and any interrupted window recovered.
func resume(t Target, store *header.Store, peek *header.Header, cfg Config, opts Options) (*conv, error) {
	h, macKey, err := authenticate(store, peek, cfg.Old.Key, cfg.New.Key)
	if err != nil {
		return nil, err
	}
	if err := conflicts(h, cfg); err != nil {
		return nil, err
	}
	if err := cryptoFits(h.Mode, opts); err != nil {
		return nil, err
	}
	if uint64(t.Data.Size()) != h.DeviceSize {
		return nil, fmt.Errorf("%w: device is %d bytes but the conversion was started on one of %d bytes: wrong device?", errclass.Device, t.Data.Size(), h.DeviceSize)
	}
	c, err := newConv(t, store, h, macKey, cfg.Old.Key, cfg.New.Key, opts)
	if err != nil {
		return nil, err
	}
	if _, err := c.recover(RecoverOptions{}); err != nil {
		return nil, err
	}
	// Online, the application writes converted windows, so their digests
	// are expected to differ; the dm table identifies the device instead.
	if opts.Holder == nil {
		if err := c.checkIdentity(); err != nil {
			if !cfg.Force {
				return nil, err
			}
			// --force: the user says this is the device; the window is
			// taken as it is (see recover --accept-damage).
			if err := c.recordAsIs(c.h.WindowAt(c.h.Done-1), FlushAcceptIdentity); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// conflicts lists every option given on resume that differs from the
// record: resuming must never quietly do something else than was started.
func conflicts(h *header.Header, cfg Config) error {
	var diffs []string
	side := func(name string, s Side, m header.Mapping) {
		if s.Cipher != "" {
			spec, err := sectorcipher.ParseKernelSpec(s.Cipher)
			if err != nil || spec.String() != m.Cipher {
				diffs = append(diffs, fmt.Sprintf("--%s-cipher %s (recorded %s)", name, s.Cipher, m.Cipher))
			}
		}
		if s.SectorSize != 0 && uint32(s.SectorSize) != m.SectorSize {
			diffs = append(diffs, fmt.Sprintf("--%s-sector-size %d (recorded %d)", name, s.SectorSize, m.SectorSize))
		}
		if s.IVOffset != nil && *s.IVOffset != m.IVOffset {
			diffs = append(diffs, fmt.Sprintf("--%s-iv-offset %d (recorded %d)", name, *s.IVOffset, m.IVOffset))
		}
		if s.IVLargeSectors != nil && *s.IVLargeSectors != m.IVLargeSectors {
			diffs = append(diffs, fmt.Sprintf("--%s-iv-large-sectors %v (recorded %v)", name, *s.IVLargeSectors, m.IVLargeSectors))
		}
	}
	side("old", cfg.Old, h.Old)
	side("new", cfg.New, h.New)
	if cfg.Mode != "" && cfg.Mode != h.Mode.String() {
		diffs = append(diffs, fmt.Sprintf("--resilience %s (recorded %s)", cfg.Mode, h.Mode))
	}
	if cfg.Window != 0 && uint64(cfg.Window) != h.Window {
		diffs = append(diffs, fmt.Sprintf("--window %d (recorded %d)", cfg.Window, h.Window))
	}
	if cfg.DataOffset != nil && uint64(*cfg.DataOffset) != h.OldOffset {
		diffs = append(diffs, fmt.Sprintf("--data-offset %d (recorded %d)", *cfg.DataOffset, h.OldOffset))
	}
	if cfg.DataSize != 0 && uint64(cfg.DataSize) != h.DataSize {
		diffs = append(diffs, fmt.Sprintf("--data-size %d (recorded %d)", cfg.DataSize, h.DataSize))
	}
	if cfg.Shift != 0 && uint64(cfg.Shift) != absDiff(h.OldOffset, h.NewOffset) {
		diffs = append(diffs, fmt.Sprintf("--shift %d (recorded %d)", cfg.Shift, absDiff(h.OldOffset, h.NewOffset)))
	}
	if len(diffs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: the conversion in progress was started differently: %s", errclass.Conflict, joinComma(diffs))
}

func joinComma(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(x)
	}
	return b.String()
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

// checkIdentity compares the last converted window with its recorded
// digest. Offline, nobody writes the device between runs, so a mismatch
// means this is not the device (or not the metadata) the conversion began
// on, and going on would write the wrong data.
func (c *conv) checkIdentity() error {
	if c.h.Done == 0 {
		return nil
	}
	w := c.h.WindowAt(c.h.Done - 1)
	entry, err := c.readDigest(w)
	if err != nil {
		return err
	}
	if entry == ([header.DigestEntrySize]byte{}) {
		return nil
	}
	start, n := c.h.WindowRange(w)
	buf := make([]byte, n)
	if _, err := c.t.Data.ReadAt(buf, int64(c.h.NewOffset)+start); err != nil {
		return errclass.IOf(fmt.Sprintf("read window %d", w), err)
	}
	d := c.plainDigest(buf, w, start, c.newC)
	if err := c.cipherErr(); err != nil {
		return err
	}
	if header.DigestEntry(c.macKey, w, d) != entry {
		return fmt.Errorf("%w: window %d (%s) does not hold the data this conversion wrote there: wrong device, or it was changed since; if this is the device, `cryptshift recover --accept-damage` (or convert --force) accepts the window as it is and goes on", errclass.Device, w, c.windowBytes(w))
	}
	return nil
}

func randomUUID(fixed [16]byte) ([16]byte, error) {
	if fixed != ([16]byte{}) {
		return fixed, nil
	}
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return u, fmt.Errorf("generate conversion UUID: %w", err)
	}
	u[6] = u[6]&0x0f | 0x40 // RFC 4122 version 4
	u[8] = u[8]&0x3f | 0x80
	return u, nil
}
