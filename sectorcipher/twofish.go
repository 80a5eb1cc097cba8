package sectorcipher

import (
	"fmt"

	"golang.org/x/crypto/twofish"
)

// newTwofishEngine builds the engine of a twofish spec: the pure-Go XTS and
// CBC engines over golang.org/x/crypto/twofish, since the assembly engines
// run AES rounds only. The chaining, tweak and IV code is the one the AES
// specs use, which the kernel tests prove for AES; twofish only swaps the
// block.
func newTwofishEngine(mode chainMode, key []byte) (sectorEngine, error) {
	switch mode {
	case modeXTS:
		half := len(key) / 2
		data, err := twofish.NewCipher(key[:half])
		if err != nil {
			return nil, fmt.Errorf("sectorcipher: twofish XTS data key: %w", err)
		}
		tweak, err := twofish.NewCipher(key[half:])
		if err != nil {
			return nil, fmt.Errorf("sectorcipher: twofish XTS tweak key: %w", err)
		}
		return &xtsEngine{data: data, tweak: tweak}, nil
	case modeCBC:
		b, err := twofish.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("sectorcipher: twofish CBC key: %w", err)
		}
		return &cbcEngine{b: b}, nil
	}
	return nil, fmt.Errorf("sectorcipher: twofish has no chain mode %d here", mode)
}
