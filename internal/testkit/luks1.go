package testkit

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/luks"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// MakeLUKS1 formats dir/luks1.img, a LUKS1 volume of size bytes made by
// stock cryptsetup (luksFormat --type luks1 with the format options), with
// passes keyslots of cheap PBKDF2 (passphrases "pass N"), and fills the
// first fill bytes of its data area (all of it when fill is 0) with seeded
// plaintext encrypted as cryptsetup maps it; the rest stays zeros on disk.
// Plain holds what was filled.
func MakeLUKS1(dir string, size int64, format []string, passes int, fill int64, seed uint64) (*LUKSImage, error) {
	im := &LUKSImage{Path: filepath.Join(dir, "luks1.img")}
	if err := os.WriteFile(im.Path, nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.Truncate(im.Path, size); err != nil {
		return nil, err
	}
	for i := range passes {
		p := filepath.Join(dir, fmt.Sprintf("pass%d", i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("pass %d", i)), 0o600); err != nil {
			return nil, err
		}
		im.Passes = append(im.Passes, p)
	}
	args := append(append([]string{"luksFormat", "--type", "luks1", "--batch-mode"}, CheapPBKDF2[2:]...), format...)
	if out, err := Cryptsetup(append(args, im.Path, im.Passes[0])...); err != nil {
		return nil, fmt.Errorf("luksFormat: %v\n%s", err, out)
	}
	for i := 1; i < passes; i++ {
		args := append([]string{"luksAddKey", "--batch-mode", "--key-file", im.Passes[0]}, CheapPBKDF2[2:]...)
		if out, err := Cryptsetup(append(args, im.Path, im.Passes[i])...); err != nil {
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
	if fill == 0 {
		fill = m.Size
	}
	im.VK, im.DataOffset = bytes.Clone(u.Key.Bytes()), m.Offset
	im.Plain = Pattern(int(fill), seed)
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
