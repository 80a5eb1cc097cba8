package fault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/luks"
)

// luks1Scenario is a LUKS1 conversion to crash: a volume stock cryptsetup
// made with two PBKDF2 keyslots, 256 KiB of data in 64 KiB windows.
type luks1Scenario struct {
	name    string
	sepMeta bool // --metadata on its own disk; else the last 1 MiB of DEVICE
	format  []string
	cipher  string // --new-cipher
	keyBits int    // --new-key-size, 0 = the old one
	// keySlot0: --key-slot 0 with keyslot 0's passphrase only; keyslot 1
	// is erased at the end.
	keySlot0 bool
}

func (s luks1Scenario) String() string { return s.name }

const (
	luks1Data = 256 << 10
	luks1Meta = 1 << 20
)

func luks1Scenarios() []luks1Scenario {
	essiv := []string{"--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--hash", "sha256"}
	return []luks1Scenario{
		{name: "end-of-device/essiv-256-to-xts-512", format: essiv, cipher: "aes-xts-plain64", keyBits: 512},
		{name: "metadata-disk/essiv-256-to-xts-512", sepMeta: true, format: essiv, cipher: "aes-xts-plain64", keyBits: 512},
		{name: "end-of-device/xts-256/key-slot-0", format: []string{"--cipher", "aes-xts-plain64", "--key-size", "256"}, keySlot0: true},
	}
}

type luks1Fixture struct {
	sc       luks1Scenario
	im       *testkit.LUKSImage
	initial  []byte
	passes   [][]byte
	oldAreas []luks.Area // the keyslots' material before the conversion
}

func newLUKS1Fixture(t testing.TB, sc luks1Scenario) *luks1Fixture {
	t.Helper()
	size := int64(2<<20 + luks1Data)
	if !sc.sepMeta {
		size += luks1Meta
	}
	im, err := testkit.MakeLUKS1(t.TempDir(), size, sc.format, 2, luks1Data, 9)
	if err != nil {
		t.Fatal(err)
	}
	f := &luks1Fixture{sc: sc, im: im}
	if f.initial, err = os.ReadFile(im.Path); err != nil {
		t.Fatal(err)
	}
	for _, p := range im.Passes {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f.passes = append(f.passes, b)
	}
	v, err := luks.Open(blockdev.MemFrom(bytes.Clone(f.initial)), int64(len(f.initial)))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		k := v.V1.Keyslots[i]
		f.oldAreas = append(f.oldAreas, luks.Area{Offset: uint64(k.KeyMaterialOffset) * 512, Size: uint64(v.V1.KeyBytes) * 4000})
	}
	return f
}

func (f *luks1Fixture) carried() [][]byte {
	if f.sc.keySlot0 {
		return f.passes[:1]
	}
	return f.passes
}

func (f *luks1Fixture) request(meta blockdev.Device) engine.LUKS1Request {
	r := engine.LUKS1Request{LUKSRequest: engine.LUKSRequest{Passphrases: f.carried(), KeySlot: luks.AnySlot,
		NewCipher: f.sc.cipher, NewKeyBytes: f.sc.keyBits / 8, Mode: "journal", Window: 64 << 10, Meta: meta}}
	if f.sc.keySlot0 {
		r.KeySlot = 0
	}
	if meta == nil {
		r.MetaSize = luks1Meta
	}
	return r
}

func (f *luks1Fixture) images() [][]byte {
	imgs := [][]byte{bytes.Clone(f.initial)}
	if f.sc.sepMeta {
		imgs = append(imgs, make([]byte, luks1Meta))
	}
	return imgs
}

func (f *luks1Fixture) devices(imgs [][]byte) (dev, meta blockdev.Device) {
	dev = blockdev.MemFrom(bytes.Clone(imgs[0]))
	if f.sc.sepMeta {
		meta = blockdev.MemFrom(bytes.Clone(imgs[1]))
	}
	return dev, meta
}

func recordLUKS1(t testing.TB, f *luks1Fixture, hooks *engine.Hooks) *Domain {
	t.Helper()
	dom := NewDomain()
	imgs := f.images()
	disk := dom.NewDisk(imgs[0])
	var meta blockdev.Device
	if f.sc.sepMeta {
		meta = dom.NewDisk(imgs[1])
	}
	res, err := engine.ConvertLUKS1(context.Background(), disk, f.request(meta), engine.Options{Hooks: hooks})
	if err != nil || !res.Finished {
		t.Fatalf("recorded conversion: %v", err)
	}
	return dom
}

// luks1Data decrypts the LUKS1 image b's data with a passphrase, as stock
// cryptsetup would map it: the first luks1Data bytes and the volume key.
func luks1Plain(b, pass []byte) ([]byte, []byte, error) {
	plain, vk, err := testkit.LUKSData(b, pass)
	if err != nil {
		return nil, nil, err
	}
	return plain[:min(len(plain), luks1Data)], vk, nil
}

