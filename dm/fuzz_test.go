package dm

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

// FuzzParseCrypt: whatever parses formats to a line that parses to the same
// thing, and a mapping derived from it survives the trip too.
func FuzzParseCrypt(f *testing.F) {
	k := strings.Repeat("0f", 64)
	for _, s := range []string{
		"aes-xts-plain64 " + k + " 0 254:16 0",
		"aes-xts-plain64 " + k + " 16 254:16 4096 3 allow_discards sector_size:4096 iv_large_sectors",
		"cipher_null-ecb - 0 7:0 2048",
		"aes-xts-plain64 :64:logon:cryptsetup:abc 0 /dev/vdb 0 1 x",
		"aes-cbc-essiv:sha256 00112233445566778899aabbccddeeff 0 8:0 0 0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCrypt(s)
		if err != nil {
			return
		}
		again, err := ParseCrypt(c.Params())
		if err != nil {
			t.Fatalf("formatted %q does not parse: %v", c.Params(), err)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("round trip changed %+v into %+v", c, again)
		}
		m, err := c.Mapping()
		if err != nil {
			return
		}
		back, err := CryptFor(m, c.Device, c.Offset, c.ExtraOptions()).Mapping()
		if err != nil || !sameCrypt(m, back) || back.IVOffset != m.IVOffset {
			t.Fatalf("mapping %+v did not survive CryptFor: %+v %v", m, back, err)
		}
	})
}

// FuzzParseTable: an accepted table is contiguous and formats back to a
// table that parses the same.
func FuzzParseTable(f *testing.F) {
	f.Add("0 2048 linear 8:16 0\n2048 8 error\n")
	f.Add("0 8 crypt aes-xts-plain64 - 0 8:0 0\n")
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := ParseTable(s)
		if err != nil {
			return
		}
		if err := CheckTable(ts); err != nil {
			t.Fatalf("accepted a table CheckTable refuses: %v", err)
		}
		again, err := ParseTable(FormatTable(ts))
		if err != nil {
			t.Fatalf("formatted table does not parse: %v\n%s", err, FormatTable(ts))
		}
		// Params are compared field-wise: parsing collapses runs of spaces.
		for i := range ts {
			ts[i].Params = strings.Join(strings.Fields(ts[i].Params), " ")
		}
		if !reflect.DeepEqual(ts, again) {
			t.Fatalf("round trip changed %+v into %+v", ts, again)
		}
	})
}

// sameCrypt: the two mappings read the same sectors the same way (for
// plaintext the IV and sector options make no difference).
func sameCrypt(a, b sectorcipher.Mapping) bool {
	if a.Spec != b.Spec {
		return false
	}
	return a.Spec.IsNone() || bytes.Equal(a.Key, b.Key) && a.SectorSize == b.SectorSize &&
		a.IVOffset == b.IVOffset && a.IVLargeSectors == b.IVLargeSectors
}
