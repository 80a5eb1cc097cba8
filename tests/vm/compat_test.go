package vm

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

// compatCase is one dm-crypt table the kernel and sectorcipher must agree on.
type compatCase struct {
	spec       string
	keyBytes   int
	sectorSize int
	large      bool
	ivOffset   uint64 // 512-byte units
}

func (c compatCase) String() string {
	return fmt.Sprintf("%s/key%d/sector%d/large=%v/iv_offset=%d", c.spec, c.keyBytes*8, c.sectorSize, c.large, c.ivOffset)
}

// compatCases lists every combination of the scenario. The IV offsets just
// below 2^32 make the IV sector cross 2^32 inside a region, where plain must
// wrap and plain64 must not; the small ones are an ordinary partition-style
// offset. Offsets are multiples of sector_size/512 as dm-crypt requires.
func compatCases() []compatCase {
	specs := []struct {
		spec     string
		keyBytes int
	}{
		{"aes-xts-plain64", 64},
		{"aes-xts-plain64", 32},
		{"aes-xts-plain", 64},
		{"aes-cbc-essiv:sha256", 32},
		// ESSIV keys its IV cipher with sha256 of the whole key, so AES-256
		// even for a 128-bit data key: worth its own case.
		{"aes-cbc-essiv:sha256", 16},
		{"aes-cbc-plain64", 32},
		{"aes-cbc-plain", 32},
		// twofish's userspace cipher is x/crypto/twofish under the AES
		// specs' chaining and IV code: every IV mode and key size once.
		{"twofish-xts-plain64", 64},
		{"twofish-xts-plain64", 32},
		{"twofish-xts-plain", 48},
		{"twofish-cbc-essiv:sha256", 32},
		{"twofish-cbc-essiv:sha256", 16},
		{"twofish-cbc-plain64", 32},
		{"twofish-cbc-plain", 24},
	}
	var out []compatCase
	for _, s := range specs {
		for _, size := range []int{512, 4096} {
			step := uint64(size / 512)
			high := uint64(1<<32 - 13) // odd: catches an offset applied in the wrong units
			if step > 1 {
				high = 1<<32 - 16*step
			}
			for _, large := range []bool{false, true} {
				for _, off := range []uint64{high, 7 * step} {
					out = append(out, compatCase{s.spec, s.keyBytes, size, large, off})
				}
			}
		}
	}
	return out
}

// compatImage adds the twofish module: the guest has no modprobe for the
// kernel to ask for it.
var compatImage = Image{GoPackages: testImage.GoPackages, Modules: append(append([]string(nil), DefaultModules...), "twofish_generic")}

