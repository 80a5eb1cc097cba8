package header

import "strings"

// Engines records which crypto engines have transformed windows of the
// conversion (docs/FORMAT.md, byte 99). It is informational, for status:
// nothing decides a write by it. Zero is a header written before the field
// existed, or one no window has been converted under yet.
type Engines uint8

const (
	// EngineUserspace: cryptshift's own ciphers (package sectorcipher).
	EngineUserspace Engines = 1 << 0
	// EngineKernel: the kernel's dm-crypt, through private devices.
	EngineKernel Engines = 1 << 1

	knownEngines = EngineUserspace | EngineKernel
)

// String is what status prints: "unknown" for zero, else the engines
// joined with "and" (both when the two sides had different engines or a
// resumed run chose another --crypto).
func (e Engines) String() string {
	var out []string
	if e&EngineUserspace != 0 {
		out = append(out, "userspace")
	}
	if e&EngineKernel != 0 {
		out = append(out, "kernel")
	}
	if len(out) == 0 {
		return "unknown"
	}
	return strings.Join(out, " and ")
}

// List is String as a list, empty for unknown: status --json's form.
func (e Engines) List() []string {
	if e == 0 {
		return []string{}
	}
	return strings.Split(e.String(), " and ")
}
