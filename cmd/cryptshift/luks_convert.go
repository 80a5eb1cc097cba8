package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/luks"
)

// maxPassFile bounds a passphrase file (cryptsetup's own default limit is
// 8 MiB; key files of a few KiB are what people use).
const maxPassFile = 64 << 10

func passFileFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: "key-file", Usage: "LUKS: `PASSFILE` whose bytes are a keyslot's passphrase, as cryptsetup --key-file reads it; repeat once per keyslot to carry over"}
}

func luksConvertFlags() []cli.Flag {
	return []cli.Flag{
		passFileFlag(),
		&cli.IntFlag{Name: "key-slot", Usage: "LUKS: carry over only keyslot `N` (the other keyslots are erased at the end)"},
		&cli.IntFlag{Name: "new-key-size", Usage: "LUKS: new volume key size in `BITS` (default: the old key's)"},
		decryptFlag(),
	}
}

// readPassFiles reads every --key-file.
func readPassFiles(c *cli.Context) ([][]byte, error) {
	var out [][]byte
	for _, p := range c.StringSlice("key-file") {
		k, err := readKeyFileMax(keyStore(c), "key-file", p, maxPassFile)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// plainOnlyFlags are convert's flags that describe a plain mapping; on a
// LUKS volume the header says all of it.
var plainOnlyFlags = []string{"old-key-file", "new-key-file", "old-cipher", "old-sector-size", "old-iv-offset", "old-iv-large-sectors",
	"new-iv-offset", "new-iv-large-sectors", "data-offset", "data-size", "shift", "metadata-size", "new-like", "crypto"}

// luksFlagsOn refuses the LUKS-only flags on a plain mapping.
func luksFlagsOn(c *cli.Context) error {
	for _, f := range []string{"key-file", "key-slot", "new-key-size"} {
		if c.IsSet(f) {
			return usageErr("--%s is for LUKS volumes; DEVICE has no LUKS header", f)
		}
	}
	return nil
}

// convertLUKS converts a LUKS2 volume offline (engine.ConvertLUKS2), or a
// LUKS1 one (convertLUKS1).
func convertLUKS(c *cli.Context, stderr io.Writer, dev string, sig *luks.Signature) error {
	if isLUKS1(sig) {
		return convertLUKS1(c, stderr, dev, sig)
	}
	if sig.Version != 2 || sig.Reencrypting {
		return fmt.Errorf("%w: %s is a %s: cryptshift does not convert it; converting its data area as a plain mapping would leave the keyslots wrapping the old volume key",
			errclass.Device, dev, sig)
	}
	if c.IsSet("old-key-file") || c.IsSet("new-key-file") {
		return fmt.Errorf("%w: %s is a %s: give its passphrases with --key-file, not --old-key-file/--new-key-file: converting its data area as a plain mapping would leave the keyslots wrapping the old volume key",
			errclass.Device, dev, sig)
	}
	for _, f := range plainOnlyFlags {
		if c.IsSet(f) && (f != "crypto" || c.String("online") == "") {
			return usageErr("--%s does not apply to a LUKS2 volume: its header gives the mapping", f)
		}
	}
	name := c.String("online")
	if name != "" {
		if c.IsSet("metadata") {
			return usageErr("--metadata with --online: an online LUKS2 conversion keeps its metadata in the LUKS2 keyslots area")
		}
		if os.Getenv(onlineWorkerEnv) == "" {
			return guardOnline(c, stderr, name, dev)
		}
	}
	passes, err := readPassFiles(c)
	if err != nil {
		return err
	}
	if len(passes) == 0 {
		return usageErr("%s is a %s: give the passphrase of each active keyslot with --key-file PASSFILE (or --key-slot N and its passphrase)", dev, sig)
	}
	req := engine.LUKSRequest{Passphrases: passes, KeySlot: luks.AnySlot, NewSectorSize: c.Int("new-sector-size"),
		Mode: c.String("resilience"), Force: c.Bool("force")}
	if c.IsSet("key-slot") {
		if req.KeySlot = c.Int("key-slot"); req.KeySlot < 0 {
			return usageErr("--key-slot %d: keyslots are 0 to 31", req.KeySlot)
		}
	}
	if c.IsSet("new-cipher") {
		if req.NewCipher = c.String("new-cipher"); req.NewCipher == "" || req.NewCipher == "none" {
			return usageErr("--new-cipher %q: a LUKS2 volume needs a cipher", req.NewCipher)
		}
	}
	if c.IsSet("new-key-size") {
		bits := c.Int("new-key-size")
		if bits <= 0 || bits%8 != 0 {
			return usageErr("--new-key-size %d: a multiple of 8 bits", bits)
		}
		req.NewKeyBytes = bits / 8
	}
	if c.IsSet("new-sector-size") && req.NewSectorSize <= 0 {
		return usageErr("--new-sector-size %d: want 512, 1024, 2048 or 4096", req.NewSectorSize)
	}
	if req.Window, _, err = sizeFlag(c, "window"); err != nil {
		return err
	}
	mode, interval, err := progressFlags(c)
	if err != nil {
		return err
	}
	m := newMeter(stderr, mode, dev, interval)
	in := watchSignalsTo(c.Context, m.notice)
	defer in.stop()
	stopMetrics, stalls := watchMetrics(c.String("metrics-file"), dev, m, stderr)
	defer stopMetrics()
	engineHooks, onlineHooks := testHooks(in)
	req.Notify = func(s string) { fmt.Fprintf(c.App.Writer, "%s: %s\n", dev, s) }
	if name != "" {
		return convertLUKSOnline(in.ctx, c, stderr, name, dev, req, engine.Options{Progress: m.Update, Hooks: engineHooks}, stalls.chain(onlineHooks), m)
	}
	return convertLUKSOffline(c, dev, "LUKS2", m, func(data, meta blockdev.Device) (*engine.LUKSResult, error) {
		req.Meta = meta
		return engine.ConvertLUKS2(in.ctx, data, req, engine.Options{Progress: m.Update, Hooks: engineHooks})
	})
}

// convertLUKSOffline opens DEVICE and its metadata for an offline LUKS
// conversion of either version, runs it (meta is nil when the metadata
// lives on DEVICE), removes a --metadata file it created for a run that
// wrote no header, and reports the outcome.
func convertLUKSOffline(c *cli.Context, dev, version string, m *meter, run func(data, meta blockdev.Device) (*engine.LUKSResult, error)) error {
	t, cleanup, err := openTarget(dev, c.String("metadata"), metaCreateSize(c, engine.Config{}), blockdev.Options{Exclusive: true})
	if err != nil {
		return err
	}
	var meta blockdev.Device
	if !t.MetaOnData {
		meta = t.Meta
	}
	res, err := run(t.Data, meta)
	cleanup(err != nil && !t.MetaOnData && !hasHeader(t.Meta))
	var er *engine.Result
	if res != nil && res.Header != nil {
		er = &engine.Result{Header: res.Header}
	}
	if err := reportOutcome(m, er, err); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Conversion complete. The %s volume %s (UUID %s) now has a new volume key; open it as before, e.g.\n  cryptsetup open %s NAME\n", version, dev, res.UUID, dev)
	return nil
}

// luksVolume reports the LUKS volume on dev cryptshift converts (LUKS2, or
// LUKS1 plain or marked by cryptshift), or nil.
func luksVolume(dev string) *luks.Signature {
	sig := detectLUKS(dev)
	if isLUKS1(sig) {
		return sig
	}
	if sig == nil || sig.Version != 2 || sig.Reencrypting {
		return nil
	}
	return sig
}

// recoverLUKS is recover on a LUKS volume.
func recoverLUKS(c *cli.Context, dev string, sig *luks.Signature) error {
	if c.IsSet("old-key-file") || c.IsSet("new-key-file") {
		return usageErr("%s is a %s: recover takes its passphrases with --key-file", dev, sig)
	}
	if c.IsSet("activate") && isLUKS1(sig) {
		return usageErr("%s is a %s: --activate is not supported for LUKS1 volumes yet (run `cryptshift convert` to finish, then cryptsetup open)", dev, sig)
	}
	passes, err := readPassFiles(c)
	if err != nil {
		return err
	}
	if c.IsSet("activate") {
		return activateLUKS(c, dev, passes)
	}
	t, cleanup, err := openTarget(dev, c.String("metadata"), 0, blockdev.Options{Exclusive: true})
	if err != nil {
		return err
	}
	defer cleanup(false)
	meta := separateMeta(t)
	res, err := luksEngineFor(sig).recover(c, t.Data, meta, passes, engine.RecoverOptions{AcceptDamage: c.Bool("accept-damage")})
	if err != nil {
		return fmt.Errorf("recover %s: %w", dev, err)
	}
	fmt.Fprintf(c.App.Writer, "Recovered %s: %s\n", dev, res.Action)
	if !res.Finished {
		fmt.Fprintf(c.App.Writer, "The conversion is paused; run `cryptshift convert --key-file PASSFILE %s` to go on (stock cryptsetup refuses the volume until it completes).\n", dev)
	}
	return nil
}

// verifyLUKS opens the conversion recorded in a LUKS header with a
// passphrase and audits it as verify does a plain one.
func verifyLUKS(c *cli.Context, dev string, sig *luks.Signature, run func(t engine.Target, oldKey, newKey []byte) error) error {
	if c.String("online") != "" || c.Bool("repair") || c.IsSet("old-key-file") || c.IsSet("new-key-file") {
		return usageErr("%s is a %s: verify takes its passphrases with --key-file; --online and --repair are not supported for LUKS volumes yet", dev, sig)
	}
	passes, err := readPassFiles(c)
	if err != nil {
		return err
	}
	t, cleanup, err := openTarget(dev, c.String("metadata"), 0, blockdev.Options{Exclusive: true, ReadOnly: true})
	if err != nil {
		return err
	}
	defer cleanup(false)
	meta := separateMeta(t)
	o, err := luksEngineFor(sig).open(t.Data, meta, passes)
	if err != nil {
		return fmt.Errorf("verify %s: %w", dev, err)
	}
	defer o.Close()
	return run(o.Target, o.OldKey, o.NewKey)
}

// luksStatusReport is status --json for a LUKS2 volume.
type luksStatusReport struct {
	Device     string        `json:"device"`
	LUKS       int           `json:"luks_version"`
	UUID       string        `json:"luks_uuid"`
	Label      string        `json:"label"`
	State      string        `json:"luks_state"` // none, converting, wiping
	Keyslots   []int         `json:"keyslots_kept"`
	Erased     []int         `json:"keyslots_erased"`
	Metadata   string        `json:"metadata,omitempty"`
	Conversion *statusReport `json:"conversion,omitempty"`
	Next       string        `json:"next"`
}

// statusLUKS is status on a LUKS volume; it needs no keys.
func statusLUKS(c *cli.Context, dev string) error {
	t, cleanup, err := openTarget(dev, c.String("metadata"), 0, blockdev.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer cleanup(false)
	meta := separateMeta(t)
	st, err := luksEngineFor(detectLUKS(dev)).status(t.Data, meta)
	if err != nil {
		return fmt.Errorf("status %s: %w", dev, err)
	}
	r := luksStatusReport{Device: dev, LUKS: st.Version, UUID: st.UUID, Label: st.Label, State: st.State,
		Keyslots: nonNil(st.Keyslots), Erased: nonNil(st.Erased), Metadata: st.Metadata}
	if st.Engine != nil {
		rep := buildStatus(dev, c.String("metadata"), st.Engine)
		r.Conversion = &rep
	}
	switch st.State {
	case "none":
		r.Next = "nothing: no cryptshift conversion is recorded; stock cryptsetup opens the volume"
	case "wiping":
		r.Next = "the volume maps its new key; run `cryptshift recover DEVICE` (no key needed) to finish overwriting the old keyslots"
	case "starting":
		r.Next = "no window was written: run `cryptshift recover DEVICE` (no key needed) to unmark the volume, or convert again to start"
	default:
		r.Next = "run `cryptshift convert --key-file PASSFILE DEVICE` to go on; stock cryptsetup refuses to open the volume until the conversion completes"
		if r.Conversion != nil && r.Conversion.OpenWindow != nil {
			r.Next = "a window was in flight: run `cryptshift recover --key-file PASSFILE DEVICE` (or convert again, which recovers first)"
		}
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "Device:      %s\n", dev)
	fmt.Fprintf(w, "LUKS:        LUKS%d, UUID %s", r.LUKS, r.UUID)
	if r.Label != "" {
		fmt.Fprintf(w, ", label %q", r.Label)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Conversion:  %s\n", luksConversionLine(r.LUKS, r.State))
	fmt.Fprintf(w, "Keyslots:    kept %s", ints(r.Keyslots))
	if len(r.Erased) > 0 {
		fmt.Fprintf(w, "; erased at the end %s", ints(r.Erased))
	}
	fmt.Fprintln(w)
	if r.Metadata != "" {
		fmt.Fprintf(w, "Metadata:    %s\n", r.Metadata)
	}
	if rep := r.Conversion; rep != nil {
		pct := 100.0
		if rep.BytesTotal > 0 {
			pct = 100 * float64(rep.BytesDone) / float64(rep.BytesTotal)
		}
		fmt.Fprintf(w, "State:       %s: %d of %d windows (%s of %s, %.1f%%), %s resilience\n", rep.State, rep.WindowsDone, rep.WindowsTotal,
			formatBytes(rep.BytesDone), formatBytes(rep.BytesTotal), pct, rep.Mode)
		fmt.Fprintf(w, "Old:         %s, %d-bit key, sector size %d\n", rep.Old.Cipher, rep.Old.KeyBits, rep.Old.SectorSize)
		fmt.Fprintf(w, "New:         %s, %d-bit key, sector size %d\n", rep.New.Cipher, rep.New.KeyBits, rep.New.SectorSize)
	}
	fmt.Fprintf(w, "Next:        %s\n", r.Next)
	return nil
}

func nonNil(s []int) []int {
	if s == nil {
		return []int{}
	}
	return s
}

func ints(s []int) string {
	if len(s) == 0 {
		return "none"
	}
	p := make([]string, len(s))
	for i, x := range s {
		p[i] = fmt.Sprint(x)
	}
	return strings.Join(p, ", ")
}

// separateMeta is t's metadata device when it is not the data device (the
// LUKS2 engine calls take nil for metadata inside the keyslots area).
func separateMeta(t engine.Target) blockdev.Device {
	if t.MetaOnData {
		return nil
	}
	return t.Meta
}
