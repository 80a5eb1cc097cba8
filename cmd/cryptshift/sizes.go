package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/cryptshift/cryptshift/internal/units"
)

// parseSize reads a byte count: plain digits, or digits followed by K, M, G
// or T (binary multiples; "KiB" and friends are accepted too, since that is
// what the help output prints).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	up := strings.ToUpper(t)
	withIB := strings.HasSuffix(up, "IB")
	if withIB {
		up = up[:len(up)-2]
	}
	if up == "" {
		return 0, fmt.Errorf("size %q: a unit needs a number", s)
	}
	mult := int64(1)
	digits := up[:len(up)-1]
	switch up[len(up)-1] {
	case 'K':
		mult = 1 << 10
	case 'M':
		mult = 1 << 20
	case 'G':
		mult = 1 << 30
	case 'T':
		mult = 1 << 40
	default:
		if withIB {
			return 0, fmt.Errorf("size %q: unknown unit (use K, M, G or T)", s)
		}
		digits = up
	}
	if digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, fmt.Errorf("size %q: want a whole number of bytes with an optional K, M, G or T suffix", s)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// formatBytes is units.Bytes, named as the rest of this package calls it.
func formatBytes(n uint64) string { return units.Bytes(n) }
