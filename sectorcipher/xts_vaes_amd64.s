//go:build !purego

#include "textflag.h"

// XTS with VAES on 512-bit registers: four blocks per register, four
// registers (sixteen blocks) in flight. AVX-512 has 32 vector registers, so
// unlike the SSE version every round key stays in a register, broadcast to
// all four lanes:
//   Z16       round key 0          Z17-Z29  round keys 1-13
//   Z30       the last round key (key nr, whatever nr is)
//   Z31       the reduction polynomial 0x87 in every lane
//   Z0-Z3     data, Z4-Z7 their tweaks (lane i of Zj holds tweak 4(j-4)+i)
//   Z8-Z11    temporaries
// General registers are as in xts_amd64.s: AX data key schedule, BX tweak
// key schedule, DX rounds, DI position, SI bytes left, R8 last data round
// key, R9 last tweak round key.

DATA vPoly<>+0(SB)/8, $0x87
DATA vPoly<>+8(SB)/8, $0
DATA vPoly<>+16(SB)/8, $0x87
DATA vPoly<>+24(SB)/8, $0
DATA vPoly<>+32(SB)/8, $0x87
DATA vPoly<>+40(SB)/8, $0
DATA vPoly<>+48(SB)/8, $0x87
DATA vPoly<>+56(SB)/8, $0
GLOBL vPoly<>(SB), RODATA|NOPTR, $64

// Per-qword shift counts that multiply lane i by x^i: left by i, and the
// bits that leave each qword found by a right shift of 64-i (a count of 64
// gives zero, as lane 0 needs).
DATA vShlLane<>+0(SB)/8, $0
DATA vShlLane<>+8(SB)/8, $0
DATA vShlLane<>+16(SB)/8, $1
DATA vShlLane<>+24(SB)/8, $1
DATA vShlLane<>+32(SB)/8, $2
DATA vShlLane<>+40(SB)/8, $2
DATA vShlLane<>+48(SB)/8, $3
DATA vShlLane<>+56(SB)/8, $3
GLOBL vShlLane<>(SB), RODATA|NOPTR, $64

DATA vShrLane<>+0(SB)/8, $64
DATA vShrLane<>+8(SB)/8, $64
DATA vShrLane<>+16(SB)/8, $63
DATA vShrLane<>+24(SB)/8, $63
DATA vShrLane<>+32(SB)/8, $62
DATA vShrLane<>+40(SB)/8, $62
DATA vShrLane<>+48(SB)/8, $61
DATA vShrLane<>+56(SB)/8, $61
GLOBL vShrLane<>(SB), RODATA|NOPTR, $64

// FOLD finishes a multiplication by x^k (k <= 8) given A, each qword of the
// tweak shifted left by k, and B, the bits each qword lost: the low qword's
// go into the high qword, the high qword's wrap around through the
// polynomial. The result is in A; B and C are clobbered.
#define FOLD(A, B, C) \
	VPSLLDQ $8, B, C; \
	VPSRLDQ $8, B, B; \
	VPCLMULQDQ $0x00, Z31, B, B; \
	VPTERNLOGQ $0x96, C, B, A

// MUL_X16 multiplies every lane of T by x^16: a two-byte shift, and the two
// bytes shifted out folded back in.
#define MUL_X16(T, TMP) \
	VPSRLDQ $14, T, TMP; \
	VPCLMULQDQ $0x00, Z31, TMP, TMP; \
	VPSLLDQ $2, T, T; \
	VPXORQ TMP, T, T

#define VROUND4(OP, K) \
	OP K, Z0, Z0; \
	OP K, Z1, Z1; \
	OP K, Z2, Z2; \
	OP K, Z3, Z3

// AES4 runs rounds 1 to nr on Z0-Z3 (round 0 is folded into the tweak XOR).
// The relative jumps skip the rounds a shorter key does not have: 17 and 8
// instructions.
#define AES4(OP, OPLAST) \
	VROUND4(OP, Z17); \
	VROUND4(OP, Z18); \
	VROUND4(OP, Z19); \
	VROUND4(OP, Z20); \
	VROUND4(OP, Z21); \
	VROUND4(OP, Z22); \
	VROUND4(OP, Z23); \
	VROUND4(OP, Z24); \
	VROUND4(OP, Z25); \
	CMPQ DX, $12; \
	JB 18(PC); \
	VROUND4(OP, Z26); \
	VROUND4(OP, Z27); \
	JE 9(PC); \
	VROUND4(OP, Z28); \
	VROUND4(OP, Z29); \
	VROUND4(OPLAST, Z30)

// AES1 is AES4 for the one register R (a Z or an X register).
#define AES1(OP, OPLAST, R) \
	OP Z17, R, R; \
	OP Z18, R, R; \
	OP Z19, R, R; \
	OP Z20, R, R; \
	OP Z21, R, R; \
	OP Z22, R, R; \
	OP Z23, R, R; \
	OP Z24, R, R; \
	OP Z25, R, R; \
	CMPQ DX, $12; \
	JB 6(PC); \
	OP Z26, R, R; \
	OP Z27, R, R; \
	JE 3(PC); \
	OP Z28, R, R; \
	OP Z29, R, R; \
	OPLAST Z30, R, R

