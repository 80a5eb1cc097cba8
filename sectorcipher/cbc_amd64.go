//go:build !purego

package sectorcipher

//go:noescape
func cbcEncryptAESNI(nr int, xk, iv, buf *byte, n int)

//go:noescape
func cbcDecryptAESNI(nr int, xk, iv, buf *byte, n int)

// cbcAESNI needs no scratch copy of the ciphertext: the assembly reads each
// group's chaining blocks before it overwrites them.
type cbcAESNI struct {
	k *aesSchedule
}

func (c *cbcAESNI) encryptSector(b []byte, s *scratch) {
	cbcEncryptAESNI(c.k.rounds, &c.k.enc[0], &s.iv[0], &b[0], len(b))
}

func (c *cbcAESNI) decryptSector(b []byte, s *scratch) {
	cbcDecryptAESNI(c.k.rounds, &c.k.dec[0], &s.iv[0], &b[0], len(b))
}
