package dm

import (
	"slices"
	"testing"
)

func TestTableOptions(t *testing.T) {
	key := "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	ts, err := ParseTable("0 8 linear 8:16 0\n" +
		"8 8 crypt aes-xts-plain64 " + key + " 8 8:16 8 3 allow_discards sector_size:4096 no_write_workqueue\n" +
		"16 8 crypt aes-xts-plain64 " + key + " 16 8:16 16 1 same_cpu_crypt\n")
	if err != nil {
		t.Fatal(err)
	}
	// The first crypt target decides, skipping the linear one; the format
	// option is not a table option.
	if got := TableOptions(ts); !slices.Equal(got, []string{"allow_discards", "no_write_workqueue"}) {
		t.Fatalf("TableOptions = %q", got)
	}
	if got := TableOptions(ts[:1]); got != nil {
		t.Fatalf("linear only: %q", got)
	}
	if err := CheckNeutralOptions([]string{"allow_discards", "same_cpu_crypt", "submit_from_crypt_cpus", "no_read_workqueue", "no_write_workqueue", "high_priority"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"sector_size:4096", "iv_large_sectors", "integrity:28:aead", "discard", ""} {
		if err := CheckNeutralOptions([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
