package units

import (
	"testing"
	"time"
)

func TestBytes(t *testing.T) {
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
		if got := Bytes(in); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[time.Duration]string{
		1234567 * time.Nanosecond: "1ms",
		2345 * time.Millisecond:   "2.3s",
		125400 * time.Millisecond: "2m5s",
		59949 * time.Millisecond:  "59.9s",
	} {
		if got := Duration(in); got != want {
			t.Errorf("Duration(%v) = %q, want %q", in, got, want)
		}
	}
}
