package online

import (
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/dm"
)

// The private devices serve the data area from sector 0 with the old and
// the new mapping exactly as the served device's own tables do: every
// sector of a window must get the same IV and backing sector through them
// as through a composite table.
func TestKernelCryptoTablesMatchTheServedMappings(t *testing.T) {
	for _, shift := range []int64{0, -1024, 4096} {
		f := newFakeDM(t)
		old, new := testMappings(t)
		f.add("data", []dm.Target{dm.MappingTarget(old, "8:16", 2048, 0, 5*64, []string{"allow_discards"})})
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
				priv dm.Target
				win  []dm.Target
			}{
				{tables[0][0], o.l.windowTable(o.l.old, o.l.oldOff, span{s, s + 64})},
				{tables[1][0], o.l.windowTable(o.l.new, o.l.newOff, span{s, s + 64})},
			} {
				p, err := dm.ParseSegment(m.priv)
				if err != nil {
					t.Fatal(err)
				}
				w, err := dm.ParseSegment(m.win[0])
				if err != nil {
					t.Fatal(err)
				}
				pm := p.Mapping
				pm.IVOffset += s
				if w.Device != p.Device || w.Offset != p.Offset+s || !w.Mapping.Equivalent(pm) {
					t.Fatalf("shift %d, device %d, sector %d: window table %v, private table %v", shift, i, s, m.win[0], m.priv)
				}
			}
		}
	}
}

// Every private device is named with dm's private prefix, so that dm's
// resumes tell udev to leave it alone (dm.PrivatePrefix), and the served
// device's name is not.
func TestPrivateDevicesCarryThePrivatePrefix(t *testing.T) {
	h, k := holdNames("data"), cryptoNames("data")
	for _, n := range append(h[:], k[:]...) {
		if !strings.HasPrefix(n, dm.PrivatePrefix) || !IsHoldDevice(n) {
			t.Errorf("%s: not named as a private device", n)
		}
	}
	if IsHoldDevice("data") {
		t.Error("the served device is taken for a private one")
	}
}
