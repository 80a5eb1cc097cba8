package luks

// Sizes of the on-disk structures (docs/FORMAT.md).
const (
	sectorSize = 512

	// LUKS1
	phdrSize       = 592 // the phdr with its 8 keyslots
	numKeyslots1   = 8
	stripes        = 4000 // AF stripes: the only count cryptsetup accepts (LUKS1) or uses (LUKS2)
	saltSize       = 32
	mkDigestSize   = 20
	slotEnabled    = 0x00AC71F3
	slotDisabled   = 0x0000DEAD
	keyslot1Offset = 208
	keyslot1Size   = 48

	// LUKS2
	binHeaderSize   = 4096
	minHdrSize      = 0x4000   // 16 KiB
	maxHdrSize      = 0x400000 // 4 MiB
	maxKeyslotsSize = 0x8000000
	maxKeyslots2    = 32
	maxTokens2      = 32
	maxSegments2    = 32
	maxDigests2     = 8
)

// afSectors is the size, in 512-byte sectors, of the AF-split key
// material for a key of keyBytes bytes.
func afSectors(keyBytes uint64) uint64 {
	return (keyBytes*stripes + sectorSize - 1) / sectorSize
}
