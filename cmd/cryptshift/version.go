package main

import (
	"runtime/debug"
	"strings"
)

// version is set at build time from `git describe --tags --always --dirty`
// (scripts/package-deb.sh and the README's build line pass
// -ldflags "-X main.version=..."). Empty in a plain `go build`.
var version string

// versionString is what --version prints: the injected release version,
// or, for a build without it, "devel" with the commit Go recorded in the
// binary itself, so that a bug report still names the source it came from.
func versionString() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	return develVersion(info.Settings)
}

// develVersion renders the vcs settings `go build` embeds (absent under
// `go run`, `go test` and -buildvcs=false).
func develVersion(settings []debug.BuildSetting) string {
	var rev, modified string
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "devel (no version control information in this build)"
	}
	var b strings.Builder
	b.WriteString("devel (revision ")
	b.WriteString(rev)
	if modified == "true" {
		b.WriteString(", with uncommitted changes")
	}
	b.WriteString(")")
	return b.String()
}
