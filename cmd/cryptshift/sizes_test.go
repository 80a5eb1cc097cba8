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
