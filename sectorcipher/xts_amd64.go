//go:build !purego

package sectorcipher

import "golang.org/x/sys/cpu"

// haveAESNI reports whether the assembly engines can run: AES-NI for the
// rounds and PCLMULQDQ for advancing eight XTS tweaks at once.
var haveAESNI = cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ

// haveVAES512 reports whether the 512-bit XTS engine can run: VAES and
// VPCLMULQDQ on ZMM registers, AVX-512BW for the byte shifts within lanes,
// VL for the single-block tail on XMM registers 16-31. x/sys/cpu reports
// the AVX-512 features only when the OS saves the ZMM state.
var haveVAES512 = haveAESNI && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW &&
	cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VAES && cpu.X86.HasAVX512VPCLMULQDQ

//go:noescape
func xtsEncryptAESNI(nr int, xk, tk, iv, buf *byte, n int)

//go:noescape
func xtsDecryptAESNI(nr int, xk, tk, iv, buf *byte, n int)

//go:noescape
func xtsEncryptVAES512(nr int, xk, tk, iv, buf *byte, n int)

//go:noescape
func xtsDecryptVAES512(nr int, xk, tk, iv, buf *byte, n int)

//go:noescape
func aesInvMixColumns(dst, src *byte)

var xtsImpls = []xtsImpl{
	{"vaes512", haveVAES512, func(k1, k2 []byte) sectorEngine {
		return &xtsVAES512{data: newAESSchedule(k1), tweak: newAESSchedule(k2)}
	}},
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

// xtsVAES512 is xtsAESNI four blocks per instruction wide.
type xtsVAES512 struct {
	data, tweak *aesSchedule
}

func (x *xtsVAES512) encryptSector(b []byte, s *scratch) {
	xtsEncryptVAES512(x.data.rounds, &x.data.enc[0], &x.tweak.enc[0], &s.iv[0], &b[0], len(b))
}

func (x *xtsVAES512) decryptSector(b []byte, s *scratch) {
	xtsDecryptVAES512(x.data.rounds, &x.data.dec[0], &x.tweak.enc[0], &s.iv[0], &b[0], len(b))
}