// cryptshiftLeft reports what of the conversion is still in the LUKS1
// header: the mark, the tag or the record.
func cryptshiftLeft(b []byte) string {
	v, err := luks.Open(blockdev.MemFrom(bytes.Clone(b)), int64(len(b)))
	if err != nil {
		return "the header does not open: " + err.Error()
	}
	if tagged, _ := v.Tagged(); tagged {
		return "the tag"
	}
	if next, _, err := v.PendingLUKS1(); next != nil || err != nil {
		return "the conversion record"
	}
	return ""
}

// checkLUKS1 checks one crash state; it returns a violation, or "".
//
//	L1 never one key over mixed data: while the header is a LUKS1 header
//	   stock cryptsetup opens (not marked), every carried passphrase opens
//	   it and the key it maps decrypts the whole data to the original;
//	   marked, stock cryptsetup sees no LUKS volume;
//	L2 recovery succeeds (or finds no conversion), leaves a state L1 holds
//	   for, and a second recovery changes nothing;
//	L3 after recovery, the conversion completes (convert again): the
//	   header carries no mark, tag or record, every carried passphrase
//	   opens a new volume key that decrypts the data to the original,
//	   --key-slot's other keyslot opens nothing, and the old keyslots'
//	   material is overwritten.
func (f *luks1Fixture) checkLUKS1(imgs [][]byte) string {
	if v := f.unmarkedOpens(imgs[0], "L1"); v != "" {
		return v
	}
	dev, meta := f.devices(imgs)
	none := func(err error) bool {
		return errclass.Code(err) == errclass.ExitHeader && bytes.Contains([]byte(err.Error()), []byte("records no cryptshift conversion"))
	}
	_, err := engine.RecoverLUKS1(context.Background(), dev, meta, f.carried(), engine.RecoverOptions{}, engine.Options{})
	if err != nil && !none(err) {
		return fmt.Sprintf("L2: recovery failed: %v", err)
	}
	once := contents(dev, meta)
	if v := f.unmarkedOpens(once[0], "L2: after recovery"); v != "" {
		return v
	}
	_, err2 := engine.RecoverLUKS1(context.Background(), dev, meta, f.carried(), engine.RecoverOptions{}, engine.Options{})
	if err2 != nil && !none(err2) || !sameAll(once, contents(dev, meta)) {
		return fmt.Sprintf("L2: a second recovery failed or changed something (errors %v, %v)", err, err2)
	}
	after := contents(dev, meta)[0]
	_, vk, err := luks1Plain(after, f.carried()[0])
	if err != nil || bytes.Equal(vk, f.im.VK) || cryptshiftLeft(after) != "" {
		var m blockdev.Device
		if f.sc.sepMeta {
			m = meta
		}
		res, err := engine.ConvertLUKS1(context.Background(), dev, f.request(m), engine.Options{})
		if f.sc.sepMeta && errclass.Code(err) == errclass.ExitDevice && bytes.Contains([]byte(err.Error()), []byte("--metadata holds data")) {
			// As for LUKS2: a crash while the first header was written to
			// a separate --metadata file left garbage there, refused.
			return ""
		}
		if err != nil || !res.Finished {
			return fmt.Sprintf("L3: the conversion did not complete after recovery: %v", err)
		}
		after = contents(dev, meta)[0]
	}
	return f.checkFinished(after)
}

// unmarkedOpens checks L1 on the image b: marked, or every carried
// passphrase maps the original data.
func (f *luks1Fixture) unmarkedOpens(b []byte, what string) string {
	_, err := luks.Open(blockdev.MemFrom(bytes.Clone(b)), int64(len(b)))
	switch {
	case errors.Is(err, luks.ErrInConversion):
	case err != nil:
		return fmt.Sprintf("%s: the LUKS1 header does not read: %v", what, err)
	default:
		for i, p := range f.carried() {
			plain, _, err := luks1Plain(b, p)
			if err != nil {
				return fmt.Sprintf("%s: unmarked, and passphrase %d does not open the volume: %v", what, i, err)
			}
			if !bytes.Equal(plain, f.im.Plain) {
				return fmt.Sprintf("%s: unmarked, and passphrase %d maps data that differ from the original (first at byte %d)", what, i, firstDiff(plain, f.im.Plain))
			}
		}
	}
	return ""
}

