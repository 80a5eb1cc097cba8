package luks

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
	"sort"
	"strings"

	"golang.org/x/crypto/ripemd160" //nolint:staticcheck // old LUKS1 volumes name it; we only read them

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/jzelinskie/whirlpool"
)

// hashes are the hash functions this build can run, under the names
// cryptsetup writes in headers.
var hashes = map[string]func() hash.Hash{
	"sha1":      sha1.New,
	"sha224":    sha256.New224,
	"sha256":    sha256.New,
	"sha384":    sha512.New384,
	"sha512":    sha512.New,
	"ripemd160": ripemd160.New,
	"whirlpool": whirlpool.New,
}

// knownHashes are names cryptsetup's crypto backends accept that this
// build cannot run: a header naming one is valid, it just cannot be
// unlocked here.
var knownHashes = map[string]bool{
	"sha3-224": true, "sha3-256": true, "sha3-384": true, "sha3-512": true,
	"stribog256": true, "stribog512": true, "sm3": true, "blake2b-512": true, "blake2s-256": true,
}

func supportedHashes() string {
	var names []string
	for n := range hashes {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// hashFunc returns the named hash, or a Device error naming what this
// build supports.
func hashFunc(name, what string) (func() hash.Hash, error) {
	if h, ok := hashes[name]; ok {
		return h, nil
	}
	return nil, fmt.Errorf("%w: %s hash %q is not supported by cryptshift (supported: %s)", errclass.Device, what, name, supportedHashes())
}

// hashKnown reports whether cryptsetup would accept name as a hash.
func hashKnown(name string) bool {
	_, ok := hashes[name]
	return ok || knownHashes[name]
}
