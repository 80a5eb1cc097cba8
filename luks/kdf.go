package luks

import (
	"fmt"
	"math"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/pbkdf2"

	"github.com/cryptshift/cryptshift/errclass"
)

// maxArgon2Memory is cryptsetup's ceiling for argon2 memory (4 GiB, in
// KiB): a header asking for more is not one cryptsetup made.
const maxArgon2Memory = 4 * 1024 * 1024

// derive runs a keyslot's KDF over the passphrase into out (secret memory).
// The KDF libraries return their result on the Go heap; it is copied out
// and wiped at once.
func derive(k KDF, pass, out []byte, where string) error {
	var tmp []byte
	switch k.Type {
	case "pbkdf2":
		h, err := hashFunc(k.Hash, where+" PBKDF2")
		if err != nil {
			return err
		}
		if k.Iterations < 1 || k.Iterations > math.MaxUint32 {
			return fmt.Errorf("%w: %s: PBKDF2 iterations %d out of range", errclass.Header, where, k.Iterations)
		}
		tmp = pbkdf2.Key(pass, k.Salt, int(k.Iterations), len(out), h)
	case "argon2i", "argon2id":
		// cryptsetup runs Argon2 version 0x13 with lanes = threads = cpus
		// and no secret or associated data, as golang.org/x/crypto does.
		switch {
		case k.Time < 1 || k.Time > math.MaxUint32:
			return fmt.Errorf("%w: %s: argon2 time cost %d out of range", errclass.Header, where, k.Time)
		case k.Memory < 1 || k.Memory > maxArgon2Memory:
			return fmt.Errorf("%w: %s: argon2 memory %d KiB out of range (at most %d)", errclass.Header, where, k.Memory, maxArgon2Memory)
		case k.CPUs < 1 || k.CPUs > math.MaxUint8:
			return fmt.Errorf("%w: %s: argon2 cpus %d out of range", errclass.Header, where, k.CPUs)
		}
		if k.Type == "argon2i" {
			tmp = argon2.Key(pass, k.Salt, uint32(k.Time), uint32(k.Memory), uint8(k.CPUs), uint32(len(out)))
		} else {
			tmp = argon2.IDKey(pass, k.Salt, uint32(k.Time), uint32(k.Memory), uint8(k.CPUs), uint32(len(out)))
		}
	default:
		return fmt.Errorf("%w: %s: KDF %q is not supported (supported: pbkdf2, argon2i, argon2id)", errclass.Device, where, k.Type)
	}
	copy(out, tmp)
	wipe(tmp)
	return nil
}
