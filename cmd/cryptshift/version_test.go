package main

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionFlagPrintsInjectedVersion(t *testing.T) {
	defer func(v string) { version = v }(version)
	version = "v1.2.3-4-gabcdef0-dirty"
	var out, errOut bytes.Buffer
	if code := run([]string{"cryptshift", "--version"}, &out, &errOut); code != 0 {
		t.Fatalf("--version: exit %d, stderr %q", code, errOut.String())
	}
	if got := strings.TrimSpace(out.String()); got != "cryptshift version "+version {
		t.Errorf("--version printed %q", got)
	}
}

func TestDevelVersion(t *testing.T) {
	cases := []struct {
		settings []debug.BuildSetting
		want     string
	}{
		{nil, "devel (no version control information in this build)"},
		{[]debug.BuildSetting{{Key: "vcs.revision", Value: "0123abc"}, {Key: "vcs.modified", Value: "false"}}, "devel (revision 0123abc)"},
		{[]debug.BuildSetting{{Key: "vcs.modified", Value: "true"}, {Key: "vcs.revision", Value: "0123abc"}}, "devel (revision 0123abc, with uncommitted changes)"},
	}
	for _, c := range cases {
		if got := develVersion(c.settings); got != c.want {
			t.Errorf("develVersion(%v) = %q, want %q", c.settings, got, c.want)
		}
	}
}
