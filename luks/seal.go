package luks

import (
	"encoding/base64"
	"fmt"
	"hash"

	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// kdfObj is a KDF's JSON object with a place for its salt.
type kdfObj struct {
	v       any
	setSalt func([]byte)
}

// kdfJSON checks a KDF's costs against what cryptsetup accepts and builds
// its JSON object.
func kdfJSON(k KDF) (kdfObj, error) {
	switch k.Type {
	case "pbkdf2":
		if _, err := hashFunc(k.Hash, "keyslot PBKDF2"); err != nil {
			return kdfObj{}, err
		}
		if k.Iterations < 1000 || k.Iterations > 1<<32-1 {
			return kdfObj{}, fmt.Errorf("%w: PBKDF2 iterations %d outside cryptsetup's range (1000 to 2^32-1)", errclass.Usage, k.Iterations)
		}
		o := &jsonPBKDF2{Type: k.Type, Hash: k.Hash, Iterations: k.Iterations}
		return kdfObj{o, func(s []byte) { o.Salt = base64.StdEncoding.EncodeToString(s) }}, nil
	case "argon2i", "argon2id":
		if k.Time < 4 || k.Time > 1<<32-1 || k.Memory < 32 || k.Memory > maxArgon2Memory || k.CPUs < 1 || k.CPUs > 255 {
			return kdfObj{}, fmt.Errorf("%w: %s costs time %d, memory %d KiB, cpus %d outside the range (time >= 4, 32 KiB to 4 GiB as cryptsetup; 1 to 255 cpus)", errclass.Usage, k.Type, k.Time, k.Memory, k.CPUs)
		}
		o := &jsonArgon2{Type: k.Type, Time: k.Time, Memory: k.Memory, CPUs: k.CPUs}
		return kdfObj{o, func(s []byte) { o.Salt = base64.StdEncoding.EncodeToString(s) }}, nil
	}
	return kdfObj{}, fmt.Errorf("%w: KDF %q (supported: pbkdf2, argon2i, argon2id)", errclass.Usage, k.Type)
}

// sealMaterial derives the keyslot key from pass, AF-splits key into
// 4000 stripes and encrypts them with the keyslot cipher in 512-byte
// sectors from IV 0: what openMaterial undoes.
func sealMaterial(key, pass []byte, k KDF, spec sectorcipher.Spec, kdfLen int, afh func() hash.Hash, where string) (*Key, error) {
	if kdfLen < 1 || kdfLen > maxKeyBytes {
		return nil, fmt.Errorf("%w: %s: keyslot cipher key of %d bytes", errclass.Usage, where, kdfLen)
	}
	dk, err := newKey(kdfLen)
	if err != nil {
		return nil, fmt.Errorf("luks: allocate key memory: %w", err)
	}
	defer dk.Wipe()
	if err := derive(k, pass, dk.Bytes(), where); err != nil {
		return nil, err
	}
	c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: dk.Bytes(), SectorSize: sectorSize})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errclass.Usage, where, err)
	}
	mat, err := newKey(int(afSectors(uint64(len(key))) * sectorSize))
	if err != nil {
		return nil, fmt.Errorf("luks: allocate key memory: %w", err)
	}
	if err := afSplit(key, mat.Bytes(), stripes, afh); err != nil {
		mat.Wipe()
		return nil, err
	}
	c.Encrypt(mat.Bytes(), 0)
	return mat, nil
}
