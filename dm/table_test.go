package dm

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

func TestParseCryptAsKernelPrints(t *testing.T) {
	k := strings.Repeat("0f", 64)
	cases := []struct {
		in   string
		want Crypt
	}{
		{"aes-xts-plain64 " + k + " 0 254:16 0",
			Crypt{Cipher: "aes-xts-plain64", Key: bytes.Repeat([]byte{0x0f}, 64), Device: "254:16"}},
		{"aes-xts-plain64 " + k + " 16 254:16 4096 3 allow_discards sector_size:4096 iv_large_sectors",
			Crypt{Cipher: "aes-xts-plain64", Key: bytes.Repeat([]byte{0x0f}, 64), IVOffset: 16, Device: "254:16", Offset: 4096,
				Options: []string{"allow_discards", "sector_size:4096", "iv_large_sectors"}}},
		{"cipher_null-ecb - 0 7:0 2048",
			Crypt{Cipher: "cipher_null-ecb", Key: []byte{}, Device: "7:0", Offset: 2048}},
		{"aes-xts-plain64 :64:logon:cryptsetup:abc 0 /dev/vdb 0 1 future_option:7",
			Crypt{Cipher: "aes-xts-plain64", KeyRef: ":64:logon:cryptsetup:abc", Device: "/dev/vdb", Options: []string{"future_option:7"}}},
	}
	for _, c := range cases {
		got, err := ParseCrypt(c.in)
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Fatalf("%q:\n got %+v\nwant %+v", c.in, got, c.want)
		}
		if got.Params() != c.in {
			t.Fatalf("round trip: %q became %q", c.in, got.Params())
		}
	}
}

func TestParseCryptRefuses(t *testing.T) {
	for _, in := range []string{
		"",
		"aes-xts-plain64 00 0 8:0",    // too few fields
		"aes-xts-plain64 0g 0 8:0 0",  // not hex
		"aes-xts-plain64 000 0 8:0 0", // odd hex
		"aes-xts-plain64 00 -1 8:0 0", // negative iv_offset
		"aes-xts-plain64 00 0 8:0 18446744073709551616", // overflow
		"aes-xts-plain64 00 0 8:0 0 2 allow_discards",   // count says 2, one follows
		"aes-xts-plain64 00 0 8:0 0 x",                  // count not a number
		"aes-xts-plain64 :64:logon 0 8:0 0",             // keyring ref without description
		"aes-xts-plain64 :x:logon:d 0 8:0 0",            // keyring size not a number
	} {
		if _, err := ParseCrypt(in); err == nil {
			t.Errorf("ParseCrypt(%q) accepted", in)
		}
	}
}

func TestParseCryptDoesNotEchoKey(t *testing.T) {
	secret := strings.Repeat("ab", 31) + "zz"
	_, err := ParseCrypt("aes-xts-plain64 " + secret + " 0 8:0 0")
	if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "abab") {
		t.Fatalf("error must not contain the key field: %v", err)
	}
}

func TestCryptMapping(t *testing.T) {
	xts := testkit.Spec(t, "aes-xts-plain64")
	k := testkit.Key(64, 1)
	m := sectorcipher.Mapping{Spec: xts, Key: k, SectorSize: 4096, IVOffset: 8, IVLargeSectors: true}
	c := CryptFor(m, "8:16", 2048, []string{"allow_discards", "no_read_workqueue"})
	if got, want := c.Params(), "aes-xts-plain64 "+hexKey(k)+" 8 8:16 2048 4 allow_discards no_read_workqueue sector_size:4096 iv_large_sectors"; got != want {
		t.Fatalf("params\n got %s\nwant %s", got, want)
	}
	back, err := ParseCrypt(c.Params())
	if err != nil {
		t.Fatal(err)
	}
	bm, err := back.Mapping()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(bm, m) {
		t.Fatalf("mapping round trip: got %+v want %+v", bm, m)
	}
	if got := back.ExtraOptions(); !reflect.DeepEqual(got, []string{"allow_discards", "no_read_workqueue"}) {
		t.Fatalf("extra options %v", got)
	}

	none := sectorcipher.Mapping{Spec: testkit.Spec(t, "none"), Key: []byte{}, SectorSize: 512}
	nc := CryptFor(none, "8:16", 0, nil)
	if nc.Params() != "cipher_null-ecb - 0 8:16 0" {
		t.Fatalf("none: %s", nc.Params())
	}
	nm, err := nc.Mapping()
	if err != nil || !nm.Spec.IsNone() {
		t.Fatalf("none mapping: %+v %v", nm, err)
	}
}