// TestKernelCompat is issue 4, scenario 1: for each case, data encrypted on the
// host by sectorcipher must read back as the plaintext through the kernel's
// dm-crypt mapping with the same table, and data written through the kernel
// mapping must decrypt on the host to what was written. All cases run in one
// boot, each in its own region of the disks.
func TestKernelCompat(t *testing.T) {
	const region = 128 << 10 // bytes per case, a multiple of every sector size
	cases := compatCases()
	rng := rand.New(rand.NewPCG(4, 1))
	fill := func(b []byte) {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	total := region * len(cases)
	cipherIn := make([]byte, total) // host ciphertext of p1, for the kernel to decrypt
	p1 := make([]byte, total)
	p2 := make([]byte, total) // plaintext the guest writes through the kernel mapping
	fill(p1)
	fill(p2)
	for i, c := range cases {
		if golden(c) {
			copy(p2[i*region:], goldenPlain(c.String(), region))
		}
	}
	mappings := make([]sectorcipher.Mapping, len(cases))
	var script, copies strings.Builder
	var tables []string
	script.WriteString("set -e\n")
	for i, c := range cases {
		spec, err := sectorcipher.ParseSpec(c.spec)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		key := make([]byte, c.keyBytes)
		fill(key)
		m := sectorcipher.Mapping{Spec: spec, Key: key, SectorSize: c.sectorSize, IVOffset: c.ivOffset, IVLargeSectors: c.large}
		cph, err := sectorcipher.New(m)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		mappings[i] = m
		lo, hi := i*region, (i+1)*region
		copy(cipherIn[lo:hi], p1[lo:hi])
		// sector512 is relative to the target start: the backing offset of the
		// region must not enter the IV, and the guest table checks that.
		cph.Encrypt(cipherIn[lo:hi], 0)

		var opts []string
		if c.sectorSize != 512 {
			opts = append(opts, fmt.Sprintf("sector_size:%d", c.sectorSize))
		}
		if c.large {
			opts = append(opts, "iv_large_sectors")
		}
		optStr := ""
		if len(opts) > 0 {
			optStr = fmt.Sprintf(" %d %s", len(opts), strings.Join(opts, " "))
		}
		table := fmt.Sprintf("0 %d crypt %s %s %d /dev/vda %d%s",
			region/512, spec.KernelCipher(), hex.EncodeToString(key), c.ivOffset, lo/512, optStr)
		tables = append(tables, fmt.Sprintf("c%d,,,rw,%s", i, table))
		blocks, first := region/4096, lo/4096
		fmt.Fprintf(&copies, "echo 'case %d: %v'\n", i, c)
		fmt.Fprintf(&copies, "dd if=/dev/mapper/c%d of=/dev/vdc bs=4096 seek=%d count=%d conv=notrunc,fsync 2>/dev/null\n", i, first, blocks)
		fmt.Fprintf(&copies, "dd if=/dev/vdb of=/dev/mapper/c%d bs=4096 skip=%d count=%d conv=notrunc,fsync 2>/dev/null\n", i, first, blocks)
	}
	// Each dmsetup run costs a dynamic-linker start under emulation, so all
	// devices are created, given /dev/mapper nodes (nobody else makes them
	// without udev) and removed with one call each.
	fmt.Fprintf(&script, "dmsetup create --concise '%s'\n", strings.Join(tables, ";"))
	script.WriteString("dmsetup mknodes\n")
	script.WriteString(copies.String())
	script.WriteString("dmsetup remove_all\n")
	script.WriteString("echo COMPAT-DONE\n")

	data := newDisk(t, "data.img", total, cipherIn)
	src := newDisk(t, "p2.img", total, p2)
	out := newDisk(t, "out.img", total, nil)
	res := Run(t, Config{
		Image:  compatImage,
		Disks:  []string{data, src, out},
		Script: script.String(),
	})
	if !strings.Contains(res.Console, "COMPAT-DONE") {
		t.Fatalf("scenario did not finish\n%s", res.Tail(consoleTail))
	}

	readBack := readDisk(t, out)
	kernelCipher := readDisk(t, data)
	var goldens []goldenCase
	for i, c := range cases {
		lo, hi := i*region, (i+1)*region
		if golden(c) {
			goldens = append(goldens, goldenOf(c, mappings[i].Key, kernelCipher[lo:hi]))
		}
		if !bytes.Equal(readBack[lo:hi], p1[lo:hi]) {
			t.Errorf("%v: the kernel decrypts sectorcipher's ciphertext to something else (first difference at byte %d)",
				c, firstDiff(readBack[lo:hi], p1[lo:hi]))
		}
		got := bytes.Clone(kernelCipher[lo:hi])
		if bytes.Equal(got, p2[lo:hi]) {
			t.Errorf("%v: the kernel wrote plaintext to the disk", c)
			continue
		}
		cph, err := sectorcipher.New(mappings[i])
		if err != nil {
			t.Fatal(err)
		}
		cph.Decrypt(got, 0)
		if !bytes.Equal(got, p2[lo:hi]) {
			t.Errorf("%v: sectorcipher decrypts the kernel's ciphertext to something else (first difference at byte %d)",
				c, firstDiff(got, p2[lo:hi]))
		}
	}
	if !t.Failed() {
		checkGolden(t, goldens)
	}
	t.Logf("%d dm-crypt tables checked both ways in one boot", len(cases))
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return -1
}
