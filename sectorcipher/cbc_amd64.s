//go:build !purego

#include "textflag.h"

// Register use: AX round keys, R8 the last round key, DX rounds (10, 12 or
// 14), DI position in the sector, SI bytes left. Round keys are 16-byte
// aligned memory operands, as in xts_amd64.s.

#define ROUND8(OP, K) \
	OP K, X0; \
	OP K, X1; \
	OP K, X2; \
	OP K, X3; \
	OP K, X4; \
	OP K, X5; \
	OP K, X6; \
	OP K, X7

#define SETUP \
	MOVQ nr+0(FP), DX; \
	MOVQ xk+8(FP), AX; \
	MOVQ iv+16(FP), CX; \
	MOVQ buf+24(FP), DI; \
	MOVQ n+32(FP), SI; \
	MOVQ DX, R8; \
	SHLQ $4, R8; \
	ADDQ AX, R8

// func cbcEncryptAESNI(nr int, xk, iv, buf *byte, n int)
//
// Each block's input is the previous block's output, so this runs at the
// latency of the AES rounds whatever is done around them. Round key 0 is
// XORed into the plaintext off the chain, which leaves one PXOR on it.
TEXT ·cbcEncryptAESNI(SB), NOSPLIT, $0-40
	SETUP
	MOVOU (CX), X0

loop:
	MOVOU  (DI), X1
	PXOR   (AX), X1
	PXOR   X1, X0
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
	JB     last
	AESENC 160(AX), X0
	AESENC 176(AX), X0
	JE     last
	AESENC 192(AX), X0
	AESENC 208(AX), X0

last:
	AESENCLAST (R8), X0
	MOVOU      X0, (DI)
	ADDQ       $16, DI
	SUBQ       $16, SI
	JNZ        loop
	RET

// func cbcDecryptAESNI(nr int, xk, iv, buf *byte, n int)
//
// xk is the decryption schedule. Every block decrypts independently, eight
// at a time; X8 carries the ciphertext block before the current group (the
// IV at first). The work is in place, so each group reads the ciphertext it
// XORs with back from buf before overwriting it.
TEXT ·cbcDecryptAESNI(SB), NOSPLIT, $0-40
	SETUP
	MOVOU (CX), X8

loop8:
	CMPQ  SI, $128
	JB    tail
	MOVOU 0(DI), X0
	MOVOU 16(DI), X1
	MOVOU 32(DI), X2
	MOVOU 48(DI), X3
	MOVOU 64(DI), X4
	MOVOU 80(DI), X5
	MOVOU 96(DI), X6
	MOVOU 112(DI), X7
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
	CMPQ  DX, $12
	JB    last8
	ROUND8(AESDEC, 160(AX))
	ROUND8(AESDEC, 176(AX))
	JE    last8
	ROUND8(AESDEC, 192(AX))
	ROUND8(AESDEC, 208(AX))

last8:
	ROUND8(AESDECLAST, (R8))
	PXOR  X8, X0
	MOVOU 0(DI), X9
	PXOR  X9, X1
	MOVOU 16(DI), X10
	PXOR  X10, X2
	MOVOU 32(DI), X11
	PXOR  X11, X3
	MOVOU 48(DI), X12
	PXOR  X12, X4
	MOVOU 64(DI), X13
	PXOR  X13, X5
	MOVOU 80(DI), X14
	PXOR  X14, X6
	MOVOU 96(DI), X15
	PXOR  X15, X7
	MOVOU 112(DI), X8
	MOVOU X0, 0(DI)
	MOVOU X1, 16(DI)
	MOVOU X2, 32(DI)
	MOVOU X3, 48(DI)
	MOVOU X4, 64(DI)
	MOVOU X5, 80(DI)
	MOVOU X6, 96(DI)
	MOVOU X7, 112(DI)
	ADDQ  $128, DI
	SUBQ  $128, SI
	JMP   loop8

tail:
	TESTQ SI, SI
	JZ    done

loop1:
	MOVOU  (DI), X1
	MOVO   X1, X0
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
	JB     last1
	AESDEC 160(AX), X0
	AESDEC 176(AX), X0
	JE     last1
	AESDEC 192(AX), X0
	AESDEC 208(AX), X0

last1:
	AESDECLAST (R8), X0
	PXOR       X8, X0
	MOVOU      X0, (DI)
	MOVO       X1, X8
	ADDQ       $16, DI
	SUBQ       $16, SI
	JNZ        loop1

done:
	RET
