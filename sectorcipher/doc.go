// Package sectorcipher implements, in userspace, the sector transforms of
// Linux dm-crypt for the cipher specs cryptshift converts between, so that a
// sector encrypted here reads back correctly through the kernel's mapping
// with the same table line, and vice versa.
//
// # Supported specs
//
//	aes-xts-plain64       key 32/48/64 bytes (AES-128/192/256-XTS, K1 data key then K2 tweak key)
//	aes-xts-plain         key 32/48/64 bytes
//	aes-cbc-essiv:sha256  key 16/24/32 bytes
//	aes-cbc-plain64       key 16/24/32 bytes
//	aes-cbc-plain         key 16/24/32 bytes
//	twofish-xts-plain64, twofish-xts-plain, twofish-cbc-essiv:sha256,
//	twofish-cbc-plain64, twofish-cbc-plain
//	                      the same with Twofish as the block cipher, same key sizes
//	none                  no key: plaintext, the identity transform
//
// ParseSpec also accepts the spellings the kernel treats as equal to these
// ("aes" and "aes-plain" mean aes-cbc-plain in the legacy format,
// "capi:xts(aes)-plain64" and friends in the crypto-API format, and
// "cipher_null-ecb" for none; "twofish", "twofish-plain" and
// "capi:xts(twofish)-plain64" and friends likewise) and canonicalizes them.
//
// # IV rules (drivers/md/dm-crypt.c, Linux 6.1)
//
// crypt_convert_init sets the running sector to the bio sector relative to
// the target start plus iv_offset; the offset into the backing device plays
// no part. crypt_convert_block_skcipher then, per sector_size block, shifts
// that value right by log2(sector_size/512) when iv_large_sectors is set, and
// advances it by sector_size/512 after each block. So with sector_size 4096
// and no iv_large_sectors the IVs of consecutive blocks are 0, 8, 16, ...;
// with iv_large_sectors they are 0, 1, 2, ... Each sector_size block is one
// XTS data unit or one CBC chain: the cipher runs over the whole block.
//
//   - plain64: the IV sector as a little-endian uint64, zero-padded to 16 bytes.
//   - plain: the same with the IV sector truncated to its low 32 bits (it
//     wraps after 2 TiB of 512-byte sectors; the kernel does exactly that).
//   - essiv:sha256: the plain64 block, AES-encrypted under sha256(key). Since
//     Linux 5.4 dm-crypt delegates this to the crypto API's essiv template,
//     which hashes the whole data key and keys the ESSIV cipher, the data's
//     block cipher, with the full digest, so the ESSIV cipher is AES-256 (or
//     Twofish-256) whatever the data key size.
//   - XTS uses the IV block as its tweak input (encrypted under K2), which for
//     plain64 is the IEEE 1619 data unit number in little-endian order.
//
// # What the kernel refuses, and Mapping.Validate with it
//
//   - sector_size other than a power of two between 512 and 4096
//     ("Invalid feature value for sector_size").
//   - iv_offset not a multiple of sector_size/512 ("Invalid iv_offset sector").
//   - a key whose length the cipher's setkey rejects: XTS needs two AES keys
//     of equal size, CBC one AES key. (In FIPS mode the kernel also rejects
//     XTS keys with K1 == K2; outside FIPS mode it accepts them, and so do we.)
//   - a target length that is not a multiple of sector_size/512 ("Device size
//     is not multiple of sector_size feature"): not part of a Mapping, so it
//     is checked separately by Mapping.CheckLength.
//
// iv_large_sectors is accepted with every IV mode (plain, plain64 and essiv
// alike; only lmk and tcw, which cryptshift does not support, insist on
// 512-byte sectors), and with sector_size 512 it changes nothing. Bios that
// are not aligned to sector_size are failed with an I/O error at map time;
// the Cipher methods panic on them instead, since here they are programming
// errors.
//
// # Implementations
//
// On amd64 the XTS and CBC transforms run in assembly, one call per sector.
// XTS uses VAES and VPCLMULQDQ on 512-bit registers where the CPU and OS
// offer AVX-512 (sixteen blocks in flight), otherwise AES-NI and PCLMULQDQ
// (eight blocks in flight). CBC uses AES-NI: eight blocks in flight to
// decrypt, one at a time to encrypt, which is serial. Without AES-NI and
// PCLMULQDQ, on other architectures, or when built with the purego tag, the
// pure-Go engines run instead; those call crypto/aes, so under purego they
// get the standard library's portable AES too. All of them produce the same
// bytes, and the tests check each one this machine can run against the
// others and against golang.org/x/crypto/xts and crypto/cipher.
//
// Twofish has no assembly engine: its specs run the pure-Go XTS and CBC
// engines over golang.org/x/crypto/twofish, and testdata/kernel-golden.json
// holds the kernel's own ciphertext for each of them.
package sectorcipher
