package dm

import (
	"testing"
)

// The private devices serve the data area from sector 0 with the old and
// the new mapping exactly as the served device's own tables do: every
// sector of a window must get the same IV and backing sector through them
// as through a composite table.
func TestKernelCryptoTablesMatchTheServedMappings(t *testing.T) {
	for _, shift := range []int64{0, -1024, 4096} {
		f := newFakeDM(t)
		old, new := testMappings(t)
		f.add("data", []Target{MappingTarget(old, "8:16", 2048, 0, 5*64, []string{"allow_discards"})})
		oo := int64(2048 * 512)
		no := oo + shift*512
		o, err := newOnline(f, OnlineConfig{Name: "data", Old: old, New: new, OldOffset: &oo, NewOffset: &no, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		tables := o.l.cryptoTables()
		for i, want := range []string{"old", "new"} {
			if len(tables[i]) != 1 || tables[i][0].Start != 0 || tables[i][0].Length != o.l.size {
				t.Fatalf("shift %d: %s table %v does not cover the data area", shift, want, tables[i])
			}
			if got := kindName(o.l.classify(tables[i][0])); got != want {
				t.Fatalf("shift %d: %s device's table classifies as %q", shift, want, got)
			}
		}
		// A hold device's table for window s (what the served device uses)
		// must address the same backing sectors with the same IVs as the
		// private device does at sector s.
		for s := uint64(0); s < o.l.size; s += 64 {
			for i, m := range []struct {
				priv Target
				win  []Target
			}{
				{tables[0][0], o.l.windowTable(o.l.old, o.l.oldOff, span{s, s + 64})},
				{tables[1][0], o.l.windowTable(o.l.new, o.l.newOff, span{s, s + 64})},
			} {
				p, err := ParseSegment(m.priv)
				if err != nil {
					t.Fatal(err)
				}
				w, err := ParseSegment(m.win[0])
				if err != nil {
					t.Fatal(err)
				}
				pm := p.Mapping
				pm.IVOffset += s
				if w.Device != p.Device || w.Offset != p.Offset+s || !sameMapping(w.Mapping, pm) {
					t.Fatalf("shift %d, device %d, sector %d: window table %v, private table %v", shift, i, s, m.win[0], m.priv)
				}
			}
		}
	}
}

// Private devices' resumes tell udev to leave them alone; the served
// device's resumes (NAME, the user's) carry no flags.
func TestResumeCookieOnlyForPrivateDevices(t *testing.T) {
	h, k := holdNames("data"), cryptoNames("data")
	for _, n := range append(h[:], k[:]...) {
		c := resumeCookie(n)
		if c>>udevFlagsShift&udevDisableDiskRules == 0 || c>>udevFlagsShift&udevDisableOtherRules == 0 || c&0xffff != 0 {
			t.Errorf("%s: cookie %#x does not disable the disk and other udev rules (or names a semaphore)", n, c)
		}
	}
	for _, n := range []string{"data", "cryptdata", "luks-1234"} {
		if c := resumeCookie(n); c != 0 {
			t.Errorf("%s: cookie %#x on a device that is not cryptshift's", n, c)
		}
	}
}
