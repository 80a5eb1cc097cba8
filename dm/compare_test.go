package dm

import (
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/testkit"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

func TestSameService(t *testing.T) {
	old := sectorcipher.Mapping{Spec: testkit.Spec(t, "aes-xts-plain64"), Key: testkit.Key(64, 1), SectorSize: 512}
	new := sectorcipher.Mapping{Spec: testkit.Spec(t, "aes-xts-plain64"), Key: testkit.Key(64, 100), SectorSize: 4096}
	want := []Target{MappingTarget(new, "8:16", 2048, 0, 128, nil), MappingTarget(old, "8:16", 2048, 128, 128, nil)}
	withDiscards := []Target{MappingTarget(new, "8:16", 2048, 0, 128, []string{"allow_discards"}), MappingTarget(old, "8:16", 2048, 128, 128, []string{"allow_discards"})}
	if same, why := SameService(withDiscards, want); !same {
		t.Fatalf("allow_discards made a difference: %s", why)
	}
	wrongKey := old
	wrongKey.Key = testkit.Key(64, 77)
	for name, tc := range map[string]struct {
		live []Target
		why  string
	}{
		"one target":   {[]Target{MappingTarget(new, "8:16", 2048, 0, 256, nil)}, "1 targets"},
		"split moved":  {[]Target{MappingTarget(new, "8:16", 2048, 0, 64, nil), MappingTarget(old, "8:16", 2048, 64, 192, nil)}, "covers"},
		"other device": {[]Target{MappingTarget(new, "8:32", 2048, 0, 128, nil), MappingTarget(old, "8:16", 2048, 128, 128, nil)}, "reads 8:32"},
		"other key":    {[]Target{MappingTarget(new, "8:16", 2048, 0, 128, nil), MappingTarget(wrongKey, "8:16", 2048, 128, 128, nil)}, "another key"},
		"hold device":  {[]Target{MappingTarget(new, "8:16", 2048, 0, 128, nil), {Start: 128, Length: 128, Type: "linear", Params: "253:7 0"}}, "reads 253:7"},
	} {
		t.Run(name, func(t *testing.T) {
			same, why := SameService(tc.live, want)
			if same || !strings.Contains(why, tc.why) {
				t.Fatalf("same=%v why=%q, want a difference mentioning %q", same, why, tc.why)
			}
			if strings.Contains(why, string(old.Key)) {
				t.Fatal("reason prints a key")
			}
		})
	}
}
