package online

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// fakeDM models the device-mapper state the holder drives: live and
// inactive tables, suspension, and which devices reference which. After
// every operation it checks the property the holder exists for: wherever
// the served device is not suspended, each sector is served with the
// mapping the disk holds for it, or its I/O waits or fails.
type fakeDM struct {
	t     *testing.T
	devs  map[string]*fakeDev
	minor int
	ops   []string
	name  string
	l     *layout
	disk  map[uint64]string // window start sector -> "old", "new", "flux"
	win   uint64            // window size, sectors
	fail  map[string]error  // op prefix -> error to return
	sizes map[string]uint64 // backing device -> sectors; absent: 1 << 30
	// onOp, when set, runs before each op: a neighbour acting between
	// the holder's check and its ioctl.
	onOp func(op string)
}

type fakeDev struct {
	devno          string
	live, inactive []dm.Target
	suspended      bool
}

func newFakeDM(t *testing.T) *fakeDM {
	return &fakeDM{t: t, devs: map[string]*fakeDev{}, disk: map[uint64]string{}, fail: map[string]error{}, sizes: map[string]uint64{}}
}

func (f *fakeDM) add(name string, live []dm.Target) {
	f.minor++
	f.devs[name] = &fakeDev{devno: fmt.Sprintf("253:%d", f.minor), live: live}
}

func (f *fakeDM) op(s string) error {
	if f.onOp != nil {
		f.onOp(s)
	}
	f.ops = append(f.ops, s)
	for p, err := range f.fail {
		if strings.HasPrefix(s, p) {
			return err
		}
	}
	return nil
}

func flagStr(fl dm.SuspendFlags) string {
	var p []string
	if fl&dm.NoFlush != 0 {
		p = append(p, "noflush")
	}
	if fl&dm.SkipLockfs != 0 {
		p = append(p, "skiplockfs")
	}
	return strings.Join(p, ",")
}

func (f *fakeDM) create(name, uuid string, table []dm.Target) error {
	if err := f.op("create " + name); err != nil {
		return err
	}
	if _, ok := f.devs[name]; ok {
		return errors.New("exists")
	}
	f.add(name, table)
	f.check()
	return nil
}

func (f *fakeDM) load(name string, table []dm.Target) error {
	if err := f.op("load " + name); err != nil {
		return err
	}
	if err := dm.CheckTable(table); err != nil {
		f.t.Fatalf("holder loaded an invalid table into %s: %v", name, err)
	}
	d := f.devs[name]
	if d == nil {
		return errors.New("ENXIO")
	}
	d.inactive = table
	return nil
}

func (f *fakeDM) suspend(name string, fl dm.SuspendFlags) error {
	if err := f.op("suspend " + name + " " + flagStr(fl)); err != nil {
		return err
	}
	if f.devs[name].suspended {
		return errors.New("EINVAL") // as the kernel answers a second suspend
	}
	f.devs[name].suspended = true
	return nil
}

func (f *fakeDM) resume(name string, fl dm.SuspendFlags) error {
	if err := f.op("resume " + name); err != nil {
		return err
	}
	d := f.devs[name]
	if d.inactive != nil {
		d.live, d.inactive = d.inactive, nil
	}
	d.suspended = false
	f.check()
	return nil
}

func (f *fakeDM) remove(name string) error {
	if err := f.op("remove " + name); err != nil {
		return err
	}
	if f.openCount(name) > 0 {
		return errors.New("EBUSY")
	}
	delete(f.devs, name)
	return nil
}

func (f *fakeDM) openCount(name string) int {
	d := f.devs[name]
	n := 0
	for _, o := range f.devs {
		for _, tb := range [][]dm.Target{o.live, o.inactive} {
			for _, t := range tb {
				if t.Type == "linear" && strings.HasPrefix(t.Params, d.devno+" ") {
					n++
				}
			}
		}
	}
	return n
}

