package luks

import "github.com/cryptshift/cryptshift/internal/secret"

// wipe zeroes a buffer that carried key material.
func wipe(b []byte) { secret.Wipe(b) }

// Key is secret bytes (a volume key, or a keyslot's derived key and
// material while unlocking), held as package secret holds key files:
// outside the Go heap, locked in RAM when RLIMIT_MEMLOCK allows, and
// zeroed by Wipe.
type Key = secret.Key

// newKey allocates n zero bytes of secret memory.
func newKey(n int) (*Key, error) { return secret.New(n) }
