package main

import "testing"

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"0":        0,
		"4096":     4096,
		"1K":       1024,
		"32M":      32 << 20,
		"32m":      32 << 20,
		"2G":       2 << 30,
		"1T":       1 << 40,
		"4KiB":     4096,
		"16MiB":    16 << 20,
		" 8M ":     8 << 20,
		"8388607T": 8388607 << 40,
	}
	for in, want := range good {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "MiB", "1.5M", "-1", "1X", "1XiB", "12 M", "8388608T", "99999999999999999999", "0x10"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[uint64]string{
		0:          "0 B",
		1023:       "1023 B",
		1024:       "1.0 KiB",
		1536:       "1.5 KiB",
		256 << 20:  "256.0 MiB",
		3 << 30:    "3.0 GiB",
		5 << 40:    "5.0 TiB",
		5000 << 40: "5000.0 TiB",
	} {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", in, got, want)
		}
	}
}
