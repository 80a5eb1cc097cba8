//go:build !purego

#include "textflag.h"

// Register use in the XTS functions:
//   AX  round keys of the data key (encryption or decryption schedule)
//   R8  the last of those round keys
//   BX  encryption round keys of the tweak key
//   DX  number of rounds (10, 12 or 14)
//   DI  current position in the sector, SI bytes left
//   X0-X7   eight blocks in flight
//   X8-X15  their eight tweaks
// The round keys stay in memory: with eight blocks and eight tweaks live,
// SSE has no register left for them, and a memory operand costs one load
// per AES instruction, which is not the bottleneck.

// gfMask turns the sign bits of a tweak's dwords (after PSHUFD $0x13) into
// what doubling must add back: bit 63 moves into bit 64, and bit 127 wraps
// around as x^128 = x^7+x^2+x+1.
DATA gfMask<>+0(SB)/4, $0x87
DATA gfMask<>+4(SB)/4, $0
DATA gfMask<>+8(SB)/4, $1
DATA gfMask<>+12(SB)/4, $0
GLOBL gfMask<>(SB), RODATA|NOPTR, $16

// gfPoly is the reduction polynomial without its x^128 term, for PCLMULQDQ.
DATA gfPoly<>+0(SB)/8, $0x87
DATA gfPoly<>+8(SB)/8, $0
GLOBL gfPoly<>(SB), RODATA|NOPTR, $16

// MUL_X sets T to T·x in GF(2^128), IEEE 1619 bit order; TMP is clobbered.
#define MUL_X(T, TMP) \
	MOVO T, TMP; \
	PSRAL $31, TMP; \
	PSHUFD $0x13, TMP, TMP; \
	PAND gfMask<>(SB), TMP; \
	PADDQ T, T; \
	PXOR TMP, T

// MUL_X8 sets T to T·x^8: a one-byte shift, and the byte shifted out folded
// back in by a carry-less multiply with the polynomial. Unlike eight MUL_X
// in a row it has no serial chain, so the eight tweaks of the next group
// come from the eight of this one independently.
#define MUL_X8(T, TMP) \
	MOVO T, TMP; \
	PSRLO $15, TMP; \
	PCLMULQDQ $0x00, gfPoly<>(SB), TMP; \
	PSLLO $1, T; \
	PXOR TMP, T

#define ROUND8(OP, K) \
	OP K, X0; \
	OP K, X1; \
	OP K, X2; \
	OP K, X3; \
	OP K, X4; \
	OP K, X5; \
	OP K, X6; \
	OP K, X7

#define XOR_TWEAKS \
	PXOR X8, X0; \
	PXOR X9, X1; \
	PXOR X10, X2; \
	PXOR X11, X3; \
	PXOR X12, X4; \
	PXOR X13, X5; \
	PXOR X14, X6; \
	PXOR X15, X7

#define LOAD8 \
	MOVOU 0(DI), X0; \
	MOVOU 16(DI), X1; \
	MOVOU 32(DI), X2; \
	MOVOU 48(DI), X3; \
	MOVOU 64(DI), X4; \
	MOVOU 80(DI), X5; \
	MOVOU 96(DI), X6; \
	MOVOU 112(DI), X7

#define STORE8 \
	MOVOU X0, 0(DI); \
	MOVOU X1, 16(DI); \
	MOVOU X2, 32(DI); \
	MOVOU X3, 48(DI); \
	MOVOU X4, 64(DI); \
	MOVOU X5, 80(DI); \
	MOVOU X6, 96(DI); \
	MOVOU X7, 112(DI)

#define NEXT_TWEAKS8 \
	MUL_X8(X8, X0); \
	MUL_X8(X9, X1); \
	MUL_X8(X10, X2); \
	MUL_X8(X11, X3); \
	MUL_X8(X12, X4); \
	MUL_X8(X13, X5); \
	MUL_X8(X14, X6); \
	MUL_X8(X15, X7)

// XTS_SETUP loads the arguments, encrypts the IV block under the tweak key
// into X8 and derives the other seven tweaks of the first group.
#define XTS_SETUP \
	MOVQ nr+0(FP), DX; \
	MOVQ xk+8(FP), AX; \
	MOVQ tk+16(FP), BX; \
	MOVQ iv+24(FP), CX; \
	MOVQ buf+32(FP), DI; \
	MOVQ n+40(FP), SI; \
	MOVQ DX, R8; \
	SHLQ $4, R8; \
	ADDQ AX, R8; \
	MOVOU (CX), X8; \
	PXOR (BX), X8; \
	AESENC 16(BX), X8; \
	AESENC 32(BX), X8; \
	AESENC 48(BX), X8; \
	AESENC 64(BX), X8; \
	AESENC 80(BX), X8; \
	AESENC 96(BX), X8; \
	AESENC 112(BX), X8; \
	AESENC 128(BX), X8; \
	AESENC 144(BX), X8; \
	MOVQ DX, CX; \
	SHLQ $4, CX; \
	ADDQ BX, CX; \
	CMPQ DX, $12; \
	JB 3(PC); \
	AESENC 160(BX), X8; \
	AESENC 176(BX), X8; \
	CMPQ DX, $14; \
	JB 3(PC); \
	AESENC 192(BX), X8; \
	AESENC 208(BX), X8; \
	AESENCLAST (CX), X8; \
	MOVO X8, X9; \
	MUL_X(X9, X0); \
	MOVO X9, X10; \
	MUL_X(X10, X0); \
	MOVO X10, X11; \
	MUL_X(X11, X0); \
	MOVO X11, X12; \
	MUL_X(X12, X0); \
	MOVO X12, X13; \
	MUL_X(X13, X0); \
	MOVO X13, X14; \
	MUL_X(X14, X0); \
	MOVO X14, X15; \
	MUL_X(X15, X0)

