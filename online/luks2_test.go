package online

import (
	"errors"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// keyedTable accepts the table stock cryptsetup makes for a LUKS2 volume
// (key in the keyring, or in the table with --disable-keyring) and
// returns the same mapping with the key written out; a table of another
// layout is a conflict, of another key a wrong key.
func TestKeyedTable(t *testing.T) {
	const uuid = "44e02d98-0a52-4a4b-9c8e-1d1d6e6e4b11"
	key := testkit.Key(64, 3)
	m := sectorcipher.Mapping{Spec: testkit.Spec(t, "aes-xts-plain64"), Key: key, SectorSize: 4096}
	vol := &engine.LUKSLive{UUID: uuid, Mapping: m, Offset: 32768 * 512, Size: 4096 * 512, Digest: 0}
	hexT := dm.MappingTarget(m, "254:0", 32768, 0, 4096, []string{"allow_discards"})
	ref := func(tg dm.Target, r string) dm.Target {
		c, err := dm.ParseCrypt(tg.Params)
		if err != nil {
			t.Fatal(err)
		}
		c.Key, c.KeyRef = nil, r
		tg.Params = c.Params()
		return tg
	}
	keyring := ref(hexT, ":64:logon:cryptsetup:"+uuid+"-d0")
	for _, live := range [][]dm.Target{{keyring}, {hexT}} {
		out, err := keyedTable("lc", live, vol)
		if err != nil {
			t.Fatalf("%s: %v", live[0].Params, err)
		}
		if len(out) != 1 || out[0].Params != hexT.Params || out[0].Length != 4096 {
			t.Fatalf("keyed table %v, want %v", out, hexT)
		}
	}
	other := m
	other.Key = testkit.Key(64, 4)
	cbc := sectorcipher.Mapping{Spec: testkit.Spec(t, "aes-cbc-essiv:sha256"), Key: testkit.Key(32, 1), SectorSize: 4096}
	small := m
	small.SectorSize = 512
	for name, tc := range map[string]struct {
		live []dm.Target
		want error
	}{
		"other cipher":      {[]dm.Target{dm.MappingTarget(cbc, "254:0", 32768, 0, 4096, nil)}, errclass.Conflict},
		"other sector size": {[]dm.Target{ref(dm.MappingTarget(small, "254:0", 32768, 0, 4096, nil), ":64:logon:cryptsetup:"+uuid+"-d0")}, errclass.Conflict},
		"other offset":      {[]dm.Target{dm.MappingTarget(m, "254:0", 4096, 0, 4096, nil)}, errclass.Conflict},
		"shorter":           {[]dm.Target{dm.MappingTarget(m, "254:0", 32768, 0, 2048, nil)}, errclass.Conflict},
		"other key":         {[]dm.Target{dm.MappingTarget(other, "254:0", 32768, 0, 4096, nil)}, errclass.WrongKey},
		"other volume":      {[]dm.Target{ref(hexT, ":64:logon:cryptsetup:00000000-0a52-4a4b-9c8e-1d1d6e6e4b11-d0")}, errclass.WrongKey},
		"other digest":      {[]dm.Target{ref(hexT, ":64:logon:cryptsetup:"+uuid+"-d1")}, errclass.WrongKey},
		"two targets":       {[]dm.Target{dm.MappingTarget(m, "254:0", 32768, 0, 2048, nil), dm.MappingTarget(m, "254:0", 32768, 2048, 2048, nil)}, errclass.Device},
	} {
		_, err := keyedTable("lc", tc.live, vol)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), strings.Split(hexT.Params, " ")[1]) {
			t.Errorf("%s: the error shows the key", name)
		}
	}
}

func TestLUKSUUID(t *testing.T) {
	if got := LUKSUUID("44e02d98-0a52-4a4b-9c8e-1d1d6e6e4b11", "lc"); got != "CRYPT-LUKS2-44e02d980a524a4b9c8e1d1d6e6e4b11-lc" {
		t.Fatal(got)
	}
}

// A converted volume's NAME must serve the segment with the new key in
// every target; split tables of that mapping are accepted (and made one),
// any other target refused.
func TestWholeLayout(t *testing.T) {
	m := sectorcipher.Mapping{Spec: testkit.Spec(t, "aes-xts-plain64"), Key: testkit.Key(64, 5), SectorSize: 512}
	vol := &engine.LUKSLive{Mapping: m, Offset: 32768 * 512, Size: 4096 * 512}
	split := []dm.Target{dm.MappingTarget(m, "254:0", 32768, 0, 1024, nil), dm.MappingTarget(m, "254:0", 32768, 1024, 3072, nil)}
	l, err := wholeLayout(split, "254:0", vol)
	if err != nil {
		t.Fatal(err)
	}
	if one := l.table(span{0, l.size}, span{}, ""); len(one) != 1 || one[0].Params != dm.MappingTarget(m, "254:0", 32768, 0, 4096, nil).Params {
		t.Fatalf("one target: %v", one)
	}
	old := m
	old.Key = testkit.Key(64, 6)
	for name, live := range map[string][]dm.Target{
		"old key in part": {dm.MappingTarget(m, "254:0", 32768, 0, 1024, nil), dm.MappingTarget(old, "254:0", 32768, 1024, 3072, nil)},
		"shorter":         {dm.MappingTarget(m, "254:0", 32768, 0, 1024, nil)},
		"other device":    {dm.MappingTarget(m, "254:1", 32768, 0, 4096, nil)},
		"moved":           {dm.MappingTarget(m, "254:0", 32776, 0, 4096, nil)},
	} {
		if _, err := wholeLayout(live, "254:0", vol); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