func (f *fakeDM) info(name string) (dm.DevInfo, error) {
	d := f.devs[name]
	if d == nil {
		return dm.DevInfo{Name: name}, nil
	}
	var maj, min uint32
	fmt.Sscanf(d.devno, "%d:%d", &maj, &min)
	return dm.DevInfo{Exists: true, Name: name, Suspended: d.suspended, OpenCount: f.openCount(name), Major: maj, Minor: min,
		TargetCount: len(d.live), LiveTable: d.live != nil, Inactive: d.inactive != nil}, nil
}

func (f *fakeDM) devSize(devno string) (uint64, error) {
	if n, ok := f.sizes[devno]; ok {
		return n, nil
	}
	return 1 << 30, nil
}

func (f *fakeDM) table(name string) ([]dm.Target, error) {
	if d := f.devs[name]; d != nil {
		return d.live, nil
	}
	return nil, errors.New("ENXIO")
}

// served resolves what the served device does with sector s: "old", "new",
// "wait" (queued in a suspended device), "error", or "?" (a wrong mapping).
func (f *fakeDM) served(s uint64) string {
	d := f.devs[f.name]
	if d.suspended {
		return "wait"
	}
	for _, t := range d.live {
		if s < t.Start || s >= t.Start+t.Length {
			continue
		}
		if t.Type == "linear" && !strings.HasPrefix(t.Params, f.l.dev+" ") {
			for _, h := range f.devs {
				if strings.HasPrefix(t.Params, h.devno+" ") {
					if h.suspended {
						return "wait"
					}
					ht := h.live[0]
					if ht.Type == "error" {
						return "error"
					}
					if len(h.live) != 1 || ht.Length != t.Length {
						return "?"
					}
					ht.Start = t.Start
					return kindName(f.l.classify(ht))
				}
			}
			return "?"
		}
		return kindName(f.l.classify(t))
	}
	return "?"
}

func kindName(k int, err error) string {
	switch {
	case err != nil:
		return "?"
	case k == 0:
		return "old"
	case k == 1:
		return "new"
	}
	return "?"
}

func (f *fakeDM) check() {
	if f.l == nil || f.devs[f.name] == nil {
		return
	}
	for w := uint64(0); w < f.l.size; w += f.win {
		got := f.served(w)
		want := f.disk[w]
		if got == "wait" || got == "error" || got == want {
			continue
		}
		f.t.Fatalf("after %q: window at sector %d is %s on disk but served as %s", f.ops[len(f.ops)-1], w, want, got)
	}
}

func testMappings(t *testing.T) (old, new sectorcipher.Mapping) {
	old = sectorcipher.Mapping{Spec: testkit.Spec(t, "aes-xts-plain64"), Key: testkit.Key(64, 1), SectorSize: 512}
	new = sectorcipher.Mapping{Spec: testkit.Spec(t, "aes-xts-plain64"), Key: testkit.Key(64, 100), SectorSize: 4096}
	return old, new
}