func (f *luks1Fixture) checkFinished(b []byte) string {
	if left := cryptshiftLeft(b); left != "" {
		return "L3: the finished header still carries " + left
	}
	if f.sc.keySlot0 {
		if _, _, err := luks1Plain(b, f.passes[1]); err == nil {
			return "L3: keyslot 1, not carried (--key-slot 0), still opens the finished volume"
		}
	}
	for i, p := range f.carried() {
		plain, vk, err := luks1Plain(b, p)
		switch {
		case err != nil:
			return fmt.Sprintf("L3: passphrase %d does not open the finished volume: %v", i, err)
		case bytes.Equal(vk[:len(f.im.VK)], f.im.VK):
			return fmt.Sprintf("L3: passphrase %d opens the old volume key", i)
		case f.sc.keyBits != 0 && len(vk)*8 != f.sc.keyBits:
			return fmt.Sprintf("L3: passphrase %d opens a %d-bit key", i, len(vk)*8)
		case !bytes.Equal(plain, f.im.Plain):
			return fmt.Sprintf("L3: passphrase %d maps data that differ from the original (first at byte %d)", i, firstDiff(plain, f.im.Plain))
		}
	}
	for i, a := range f.oldAreas {
		old := f.initial[a.Offset : a.Offset+a.Size]
		// Any 4 KiB of the old material left is a failure: the new
		// keyslots may cover part of the old ones' place.
		for off := uint64(0); off+4096 <= a.Size; off += 4096 {
			if bytes.Equal(b[a.Offset+off:a.Offset+off+4096], old[off:off+4096]) {
				return fmt.Sprintf("L3: old keyslot %d's material is still on disk (at byte %d)", i, a.Offset+off)
			}
		}
	}
	return ""
}

func sweepLUKS1(t testing.TB, f *luks1Fixture, dom *Domain, eo EnumOptions, stride int, stop bool) (string, int) {
	t.Helper()
	n := 0
	first := ""
	for _, k := range flushPointsPlus(dom, stride) {
		states, err := dom.States(k, eo)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range states {
			imgs, err := dom.Image(k, st.Choice)
			if err != nil {
				t.Fatal(err)
			}
			n++
			if v := f.checkLUKS1(imgs); v != "" && first == "" {
				first = fmt.Sprintf("k=%d %s: %s", k, dom.Describe(k, st.Choice), v)
				if stop {
					return first, n
				}
			}
		}
	}
	return first, n
}

// TestCrashLUKS1 crashes LUKS1 conversions at every point next to a flush
// (and a sample between writes): the conversion's first header, the mark's
// tag and magic, sector 1 of the new layout, the new keyslots' material,
// the conversion record, every window, the last checkpoint, the switch,
// the overwriting of the old material and the tag's clearing; with the
// small subsets of the pending writes and torn sectors. Every state must
// satisfy L1-L3 (checkLUKS1).
func TestCrashLUKS1(t *testing.T) {
	for i, sc := range luks1Scenarios() {
		t.Run(sc.String(), func(t *testing.T) {
			if testing.Short() && i > 0 {
				t.Skip("short: the first scenario only")
			}
			t.Parallel()
			f := newLUKS1Fixture(t, sc)
			dom := recordLUKS1(t, f, nil)
			eo := EnumOptions{MaxStates: 10, Torn: true, Seed: 5}
			stride := 8
			if testing.Short() {
				eo.MaxStates, stride = 2, 1000
			}
			v, n := sweepLUKS1(t, f, dom, eo, stride, false)
			tallyFor("luks1/" + sc.String()).states.Add(int64(n))
			if v != "" {
				t.Fatalf("after %d states: %s", n, v)
			}
			t.Logf("%d crash states over %d ops", n, dom.Ops())
		})
	}
}

type luks1Mutant struct {
	point engine.FlushPoint
	sc    luks1Scenario
}

func luks1Mutants() []luks1Mutant {
	sc := luks1Scenarios()
	end, sep := sc[0], sc[1]
	return []luks1Mutant{
		// The magic can reach the disk without the tag: cryptsetup's
		// reencryption mark, which recovery must refuse.
		{engine.FlushLUKS1Mark, end},
		// With the metadata on its own disk nothing flushes the data disk
		// between the record and the first window.
		{engine.FlushLUKS1StartCommit, sep},
		// The wipe's writes can reach the disk before the switch: the old
		// header over wiped old keyslots.
		{engine.FlushLUKS1FinalSwitch, end},
	}
}

// TestLUKS1MutationDroppedFlushIsCaught drops each LUKS1 flush point and
// requires a crash state that violates L1-L3.
func TestLUKS1MutationDroppedFlushIsCaught(t *testing.T) {
	for _, tc := range luks1Mutants() {
		t.Run(string(tc.point)+"/"+tc.sc.String(), func(t *testing.T) {
			t.Parallel()
			f := newLUKS1Fixture(t, tc.sc)
			dom := recordLUKS1(t, f, &engine.Hooks{DropFlush: map[engine.FlushPoint]bool{tc.point: true}})
			eo := EnumOptions{MaxStates: 64, Seed: 1}
			v, n := sweepLUKS1(t, f, dom, eo, 1, true)
			tallyFor("mutants").states.Add(int64(n))
			if v == "" {
				t.Fatalf("flush point %s dropped, yet %d crash states passed every property", tc.point, n)
			}
			t.Logf("caught after %d states: %s", n, v)
		})
	}
}
