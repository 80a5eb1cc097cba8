package testkit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// LUKSImage is a LUKS2 image file made by stock cryptsetup, its data area
// filled with known plaintext under the volume key.
type LUKSImage struct {
	Path       string
	Passes     []string // passphrase files, one per keyslot, keyslot order
	VK         []byte   // the volume key
	DataOffset int64
	Plain      []byte // the data area's plaintext
}

// Cryptsetup runs stock cryptsetup and returns its output (stdout and
// stderr together) and error.
func Cryptsetup(args ...string) (string, error) {
	p, err := exec.LookPath("cryptsetup")
	if err != nil {
		return "", fmt.Errorf("stock cryptsetup is needed (install cryptsetup-bin): %w", err)
	}
	var out bytes.Buffer
	cmd := exec.Command(p, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

// CheapPBKDF2 are the luksFormat/luksAddKey options of a cheap pbkdf2
// keyslot; CheapArgon2id of a cheap argon2id one.
var (
	CheapPBKDF2   = []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
	CheapArgon2id = []string{"--pbkdf", "argon2id", "--pbkdf-force-iterations", "4", "--pbkdf-memory", "32", "--pbkdf-parallel", "1"}
)

// MakeLUKS2 formats dir/luks.img (keyslotsSize bytes of keyslots, 16 KiB
// metadata, dataSize bytes of data) with one keyslot per KDF option set
// in kdfs, passphrases "pass N", and fills the data area with seeded
// plaintext encrypted as cryptsetup maps it.
func MakeLUKS2(dir string, keyslotsSize, dataSize int64, format []string, kdfs [][]string, seed uint64) (*LUKSImage, error) {
	im := &LUKSImage{Path: filepath.Join(dir, "luks.img"), DataOffset: 2*16384 + keyslotsSize}
	if err := os.WriteFile(im.Path, nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.Truncate(im.Path, im.DataOffset+dataSize); err != nil {
		return nil, err
	}
	for i := range kdfs {
		p := filepath.Join(dir, fmt.Sprintf("pass%d", i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("pass %d", i)), 0o600); err != nil {
			return nil, err
		}
		im.Passes = append(im.Passes, p)
	}
	args := append([]string{"luksFormat", "--batch-mode", "--type", "luks2", "--luks2-metadata-size", "16k",
		"--luks2-keyslots-size", fmt.Sprint(keyslotsSize), "--offset", fmt.Sprint(im.DataOffset / 512)}, format...)
	args = append(append(args, kdfs[0]...), im.Path, im.Passes[0])
	if out, err := Cryptsetup(args...); err != nil {
		return nil, fmt.Errorf("luksFormat: %v\n%s", err, out)
	}
	for i := 1; i < len(kdfs); i++ {
		args := append(append([]string{"luksAddKey", "--batch-mode", "--key-file", im.Passes[0]}, kdfs[i]...), im.Path, im.Passes[i])
		if out, err := Cryptsetup(args...); err != nil {
			return nil, fmt.Errorf("luksAddKey: %v\n%s", err, out)
		}
	}
	f, err := blockdev.Open(im.Path, blockdev.Options{})
	if err != nil {
		return nil, err
	}
	defer f.Close()
	v, err := luks.Open(f, f.Size())
	if err != nil {
		return nil, err
	}
	pass, _ := os.ReadFile(im.Passes[0])
	u, err := v.Unlock(pass, luks.AnySlot)
	if err != nil {
		return nil, err
	}
	defer u.Wipe()
	m, err := v.Mapping(u)
	if err != nil {
		return nil, err
	}
	im.VK = bytes.Clone(u.Key.Bytes())
	im.Plain = Pattern(int(m.Size), seed)
	c, err := sectorcipher.New(m.Mapping)
	if err != nil {
		return nil, err
	}
	ct := bytes.Clone(im.Plain)
	c.Encrypt(ct, 0)
	if _, err := f.WriteAt(ct, m.Offset); err != nil {
		return nil, err
	}
	return im, f.Flush()
}

// Pattern is n bytes of seeded, compressible-looking text: sectors that
// decrypt to it are plainly not noise.
func Pattern(n int, seed uint64) []byte {
	var b strings.Builder
	for i := uint64(0); b.Len() < n; i++ {
		fmt.Fprintf(&b, "block %d of seed %d; ", i, seed)
	}
	return []byte(b.String()[:n])
}

// LUKSData decrypts the data area of the LUKS2 image b with what its
// header says and a passphrase opens, and returns the plaintext and the
// volume key.
func LUKSData(b []byte, pass []byte) (plain, vk []byte, err error) {
	dev := blockdev.MemFrom(b)
	v, err := luks.Open(dev, dev.Size())
	if err != nil {
		return nil, nil, err
	}
	u, err := v.Unlock(pass, luks.AnySlot)
	if err != nil {
		return nil, nil, err
	}
	defer u.Wipe()
	m, err := v.Mapping(u)
	if err != nil {
		return nil, nil, err
	}
	c, err := sectorcipher.New(m.Mapping)
	if err != nil {
		return nil, nil, err
	}
	plain = bytes.Clone(b[m.Offset : m.Offset+m.Size])
	c.Decrypt(plain, 0)
	return plain, bytes.Clone(u.Key.Bytes()), nil
}