#define AES1X(OP, OPLAST, R) \
	OP X17, R, R; \
	OP X18, R, R; \
	OP X19, R, R; \
	OP X20, R, R; \
	OP X21, R, R; \
	OP X22, R, R; \
	OP X23, R, R; \
	OP X24, R, R; \
	OP X25, R, R; \
	CMPQ DX, $12; \
	JB 6(PC); \
	OP X26, R, R; \
	OP X27, R, R; \
	JE 3(PC); \
	OP X28, R, R; \
	OP X29, R, R; \
	OPLAST X30, R, R

// VSETUP loads the arguments and the data round keys, encrypts the IV block
// under the tweak key and spreads the first sixteen tweaks over Z4-Z7.
// Reading 15 round keys is in bounds for every key size (aesSchedule
// reserves 15); the ones past nr are never used.
#define VSETUP \
	MOVQ nr+0(FP), DX; \
	MOVQ xk+8(FP), AX; \
	MOVQ tk+16(FP), BX; \
	MOVQ iv+24(FP), CX; \
	MOVQ buf+32(FP), DI; \
	MOVQ n+40(FP), SI; \
	MOVQ DX, R8; \
	SHLQ $4, R8; \
	MOVQ R8, R9; \
	ADDQ AX, R8; \
	ADDQ BX, R9; \
	VMOVDQU (CX), X4; \
	VPXOR (BX), X4, X4; \
	VAESENC 16(BX), X4, X4; \
	VAESENC 32(BX), X4, X4; \
	VAESENC 48(BX), X4, X4; \
	VAESENC 64(BX), X4, X4; \
	VAESENC 80(BX), X4, X4; \
	VAESENC 96(BX), X4, X4; \
	VAESENC 112(BX), X4, X4; \
	VAESENC 128(BX), X4, X4; \
	VAESENC 144(BX), X4, X4; \
	CMPQ DX, $12; \
	JB 6(PC); \
	VAESENC 160(BX), X4, X4; \
	VAESENC 176(BX), X4, X4; \
	JE 3(PC); \
	VAESENC 192(BX), X4, X4; \
	VAESENC 208(BX), X4, X4; \
	VAESENCLAST (R9), X4, X4; \
	VMOVDQU64 vPoly<>(SB), Z31; \
	VSHUFI64X2 $0, Z4, Z4, Z4; \
	VPSLLVQ vShlLane<>(SB), Z4, Z8; \
	VPSRLVQ vShrLane<>(SB), Z4, Z9; \
	FOLD(Z8, Z9, Z10); \
	VMOVDQA64 Z8, Z4; \
	VPSLLQ $4, Z4, Z5; \
	VPSRLQ $60, Z4, Z9; \
	FOLD(Z5, Z9, Z10); \
	VPSLLQ $4, Z5, Z6; \
	VPSRLQ $60, Z5, Z9; \
	FOLD(Z6, Z9, Z10); \
	VPSLLQ $4, Z6, Z7; \
	VPSRLQ $60, Z6, Z9; \
	FOLD(Z7, Z9, Z10); \
	VBROADCASTI32X4 0(AX), Z16; \
	VBROADCASTI32X4 16(AX), Z17; \
	VBROADCASTI32X4 32(AX), Z18; \
	VBROADCASTI32X4 48(AX), Z19; \
	VBROADCASTI32X4 64(AX), Z20; \
	VBROADCASTI32X4 80(AX), Z21; \
	VBROADCASTI32X4 96(AX), Z22; \
	VBROADCASTI32X4 112(AX), Z23; \
	VBROADCASTI32X4 128(AX), Z24; \
	VBROADCASTI32X4 144(AX), Z25; \
	VBROADCASTI32X4 160(AX), Z26; \
	VBROADCASTI32X4 176(AX), Z27; \
	VBROADCASTI32X4 192(AX), Z28; \
	VBROADCASTI32X4 208(AX), Z29; \
	VBROADCASTI32X4 (R8), Z30

// func xtsEncryptVAES512(nr int, xk, tk, iv, buf *byte, n int)
TEXT ·xtsEncryptVAES512(SB), NOSPLIT, $0-48
	VSETUP