// setup makes NAME a single old-mapping crypt target over 8:16 at offset
// 2048 sectors, with windows of win sectors.
func setup(t *testing.T, n, win uint64) (*fakeDM, *Online) {
	f := newFakeDM(t)
	old, new := testMappings(t)
	f.name = "data"
	f.win = win
	f.add("data", []dm.Target{dm.MappingTarget(old, "8:16", 2048, 0, n*win, []string{"allow_discards"})})
	for w := uint64(0); w < n; w++ {
		f.disk[w*win] = "old"
	}
	o, err := newOnline(f, OnlineConfig{Name: "data", Old: old, New: new, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	f.l = o.l
	f.check()
	return f, o
}

// convert plays the engine: hold, rewrite the window on disk, release.
func convert(t *testing.T, f *fakeDM, o *Online, order []uint64) {
	t.Helper()
	for _, w := range order {
		start, n := int64(w*f.win*512), int64(f.win*512)
		if err := o.Hold(w, start, n); err != nil {
			t.Fatalf("hold %d: %v", w, err)
		}
		f.disk[w*f.win] = "flux"
		f.check()
		f.disk[w*f.win] = "new"
		f.check()
		if err := o.Release(w, start, n); err != nil {
			t.Fatalf("release %d: %v", w, err)
		}
	}
}

func TestOnlineServesTheRightMappingThroughout(t *testing.T) {
	for _, desc := range []bool{false, true} {
		t.Run(fmt.Sprintf("descending=%v", desc), func(t *testing.T) {
			f, o := setup(t, 5, 64)
			order := []uint64{0, 1, 2, 3, 4}
			if desc {
				order = []uint64{4, 3, 2, 1, 0}
			}
			convert(t, f, o, order)
			if err := o.Finish(); err != nil {
				t.Fatal(err)
			}
			live := f.devs["data"].live
			if len(live) != 1 || kindName(f.l.classify(live[0])) != "new" || !strings.Contains(live[0].Params, "allow_discards") {
				t.Fatalf("final table %v", live)
			}
			if len(f.devs) != 1 {
				t.Fatalf("hold devices left: %v", f.devs)
			}
			if len(o.Stats()) != 5 {
				t.Fatalf("stats for %d windows", len(o.Stats()))
			}
		})
	}
}

func TestOnlineIoctlOrder(t *testing.T) {
	f, o := setup(t, 3, 64)
	convert(t, f, o, []uint64{0, 1, 2})
	h0, h1 := o.holds[0], o.holds[1]
	want := []string{
		"create " + h0, "load data", "suspend data noflush,skiplockfs", "resume data", "suspend " + h0 + " skiplockfs",
		"load " + h0, "resume " + h0,
		"create " + h1, "load data", "suspend data noflush,skiplockfs", "resume data", "suspend " + h1 + " skiplockfs",
		"load " + h1, "resume " + h1,
		// The spare device is reused only once data no longer routes to it.
		"load " + h0, "resume " + h0, "load data", "suspend data noflush,skiplockfs", "resume data", "suspend " + h0 + " skiplockfs",
		"load " + h0, "resume " + h0,
	}
	if got := strings.Join(f.ops, "\n"); got != strings.Join(want, "\n") {
		t.Fatalf("ioctl order:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

func TestOnlineRefusesOutOfOrderWindows(t *testing.T) {
	f, o := setup(t, 4, 64)
	convert(t, f, o, []uint64{0})
	if err := o.Hold(2, 2*64*512, 64*512); err == nil {
		t.Fatal("hold of a window not next to the converted part was accepted")
	}
	if err := o.Release(1, 64*512, 64*512); err == nil {
		t.Fatal("release of a window not held was accepted")
	}
	if err := o.Finish(); err == nil {
		t.Fatal("finish with windows left was accepted")
	}
}

func TestOnlineAbortFailsTheWindow(t *testing.T) {
	f, o := setup(t, 3, 64)
	convert(t, f, o, []uint64{0})
	if err := o.Hold(1, 64*512, 64*512); err != nil {
		t.Fatal(err)
	}
	f.disk[64] = "flux" // the engine failed midway: the window is a mixture
	o.Abort(1, 64*512, 64*512, errors.New("write failed"))
	if got := f.served(64); got != "error" {
		t.Fatalf("aborted window is served as %s", got)
	}
	if got := f.served(0); got != "new" {
		t.Fatalf("converted window is served as %s", got)
	}
	if err := o.Hold(2, 128*512, 64*512); err == nil {
		t.Fatal("hold after abort accepted")
	}
	if err := o.Finish(); err == nil {
		t.Fatal("finish after abort accepted")
	}
}

func TestOnlineReleaseFailureFailsTheWindow(t *testing.T) {
	f, o := setup(t, 2, 64)
	if err := o.Hold(0, 0, 64*512); err != nil {
		t.Fatal(err)
	}
	f.disk[0] = "new"
	f.fail["load "+o.holds[0]] = errors.New("ENOMEM")
	if err := o.Release(0, 0, 64*512); err == nil {
		t.Fatal("release succeeded although the table could not be loaded")
	}
	// The error table could not be loaded either: the window keeps waiting,
	// which is still never the wrong key.
	if got := f.served(0); got != "wait" {
		t.Fatalf("window served as %s", got)
	}
}

func TestOnlineHoldFailureBeforeSwapLeavesOldMapping(t *testing.T) {
	f, o := setup(t, 2, 64)
	f.fail["suspend data"] = errors.New("EIO")
	if err := o.Hold(0, 0, 64*512); err == nil {
		t.Fatal("hold succeeded")
	}
	o.Abort(0, 0, 64*512, errors.New("hold failed"))
	if got := f.served(0); got != "old" {
		t.Fatalf("window served as %s", got)
	}
}

func TestNewOnlineRefusesForeignTables(t *testing.T) {
	old, new := testMappings(t)
	other := old
	other.Key = testkit.Key(64, 7)
	cases := map[string][]dm.Target{
		"wrong key":  {dm.MappingTarget(other, "8:16", 2048, 0, 256, nil)},
		"hold route": {{Start: 0, Length: 256, Type: "linear", Params: "253:9 0"}},
		"error":      {{Start: 0, Length: 256, Type: "error"}},
	}
	for name, live := range cases {
		f := newFakeDM(t)
		f.add("data", live)
		if name == "hold route" {
			f.add("cryptshift-x-hold0", []dm.Target{{Length: 256, Type: "error"}})
			f.devs["data"].live[0].Params = f.devs["cryptshift-x-hold0"].devno + " 0"
		}
		if _, err := newOnline(f, OnlineConfig{Name: "data", Old: old, New: new}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCompositeAndResume(t *testing.T) {
	old, new := testMappings(t)
	uuid := [16]byte{1, 2, 3}
	h := &header.Header{UUID: uuid, DataSize: 5 * 64 * 512, OldOffset: 2048 * 512, NewOffset: 2048 * 512, Window: 64 * 512,
		State: header.StatePaused, Done: 2,
		Old:    header.Mapping{Cipher: "aes-xts-plain64", KeyBytes: 64, SectorSize: 512},
		New:    header.Mapping{Cipher: "aes-xts-plain64", KeyBytes: 64, SectorSize: 4096},
		OldKCV: header.KCV(old.Key, uuid), NewKCV: header.KCV(new.Key, uuid)}
	keys := Keys{Old: old.Key, New: new.Key}
	for _, desc := range []bool{false, true} {
		h.Descending = desc
		ts, err := Composite(h, keys, "8:16", nil)
		if err != nil {
			t.Fatal(err)
		}
		f := newFakeDM(t)
		f.name, f.win = "data", 64
		f.add("data", ts)
		off := int64(2048 * 512)
		o, err := newOnline(f, OnlineConfig{Name: "data", Old: old, New: new, OldOffset: &off})
		if err != nil {
			t.Fatal(err)
		}
		f.l = o.l
		order := []uint64{0, 1, 2, 3, 4}
		if desc {
			order = []uint64{4, 3, 2, 1, 0}
		}
		for _, w := range order[:2] {
			f.disk[w*64] = "new"
		}
		for _, w := range order[2:] {
			f.disk[w*64] = "old"
		}
		f.check()
		if err := o.Hold(order[1], int64(order[1]*64*512), 64*512); err == nil {
			t.Fatal("hold of an already converted window accepted")
		}
		convert(t, f, o, order[2:])
		if err := o.Finish(); err != nil {
			t.Fatal(err)
		}
	}
	bad := keys
	bad.New = testkit.Key(64, 5)
	if _, err := Composite(h, bad, "8:16", nil); err == nil || !strings.Contains(err.Error(), "new key") {
		t.Fatalf("wrong new key: %v", err)
	}
	h.State = header.StateInProgress
	if _, err := Composite(h, keys, "8:16", nil); err == nil || !strings.Contains(err.Error(), "recover") {
		t.Fatalf("in-progress header: %v", err)
	}
}
