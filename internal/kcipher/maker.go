package kcipher

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

// Maker builds the ciphers of a run (engine.Options.Ciphers): the
// userspace one where sectorcipher has the spec, unless All asks for the
// kernel's throughout, and the kernel's otherwise. It tells Logf once per
// spec that the kernel runs it (silence means userspace). Close removes the kernel devices it made.
type Maker struct {
	All  bool
	Logf func(format string, args ...any)

	mu   sync.Mutex
	made []*Cipher
	said map[string]bool
	kern bool
}

// Make implements engine.CipherMaker.
func (k *Maker) Make(m sectorcipher.Mapping, sectors uint64) (sectorcipher.Cipher, error) {
	if m.Spec.IsNone() || (!k.All && m.Spec.Userspace()) {
		// Userspace is what every run did before the kernel could: only
		// the kernel's engine is announced.
		return sectorcipher.New(m)
	}
	c, err := New(m, sectors)
	if err != nil {
		if !k.All {
			return nil, fmt.Errorf("%s has no userspace cipher (--crypto auto gives it to the kernel), and the kernel's did not load: %w", m.Spec, err)
		}
		return nil, fmt.Errorf("--crypto kernel: %w", err)
	}
	k.mu.Lock()
	k.made = append(k.made, c)
	k.kern = true
	k.mu.Unlock()
	why := "--crypto kernel"
	if m.Spec.KernelOnly() {
		why = "no userspace cipher for it"
	}
	k.say(m.Spec.String(), "the kernel's dm-crypt ("+why+")")
	return c, nil
}

func (k *Maker) say(spec, engine string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := spec + "\x00" + engine
	if k.said[key] || k.Logf == nil {
		return
	}
	if k.said == nil {
		k.said = map[string]bool{}
	}
	k.said[key] = true
	k.Logf("cryptshift: crypto: %s runs in %s", spec, engine)
}

// Kernel reports whether any cipher Make built is the kernel's.
func (k *Maker) Kernel() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kern
}

// Close removes every kernel device Make built.
func (k *Maker) Close() error {
	k.mu.Lock()
	made := k.made
	k.made = nil
	k.mu.Unlock()
	var errs []error
	for _, c := range made {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}
