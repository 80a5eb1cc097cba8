package online

import (
	"slices"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// allOptions are the format-neutral options an operator may have set on the
// live table (cryptsetup --allow-discards and the --perf-* flags), in the
// order the kernel prints them.
var allOptions = []string{"allow_discards", "same_cpu_crypt", "submit_from_crypt_cpus", "no_read_workqueue", "no_write_workqueue"}

// recordingDM is fakeDM that keeps every table created or loaded, on any
// device, so a test can check each one and not only the last.
type recordingDM struct {
	*fakeDM
	tables []recordedTable
}

type recordedTable struct {
	op, dev string
	ts      []dm.Target
}

func (r *recordingDM) create(name, uuid string, table []dm.Target) error {
	r.tables = append(r.tables, recordedTable{"create", name, table})
	return r.fakeDM.create(name, uuid, table)
}

func (r *recordingDM) load(name string, table []dm.Target) error {
	r.tables = append(r.tables, recordedTable{"load", name, table})
	return r.fakeDM.load(name, table)
}

// checkOptions fails unless every crypt target of every recorded table has
// exactly want as its format-neutral options; it returns how many crypt
// targets it checked, so a test can tell it checked something.
func (r *recordingDM) checkOptions(t *testing.T, want []string) int {
	t.Helper()
	n := 0
	for _, rt := range r.tables {
		n += checkTableOptions(t, rt.op+" "+rt.dev, rt.ts, want)
	}
	return n
}

func checkTableOptions(t *testing.T, what string, ts []dm.Target, want []string) int {
	t.Helper()
	n := 0
	for _, tg := range ts {
		if tg.Type != "crypt" {
			continue
		}
		c, err := dm.ParseCrypt(tg.Params)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := c.ExtraOptions(); !slices.Equal(got, want) {
			t.Errorf("%s: crypt target at sector %d has options %q, want %q", what, tg.Start, got, want)
		}
		n++
	}
	return n
}

// optionsSetup is setup with allOptions on NAME's single old target and
// the table recorder in front of the fake device-mapper.
func optionsSetup(t *testing.T, n, win uint64, old, new sectorcipher.Mapping) (*recordingDM, *Online) {
	f := newFakeDM(t)
	f.name, f.win = "data", win
	f.add("data", []dm.Target{dm.MappingTarget(old, "8:16", 2048, 0, n*win, allOptions)})
	for w := uint64(0); w < n; w++ {
		f.disk[w*win] = "old"
	}
	r := &recordingDM{fakeDM: f}
	o, err := newOnline(r, OnlineConfig{Name: "data", Old: old, New: new, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	f.l = o.l
	return r, o
}

// TestTableOptionsKeptThroughAConversion: the options of NAME's table are in
// every table the holder loads (NAME's composite tables, each hold
// device's old and new window tables, the kernel crypto devices) and in
// the final one, converting up or down.
func TestTableOptionsKeptThroughAConversion(t *testing.T) {
	for _, desc := range []bool{false, true} {
		old, new := testMappings(t)
		r, o := optionsSetup(t, 4, 64, old, new)
		order := []uint64{0, 1, 2, 3}
		if desc {
			order = []uint64{3, 2, 1, 0}
		}
		for i, ts := range o.l.cryptoTables() {
			r.tables = append(r.tables, recordedTable{"kernel crypto", []string{"old", "new"}[i], ts})
		}
		convert(t, r.fakeDM, o, order)
		if err := o.Finish(); err != nil {
			t.Fatal(err)
		}
		// 2 kernel crypto devices, per window 2 hold tables and at least one
		// crypt target in NAME's table, and the final table.
		if n := r.checkOptions(t, allOptions); n < 2+3*len(order)+1 {
			t.Errorf("descending=%v: only %d crypt targets were loaded", desc, n)
		}
		if n := checkTableOptions(t, "final table", r.devs["data"].live, allOptions); n != 1 {
			t.Errorf("descending=%v: final table has %d crypt targets", desc, n)
		}
	}
}

// TestTableOptionsKeptWhenResumingFromPlaintext: a conversion from
// plaintext (dm-linear) going downwards was settled; NAME's table starts
// with the old linear part, which has no options, and the converted crypt
// part after it has them. A resume must take them from the crypt part, not
// from the first target.
func TestTableOptionsKeptWhenResumingFromPlaintext(t *testing.T) {
	none := sectorcipher.Mapping{Spec: testkit.Spec(t, "none"), Key: []byte{}, SectorSize: 512}
	_, new := testMappings(t)
	f := newFakeDM(t)
	f.name, f.win = "data", 64
	f.add("data", []dm.Target{
		dm.MappingTarget(none, "8:16", 2048, 0, 3*64, nil),
		dm.MappingTarget(new, "8:16", 2048, 3*64, 2*64, allOptions),
	})
	for w := uint64(0); w < 5; w++ {
		f.disk[w*64] = map[bool]string{true: "old", false: "new"}[w < 3]
	}
	r := &recordingDM{fakeDM: f}
	off := int64(2048 * 512)
	o, err := newOnline(r, OnlineConfig{Name: "data", Old: none, New: new, OldOffset: &off, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	f.l = o.l
	f.check()
	convert(t, f, o, []uint64{2, 1, 0})
	if err := o.Finish(); err != nil {
		t.Fatal(err)
	}
	if n := r.checkOptions(t, allOptions); n == 0 {
		t.Fatal("no crypt target was loaded")
	}
	if n := checkTableOptions(t, "final table", f.devs["data"].live, allOptions); n != 1 {
		t.Errorf("final table has %d crypt targets", n)
	}
}

// TestTableOptionsKeptByReactivate: the converting process died with a
// window held; reactivation loads the hold device and NAME with the options
// NAME's live table had. With no crypt target left to read them from
// (plaintext to encrypted, nothing converted, window 0 held), it uses the
// options the caller gives.
func TestTableOptionsKeptByReactivate(t *testing.T) {
	old, new := testMappings(t)
	r, o := optionsSetup(t, 5, 64, old, new)
	convert(t, r.fakeDM, o, []uint64{0, 1})
	if err := o.Hold(2, 2*64*512, 64*512); err != nil {
		t.Fatal(err)
	}
	h := headerFor(t, o, 5, 64, 2)
	r.tables = nil
	// The options given are not the live table's: the live table wins.
	if err := reactivate(r, "data", h, Keys{Old: old.Key, New: new.Key}, "8:16", []string{"allow_discards"}); err != nil {
		t.Fatal(err)
	}
	if n := r.checkOptions(t, allOptions); n < 2 {
		t.Errorf("reactivation loaded %d crypt targets", n)
	}
	checkTableOptions(t, "reactivated table", r.devs["data"].live, allOptions)

	none := sectorcipher.Mapping{Spec: testkit.Spec(t, "none"), Key: []byte{}, SectorSize: 512}
	r, o = optionsSetup(t, 5, 64, none, new)
	if err := o.Hold(0, 0, 64*512); err != nil {
		t.Fatal(err)
	}
	uuid := [16]byte{9}
	h = &header.Header{UUID: uuid, DataSize: 5 * 64 * 512, OldOffset: 2048 * 512, NewOffset: 2048 * 512, Window: 64 * 512,
		State: header.StatePaused, Done: 1,
		Old: header.Mapping{Cipher: "none", SectorSize: 512}, New: header.Mapping{Cipher: "aes-xts-plain64", KeyBytes: 64, SectorSize: 4096},
		OldKCV: header.KCV([]byte{}, uuid), NewKCV: header.KCV(new.Key, uuid)}
	r.disk[0] = "new" // recovery rolled window 0 forward
	if err := reactivate(r, "data", h, Keys{Old: []byte{}, New: new.Key}, "8:16", allOptions); err != nil {
		t.Fatal(err)
	}
	if n := checkTableOptions(t, "reactivated table", r.devs["data"].live, allOptions); n != 1 {
		t.Errorf("reactivated table has %d crypt targets", n)
	}
	if err := reactivate(r, "data", h, Keys{Old: []byte{}, New: new.Key}, "8:16", []string{"sector_size:4096"}); err == nil {
		t.Error("a format option given as a table option was accepted")
	}
}

// TestCompositeTableOptions: the table `recover --activate` creates after a
// reboot has the options given on every crypt target, and refuses an
// option that changes the on-disk format.
func TestCompositeTableOptions(t *testing.T) {
	old, new := testMappings(t)
	uuid := [16]byte{1}
	h := &header.Header{UUID: uuid, DataSize: 5 * 64 * 512, OldOffset: 2048 * 512, NewOffset: 2048 * 512, Window: 64 * 512,
		State: header.StatePaused, Done: 2,
		Old:    header.Mapping{Cipher: "aes-xts-plain64", KeyBytes: 64, SectorSize: 512},
		New:    header.Mapping{Cipher: "aes-xts-plain64", KeyBytes: 64, SectorSize: 4096},
		OldKCV: header.KCV(old.Key, uuid), NewKCV: header.KCV(new.Key, uuid)}
	keys := Keys{Old: old.Key, New: new.Key}
	ts, err := Composite(h, keys, "8:16", allOptions)
	if err != nil {
		t.Fatal(err)
	}
	if n := checkTableOptions(t, "composite", ts, allOptions); n != 2 {
		t.Errorf("composite has %d crypt targets, want 2", n)
	}
	ts, err = Composite(h, keys, "8:16", nil)
	if err != nil {
		t.Fatal(err)
	}
	checkTableOptions(t, "composite without options", ts, nil)
	for _, bad := range []string{"sector_size:4096", "iv_large_sectors", "integrity:28:aead", "discard"} {
		if _, err := Composite(h, keys, "8:16", []string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("option %q: %v", bad, err)
		}
	}
}