// func xtsEncryptAESNI(nr int, xk, tk, iv, buf *byte, n int)
TEXT ·xtsEncryptAESNI(SB), NOSPLIT, $0-48
	XTS_SETUP

enc8:
	CMPQ SI, $128
	JB   enc1
	LOAD8
	XOR_TWEAKS
	ROUND8(PXOR, (AX))
	ROUND8(AESENC, 16(AX))
	ROUND8(AESENC, 32(AX))
	ROUND8(AESENC, 48(AX))
	ROUND8(AESENC, 64(AX))
	ROUND8(AESENC, 80(AX))
	ROUND8(AESENC, 96(AX))
	ROUND8(AESENC, 112(AX))
	ROUND8(AESENC, 128(AX))
	ROUND8(AESENC, 144(AX))
	CMPQ DX, $12
	JB   enc8last
	ROUND8(AESENC, 160(AX))
	ROUND8(AESENC, 176(AX))
	JE   enc8last
	ROUND8(AESENC, 192(AX))
	ROUND8(AESENC, 208(AX))

enc8last:
	ROUND8(AESENCLAST, (R8))
	XOR_TWEAKS
	STORE8
	NEXT_TWEAKS8
	ADDQ $128, DI
	SUBQ $128, SI
	JMP  enc8

	// Data units that are not a multiple of 128 bytes (only the IEEE 1619
	// vectors and the fuzz test use them) finish one block at a time.
enc1:
	TESTQ SI, SI
	JZ    done

enc1loop:
	MOVOU  (DI), X0
	PXOR   X8, X0
	PXOR   (AX), X0
	AESENC 16(AX), X0
	AESENC 32(AX), X0
	AESENC 48(AX), X0
	AESENC 64(AX), X0
	AESENC 80(AX), X0
	AESENC 96(AX), X0
	AESENC 112(AX), X0
	AESENC 128(AX), X0
	AESENC 144(AX), X0
	CMPQ   DX, $12
	JB     enc1last
	AESENC 160(AX), X0
	AESENC 176(AX), X0
	JE     enc1last
	AESENC 192(AX), X0
	AESENC 208(AX), X0

enc1last:
	AESENCLAST (R8), X0
	PXOR       X8, X0
	MOVOU      X0, (DI)
	MUL_X(X8, X1)
	ADDQ       $16, DI
	SUBQ       $16, SI
	JNZ        enc1loop

done:
	RET

// func xtsDecryptAESNI(nr int, xk, tk, iv, buf *byte, n int)
// xk is the decryption schedule of the data key; the tweaks are still
// encrypted under tk.
TEXT ·xtsDecryptAESNI(SB), NOSPLIT, $0-48
	XTS_SETUP

dec8:
	CMPQ SI, $128
	JB   dec1
	LOAD8
	XOR_TWEAKS
	ROUND8(PXOR, (AX))
	ROUND8(AESDEC, 16(AX))
	ROUND8(AESDEC, 32(AX))
	ROUND8(AESDEC, 48(AX))
	ROUND8(AESDEC, 64(AX))
	ROUND8(AESDEC, 80(AX))
	ROUND8(AESDEC, 96(AX))
	ROUND8(AESDEC, 112(AX))
	ROUND8(AESDEC, 128(AX))
	ROUND8(AESDEC, 144(AX))
	CMPQ DX, $12
	JB   dec8last
	ROUND8(AESDEC, 160(AX))
	ROUND8(AESDEC, 176(AX))
	JE   dec8last
	ROUND8(AESDEC, 192(AX))
	ROUND8(AESDEC, 208(AX))

dec8last:
	ROUND8(AESDECLAST, (R8))
	XOR_TWEAKS
	STORE8
	NEXT_TWEAKS8
	ADDQ $128, DI
	SUBQ $128, SI
	JMP  dec8

dec1:
	TESTQ SI, SI
	JZ    done

dec1loop:
	MOVOU  (DI), X0
	PXOR   X8, X0
	PXOR   (AX), X0
	AESDEC 16(AX), X0
	AESDEC 32(AX), X0
	AESDEC 48(AX), X0
	AESDEC 64(AX), X0
	AESDEC 80(AX), X0
	AESDEC 96(AX), X0
	AESDEC 112(AX), X0
	AESDEC 128(AX), X0
	AESDEC 144(AX), X0
	CMPQ   DX, $12
	JB     dec1last
	AESDEC 160(AX), X0
	AESDEC 176(AX), X0
	JE     dec1last
	AESDEC 192(AX), X0
	AESDEC 208(AX), X0

dec1last:
	AESDECLAST (R8), X0
	PXOR       X8, X0
	MOVOU      X0, (DI)
	MUL_X(X8, X1)
	ADDQ       $16, DI
	SUBQ       $16, SI
	JNZ        dec1loop

done:
	RET

// func aesInvMixColumns(dst, src *byte)
TEXT ·aesInvMixColumns(SB), NOSPLIT, $0-16
	MOVQ   dst+0(FP), DI
	MOVQ   src+8(FP), SI
	MOVOU  (SI), X0
	AESIMC X0, X0
	MOVOU  X0, (DI)
	RET