func TestCryptMappingRefuses(t *testing.T) {
	k := hexKey(testkit.Key(64, 3))
	cases := map[string]string{
		"aes-xts-plain64 :64:logon:x 0 8:0 0":                                           "keyring",
		"aes-xts-plain64 " + k + " 0 8:0 0 1 integrity:28:aead":                         "not supported",
		"aes-xts-plain64 " + k + " 0 8:0 0 1 sector_size:1000":                          "sector_size",
		"aes-xts-plain64 " + k + " 1 8:0 0 1 sector_size:4096":                          "iv_offset",
		"aes-xts-plain64-with-a-spec-name-longer-than-a-header-holds " + k + " 0 8:0 0": "longer than",
		"aes-xts-plain64 " + k[:10] + " 0 8:0 0":                                        "key",
		"aes-xts-plain64 " + k + " 0 8:0 0 2 sector_size:512 sector_size:512":           "twice",
	}
	for in, want := range cases {
		c, err := ParseCrypt(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		_, err = c.Mapping()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one mentioning %q", in, err, want)
		}
	}
	// A spec without a userspace cipher is the kernel's to run: the
	// mapping carries it verbatim.
	c, _ := ParseCrypt("serpent-xts-plain64 " + k + " 0 8:0 0")
	if m, err := c.Mapping(); err != nil || !m.Spec.KernelOnly() || m.Spec.String() != "serpent-xts-plain64" {
		t.Fatalf("serpent-xts-plain64: %v, %v", m.Spec, err)
	}
	c, _ = ParseCrypt("aes-xts-plain64 :64:logon:x 0 8:0 0")
	if _, err := c.Mapping(); !errors.Is(err, ErrKeyringKey) || !strings.Contains(err.Error(), "by file") {
		t.Fatalf("keyring key: %v", err)
	}
}

func TestParseTable(t *testing.T) {
	in := "0 2048 linear 8:16 0\n\n2048 1024 crypt aes-xts-plain64 " + hexKey(testkit.Key(64, 0)) + " 2048 8:16 2048\n"
	ts, err := ParseTable(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[1].Start != 2048 || ts[1].Type != "crypt" || Size(ts) != 3072 {
		t.Fatalf("parsed %+v", ts)
	}
	if FormatTable(ts) != strings.ReplaceAll(in, "\n\n", "\n") {
		t.Fatalf("format:\n%s", FormatTable(ts))
	}
	for _, bad := range []string{
		"",
		"0 10 linear 8:0 0\n20 10 linear 8:0 0", // gap
		"0 10 linear 8:0 0\n5 10 linear 8:0 0",  // overlap
		"1 10 linear 8:0 0",                     // not from 0
		"0 0 linear 8:0 0",                      // empty target
		"0 10",                                  // no type
		"0 10 averyveryverylongtype x",          // type does not fit
		"0 x linear 8:0 0",
	} {
		if _, err := ParseTable(bad); err == nil {
			t.Errorf("ParseTable(%q) accepted", bad)
		}
	}
}

func TestParseSegment(t *testing.T) {
	s, err := ParseSegment(Target{Start: 0, Length: 8, Type: "linear", Params: "8:16 2048"})
	if err != nil || !s.Linear || !s.Mapping.Spec.IsNone() || s.Offset != 2048 || s.Device != "8:16" {
		t.Fatalf("linear: %+v %v", s, err)
	}
	if _, err := ParseSegment(Target{Length: 8, Type: "error"}); err == nil {
		t.Fatal("error target accepted as a segment")
	}
}

func TestMappingTargetMovesIVAndOffset(t *testing.T) {
	m := sectorcipher.Mapping{Spec: testkit.Spec(t, "aes-cbc-essiv:sha256"), Key: testkit.Key(32, 9), SectorSize: 512, IVOffset: 100}
	tg := MappingTarget(m, "8:0", 4096, 80, 16, nil)
	c, err := ParseCrypt(tg.Params)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Start != 80 || tg.Length != 16 || c.IVOffset != 180 || c.Offset != 4176 {
		t.Fatalf("target %+v crypt %+v", tg, c)
	}
	none := sectorcipher.Mapping{Spec: testkit.Spec(t, "none"), Key: []byte{}, SectorSize: 512}
	lt := MappingTarget(none, "8:0", 4096, 80, 16, []string{"allow_discards"})
	if lt.Type != "linear" || lt.Params != "8:0 4176" {
		t.Fatalf("plaintext target %+v", lt)
	}
	none.SectorSize = 4096
	if ct := MappingTarget(none, "8:0", 0, 8, 8, nil); ct.Type != "crypt" || !strings.Contains(ct.Params, "sector_size:4096") {
		t.Fatalf("plaintext 4K target %+v", ct)
	}
}

func hexKey(k []byte) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for _, x := range k {
		b.WriteByte(digits[x>>4])
		b.WriteByte(digits[x&15])
	}
	return b.String()
}
