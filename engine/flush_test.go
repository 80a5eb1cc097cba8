package engine

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestFlushPointsMatchDesign holds the flush point constants and the table
// in docs/DESIGN.md, "Flush points", to the same names, in the same order.
func TestFlushPointsMatchDesign(t *testing.T) {
	doc, err := os.ReadFile("../docs/DESIGN.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Flush points\n")
	if !ok {
		t.Fatal(`docs/DESIGN.md has no "## Flush points" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var table []FlushPoint
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		name := strings.TrimSpace(strings.Split(line, "|")[1])
		if name == "name" || strings.HasPrefix(name, "---") {
			continue
		}
		table = append(table, FlushPoint(name))
	}
	if !slices.Equal(table, FlushPoints()) {
		t.Fatalf("docs/DESIGN.md's flush point table lists\n%q\nengine/flush.go defines\n%q", table, FlushPoints())
	}
	seen := map[FlushPoint]bool{}
	for _, p := range FlushPoints() {
		if seen[p] {
			t.Fatalf("flush point %s listed twice", p)
		}
		seen[p] = true
	}
}
