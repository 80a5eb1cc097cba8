package engine

import (
	"fmt"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// CipherMaker builds the transform of mapping m over a data area of
// sectors 512-byte sectors (Options.Ciphers). The caller of Convert or
// Recover owns what it builds and releases it afterwards.
type CipherMaker func(m sectorcipher.Mapping, sectors uint64) (sectorcipher.Cipher, error)

func (o Options) cipher(m sectorcipher.Mapping, sectors uint64) (sectorcipher.Cipher, error) {
	if o.Ciphers != nil {
		return o.Ciphers(m, sectors)
	}
	return sectorcipher.New(m)
}

// failingCipher is a Cipher whose calls can fail (the kernel's): their
// output is only meaningful while Err is nil.
type failingCipher interface {
	Err() error
}

// cipherErr is the first failure of either cipher. The engine checks it
// before anything computed by them is written or trusted: a window, a
// digest entry, an identity verdict. A record is no exception only where
// its payload is raw (journal's); checksum digests computed from failed
// output would match no unit, which recovery reports as damage, and the
// window they describe is never written since writeWindow checks first.
func (c *conv) cipherErr() error {
	for _, ci := range []sectorcipher.Cipher{c.oldC, c.newC} {
		if f, ok := ci.(failingCipher); ok {
			if err := f.Err(); err != nil {
				return fmt.Errorf("%w: kernel cipher: %w", errclass.IO, err)
			}
		}
	}
	return nil
}
