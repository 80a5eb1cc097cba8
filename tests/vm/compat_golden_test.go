package vm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var recordGolden = flag.Bool("compat.record", false,
	"TestKernelCompat: write the kernel's twofish ciphertexts to sectorcipher/testdata/"+goldenFile)

// goldenFile holds, for the specs whose userspace cipher is not AES, what
// the real kernel wrote, so that the host tests of sectorcipher check it
// without a VM (sectorcipher/golden_test.go reads it; its README is
// sectorcipher/testdata/README.md).
const goldenFile = "kernel-golden.json"

// goldenCase is one line of goldenFile: a dm-crypt table and a digest of
// the ciphertext the kernel wrote through it for goldenPlain(Seed, Bytes).
type goldenCase struct {
	Spec           string `json:"spec"`
	Key            string `json:"key"`
	SectorSize     int    `json:"sector_size"`
	IVLargeSectors bool   `json:"iv_large_sectors"`
	IVOffset       uint64 `json:"iv_offset"`
	Bytes          int    `json:"bytes"`
	Seed           string `json:"seed"`
	CipherSHA256   string `json:"cipher_sha256"`
	// Head is the first 64 bytes of the ciphertext, for a readable diff.
	Head string `json:"head"`
}

// golden reports whether case c goes into goldenFile.
func golden(c compatCase) bool { return !strings.HasPrefix(c.spec, "aes-") }

// goldenPlain is the plaintext of a golden case: SHA-256 of seed and the
// little-endian 64-bit index of each 32-byte block. The host test repeats
// it from the file's own description, so a plaintext needs no storing.
func goldenPlain(seed string, n int) []byte {
	out := make([]byte, 0, n+32)
	var idx [8]byte
	for j := uint64(0); len(out) < n; j++ {
		binary.LittleEndian.PutUint64(idx[:], j)
		d := sha256.Sum256(append([]byte(seed), idx[:]...))
		out = append(out, d[:]...)
	}
	return out[:n]
}

func goldenPath(t *testing.T) string {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "sectorcipher", "testdata", goldenFile)
}

// checkGolden writes the golden cases with -compat.record, and otherwise
// checks the kernel's ciphertext of this run against the recorded one,
// which keeps the file honest: a kernel that now writes other bytes, or a
// file edited by hand, fails here.
func checkGolden(t *testing.T, got []goldenCase) {
	p := goldenPath(t)
	if *recordGolden {
		var b bytes.Buffer
		for _, g := range got {
			line, err := json.Marshal(g)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(line)
			b.WriteByte('\n')
		}
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("recorded %d kernel ciphertexts in %s", len(got), p)
		return
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (record it with -compat.record)", err)
	}
	want := map[string]goldenCase{}
	for _, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		var g goldenCase
		if err := json.Unmarshal(line, &g); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		want[g.Seed] = g
	}
	for _, g := range got {
		if w, ok := want[g.Seed]; !ok {
			t.Errorf("%s: not in %s (record it with -compat.record)", g.Seed, p)
		} else if w != g {
			t.Errorf("%s: the kernel wrote other bytes than %s records:\n got %+v\nwant %+v", g.Seed, p, g, w)
		}
	}
}

func goldenOf(c compatCase, key, kernelCipher []byte) goldenCase {
	d := sha256.Sum256(kernelCipher)
	return goldenCase{
		Spec: c.spec, Key: hex.EncodeToString(key), SectorSize: c.sectorSize,
		IVLargeSectors: c.large, IVOffset: c.ivOffset, Bytes: len(kernelCipher),
		Seed: c.String(), CipherSHA256: hex.EncodeToString(d[:]), Head: hex.EncodeToString(kernelCipher[:64]),
	}
}