xts16:
	CMPQ       SI, $256
	JB         xts4
	VMOVDQU64  0(DI), Z0
	VMOVDQU64  64(DI), Z1
	VMOVDQU64  128(DI), Z2
	VMOVDQU64  192(DI), Z3
	// Whitening and round 0 in one three-way XOR each.
	VPTERNLOGQ $0x96, Z16, Z4, Z0
	VPTERNLOGQ $0x96, Z16, Z5, Z1
	VPTERNLOGQ $0x96, Z16, Z6, Z2
	VPTERNLOGQ $0x96, Z16, Z7, Z3
	AES4(VAESENC, VAESENCLAST)
	VPXORQ     Z4, Z0, Z0
	VPXORQ     Z5, Z1, Z1
	VPXORQ     Z6, Z2, Z2
	VPXORQ     Z7, Z3, Z3
	VMOVDQU64  Z0, 0(DI)
	VMOVDQU64  Z1, 64(DI)
	VMOVDQU64  Z2, 128(DI)
	VMOVDQU64  Z3, 192(DI)
	MUL_X16(Z4, Z8)
	MUL_X16(Z5, Z9)
	MUL_X16(Z6, Z10)
	MUL_X16(Z7, Z11)
	ADDQ       $256, DI
	SUBQ       $256, SI
	JMP        xts16

	// Only data units that are not a multiple of 256 bytes get here: the
	// IEEE 1619 vectors and the tests, not dm-crypt's sector sizes.
xts4:
	CMPQ       SI, $64
	JB         xts1
	VMOVDQU64  (DI), Z0
	VPTERNLOGQ $0x96, Z16, Z4, Z0
	AES1(VAESENC, VAESENCLAST, Z0)
	VPXORQ     Z4, Z0, Z0
	VMOVDQU64  Z0, (DI)
	VMOVDQA64  Z5, Z4
	VMOVDQA64  Z6, Z5
	VMOVDQA64  Z7, Z6
	ADDQ       $64, DI
	SUBQ       $64, SI
	JMP        xts4

xts1:
	TESTQ      SI, SI
	JZ         xtsdone
	VMOVDQU64  (DI), X0
	VPTERNLOGQ $0x96, X16, X4, X0
	AES1X(VAESENC, VAESENCLAST, X0)
	VPXORQ     X4, X0, X0
	VMOVDQU64  X0, (DI)
	VALIGNQ    $2, Z4, Z4, Z4
	ADDQ       $16, DI
	SUBQ       $16, SI
	JMP        xts1

xtsdone:
	VZEROUPPER
	RET

// func xtsDecryptVAES512(nr int, xk, tk, iv, buf *byte, n int)
// xk is the decryption schedule of the data key.
TEXT ·xtsDecryptVAES512(SB), NOSPLIT, $0-48
	VSETUP

xts16:
	CMPQ       SI, $256
	JB         xts4
	VMOVDQU64  0(DI), Z0
	VMOVDQU64  64(DI), Z1
	VMOVDQU64  128(DI), Z2
	VMOVDQU64  192(DI), Z3
	// Whitening and round 0 in one three-way XOR each.
	VPTERNLOGQ $0x96, Z16, Z4, Z0
	VPTERNLOGQ $0x96, Z16, Z5, Z1
	VPTERNLOGQ $0x96, Z16, Z6, Z2
	VPTERNLOGQ $0x96, Z16, Z7, Z3
	AES4(VAESDEC, VAESDECLAST)
	VPXORQ     Z4, Z0, Z0
	VPXORQ     Z5, Z1, Z1
	VPXORQ     Z6, Z2, Z2
	VPXORQ     Z7, Z3, Z3
	VMOVDQU64  Z0, 0(DI)
	VMOVDQU64  Z1, 64(DI)
	VMOVDQU64  Z2, 128(DI)
	VMOVDQU64  Z3, 192(DI)
	MUL_X16(Z4, Z8)
	MUL_X16(Z5, Z9)
	MUL_X16(Z6, Z10)
	MUL_X16(Z7, Z11)
	ADDQ       $256, DI
	SUBQ       $256, SI
	JMP        xts16

	// Only data units that are not a multiple of 256 bytes get here: the
	// IEEE 1619 vectors and the tests, not dm-crypt's sector sizes.
xts4:
	CMPQ       SI, $64
	JB         xts1
	VMOVDQU64  (DI), Z0
	VPTERNLOGQ $0x96, Z16, Z4, Z0
	AES1(VAESDEC, VAESDECLAST, Z0)
	VPXORQ     Z4, Z0, Z0
	VMOVDQU64  Z0, (DI)
	VMOVDQA64  Z5, Z4
	VMOVDQA64  Z6, Z5
	VMOVDQA64  Z7, Z6
	ADDQ       $64, DI
	SUBQ       $64, SI
	JMP        xts4

xts1:
	TESTQ      SI, SI
	JZ         xtsdone
	VMOVDQU64  (DI), X0
	VPTERNLOGQ $0x96, X16, X4, X0
	AES1X(VAESDEC, VAESDECLAST, X0)
	VPXORQ     X4, X0, X0
	VMOVDQU64  X0, (DI)
	VALIGNQ    $2, Z4, Z4, Z4
	ADDQ       $16, DI
	SUBQ       $16, SI
	JMP        xts1

xtsdone:
	VZEROUPPER
	RET
