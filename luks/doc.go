// Package luks reads and validates LUKS1 and LUKS2 headers the way stock
// cryptsetup 2.6 does, unlocks a keyslot with a passphrase, and derives the
// dm-crypt mapping of the data area from a validated header and its volume
// key. It also writes LUKS2 headers (a draft edited in place, committed as a
// crash-safe copy pair) and keyslots, formats a LUKS2 header from nothing
// (FormatLUKS2), marks a LUKS1 volume as in conversion (MarkLUKS1),
// re-lays out a LUKS1 header for a new key size (PlanRelayout1) and
// replaces a LUKS1 header by a LUKS2 one (PlanLUKS1ToLUKS2); the crash
// arguments are in docs/DESIGN.md, "LUKS header commits" and the sections
// after it. Reading never writes.
//
// The layouts it reads and writes are written down in docs/FORMAT.md
// ("LUKS1 and LUKS2, as cryptshift reads and writes them"); keep the two in
// step.
//
// Errors wrap errclass.Header when the header is bad or forged (it is LUKS,
// but cryptsetup would refuse it too), errclass.Device when the device is
// unusable for the request (too small, a cipher or KDF this build cannot
// run, a volume in the middle of a cryptsetup reencryption), and
// errclass.WrongKey when a passphrase opens no keyslot.
package luks
