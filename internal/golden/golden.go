// Package golden pins the on-disk format in test data: encoded structures
// are compared byte for byte with files under testdata/v<version>/, where
// <version> is the format version docs/FORMAT.md states. Bytes of a format
// version never change once written, so a change to an encoder fails its
// golden test until the format gets a new version (and FORMAT.md says so):
// -update writes files that are missing and refuses to rewrite any other.
package golden

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

var update = flag.Bool("update", false, "write missing golden files for the format version docs/FORMAT.md states (existing ones are never rewritten)")

var title = regexp.MustCompile(`(?m)^# cryptshift on-disk format, version (\d+)$`)

// FormatVersion is the version docs/FORMAT.md (at path) states in its title
// and its Versioning section, which must agree.
func FormatVersion(t testing.TB, path string) int {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := title.FindSubmatch(doc)
	if m == nil {
		t.Fatalf("%s: no title line %q", path, "# cryptshift on-disk format, version N")
	}
	v, err := strconv.Atoi(string(m[1]))
	if err != nil {
		t.Fatalf("%s: version %q: %v", path, m[1], err)
	}
	if want := fmt.Sprintf("The version field is %d.", v); !bytes.Contains(doc, []byte(want)) {
		t.Fatalf("%s: the title says version %d but the Versioning section does not say %q", path, v, want)
	}
	return v
}

// Dir is where the golden files of a format version live.
func Dir(version int) string { return filepath.Join("testdata", fmt.Sprintf("v%d", version)) }

// Check compares got with the golden file name of the given format version
// and returns the golden bytes. With -update a missing file is written from
// got; an existing file that differs fails the test either way.
func Check(t testing.TB, version int, name string, got []byte) []byte {
	t.Helper()
	path := filepath.Join(Dir(version), name)
	want, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && *update:
		if err := os.MkdirAll(Dir(version), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", path, len(got))
		return got
	case errors.Is(err, os.ErrNotExist):
		t.Fatalf("%s is missing: run go test -run %s -update to write it", path, t.Name())
	case err != nil:
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: the encoding differs from format version %d's golden file (%d bytes, want %d; first difference at byte %d). "+
			"Bytes of a released format version must not change: give the format a new version in docs/FORMAT.md and header.Version, "+
			"then -update writes that version's files", path, version, len(got), len(want), i)
	}
	return want
}

// TableOffsets returns the first column of the table under heading (a whole
// line such as "## Header copy (4096 bytes)") in the Markdown file at path:
// the field offsets a format table documents, in order.
func TableOffsets(t testing.TB, path, heading string) []int {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := bytes.Cut(doc, []byte("\n"+heading+"\n"))
	if !ok {
		t.Fatalf("%s: no heading %q", path, heading)
	}
	var offs []int
	inTable := false
	for _, line := range bytes.Split(rest, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte("|")) {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cell := string(bytes.TrimSpace(bytes.Split(line, []byte("|"))[1]))
		n, err := strconv.Atoi(cell)
		if err != nil {
			continue // the header row and the rule under it
		}
		offs = append(offs, n)
	}
	if len(offs) == 0 {
		t.Fatalf("%s: no table of offsets under %q", path, heading)
	}
	return offs
}
