package bench

import (
	"fmt"
	"slices"
	"strings"
)

// median returns the middle value of xs (the mean of the two middle ones
// for an even count), or 0 for none. The machine the benchmarks run on is
// shared and noisy: the median ignores a run that another job slowed down,
// where a mean would carry it.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// pairedRatios divides each a[i] by b[i]. Each pair was measured back to
// back, so the ratio of a pair cancels load that changed between pairs;
// ratios of medians taken separately would not.
func pairedRatios(a, b []float64) ([]float64, error) {
	if len(a) != len(b) {
		return nil, fmt.Errorf("paired ratios: %d values against %d", len(a), len(b))
	}
	out := make([]float64, len(a))
	for i := range a {
		if b[i] <= 0 {
			return nil, fmt.Errorf("paired ratios: baseline %d is %v", i, b[i])
		}
		out[i] = a[i] / b[i]
	}
	return out, nil
}

// formatTable aligns rows into columns separated by two spaces; columns
// whose header starts with a space are right-aligned (numbers).
func formatTable(header []string, rows [][]string) string {
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = len(strings.TrimLeft(h, " "))
	}
	for _, r := range rows {
		for i, c := range r {
			if i < len(width) {
				width[i] = max(width[i], len(c))
			}
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		var parts []string
		for i, c := range cells {
			if i >= len(width) {
				break
			}
			if strings.HasPrefix(header[i], " ") {
				parts = append(parts, fmt.Sprintf("%*s", width[i], c))
			} else {
				parts = append(parts, fmt.Sprintf("%-*s", width[i], c))
			}
		}
		b.WriteString(strings.TrimRight(strings.Join(parts, "  "), " "))
		b.WriteByte('\n')
	}
	trimmed := make([]string, len(header))
	for i, h := range header {
		trimmed[i] = strings.TrimLeft(h, " ")
	}
	line(trimmed)
	for _, r := range rows {
		line(r)
	}
	return b.String()
}
