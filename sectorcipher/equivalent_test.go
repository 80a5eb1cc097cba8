package sectorcipher

import "testing"

func TestEquivalent(t *testing.T) {
	xts, err := ParseSpec("aes-xts-plain64")
	if err != nil {
		t.Fatal(err)
	}
	none, err := ParseSpec("none")
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 64)
	base := Mapping{Spec: xts, Key: key, SectorSize: 512}
	other := func(f func(*Mapping)) Mapping {
		m := base
		m.Key = append([]byte(nil), key...)
		f(&m)
		return m
	}
	for name, tc := range map[string]struct {
		a, b Mapping
		want bool
	}{
		"same":             {base, other(func(*Mapping) {}), true},
		"key":              {base, other(func(m *Mapping) { m.Key[0] = 1 }), false},
		"sector size":      {base, other(func(m *Mapping) { m.SectorSize = 4096 }), false},
		"iv offset":        {base, other(func(m *Mapping) { m.IVOffset = 8 }), false},
		"iv large sectors": {base, other(func(m *Mapping) { m.IVLargeSectors = true }), false},
		"spec":             {base, other(func(m *Mapping) { m.Spec = none; m.Key = nil }), false},
		"plain, same":      {Mapping{Spec: none, SectorSize: 512}, Mapping{Spec: none, SectorSize: 512}, true},
		"plain, options":   {Mapping{Spec: none, SectorSize: 512}, Mapping{Spec: none, SectorSize: 4096, IVOffset: 8, IVLargeSectors: true}, true},
		"plain, nil vs {}": {Mapping{Spec: none, Key: []byte{}, SectorSize: 512}, Mapping{Spec: none, SectorSize: 512}, true},
	} {
		if got := tc.a.Equivalent(tc.b); got != tc.want {
			t.Errorf("%s: Equivalent = %v, want %v", name, got, tc.want)
		}
		if got := tc.b.Equivalent(tc.a); got != tc.want {
			t.Errorf("%s (swapped): Equivalent = %v, want %v", name, got, tc.want)
		}
	}
}
