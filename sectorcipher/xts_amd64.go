//go:build !purego

package sectorcipher

import "golang.org/x/sys/cpu"

// haveAESNI reports whether the assembly engines can run: AES-NI for the
// rounds and PCLMULQDQ for advancing eight XTS tweaks at once.
var haveAESNI = cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ

//go:noescape
func xtsEncryptAESNI(nr int, xk, tk, iv, buf *byte, n int)

//go:noescape
func xtsDecryptAESNI(nr int, xk, tk, iv, buf *byte, n int)

//go:noescape
func aesInvMixColumns(dst, src *byte)

var xtsImpls = []xtsImpl{
	{"aesni", haveAESNI, func(k1, k2 []byte) sectorEngine {
		return &xtsAESNI{data: newAESSchedule(k1), tweak: newAESSchedule(k2)}
	}},
}

var cbcImpls = []cbcImpl{
	{"aesni", haveAESNI, func(key []byte) sectorEngine { return &cbcAESNI{k: newAESSchedule(key)} }},
}

// xtsAESNI runs a whole data unit per assembly call, so the per-block cost
// is only the AES rounds and the tweak arithmetic.
type xtsAESNI struct {
	data, tweak *aesSchedule
}

func (x *xtsAESNI) encryptSector(b []byte, s *scratch) {
	xtsEncryptAESNI(x.data.rounds, &x.data.enc[0], &x.tweak.enc[0], &s.iv[0], &b[0], len(b))
}

func (x *xtsAESNI) decryptSector(b []byte, s *scratch) {
	xtsDecryptAESNI(x.data.rounds, &x.data.dec[0], &x.tweak.enc[0], &s.iv[0], &b[0], len(b))
}
