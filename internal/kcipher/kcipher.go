// Package kcipher runs a dm-crypt mapping's sector transform in the kernel,
// as a sectorcipher.Cipher: for the specs cryptshift has no userspace cipher
// for (serpent, camellia, Adiantum, essiv on XTS, benbi, lmk, tcw, capi:
// specs, ...), and for --crypto kernel. A private dm-crypt device with the
// mapping sits on a loop device over sparse memory (internal/loopdev) that
// spans the data area: sector s of the device gets the IV a table of the
// same mapping gives sector s of the data area, so
//
//   - Encrypt writes plaintext through the device at s and reads the
//     memory: what the mapping stores there;
//   - Decrypt writes ciphertext into the memory at s and reads through the
//     device: what the mapping serves there.
//
// Only the memory of calls in flight is in use; nothing touches a disk.
package kcipher

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/internal/loopdev"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// Prefix starts the names of this package's devices.
const Prefix = dm.PrivatePrefix + "kc-"

// Cipher is a mapping's transform done by the kernel. It is safe for
// concurrent use on disjoint sector ranges, as sectorcipher.Cipher asks;
// calls on overlapping ranges wait for each other.
type Cipher struct {
	name string
	size int
	mem  *loopdev.Memory
	dev  *blockdev.File

	mu   sync.Mutex
	cond *sync.Cond
	busy map[[2]uint64]bool // sector ranges in flight
	err  error              // the first failure; sticky
}

// New loads m as a private dm-crypt table over sparse memory covering
// sectors 512-byte sectors (rounded up to m's sector size). When the kernel
// refuses the table, the error carries the kernel's reason.
func New(m sectorcipher.Mapping, sectors uint64) (*Cipher, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	step := uint64(m.SectorSize / 512)
	sectors = (max(sectors, 1) + step - 1) / step * step
	var id [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("kcipher: device name: %w", err)
	}
	c := &Cipher{name: Prefix + hex.EncodeToString(id[:]), size: m.SectorSize, busy: map[[2]uint64]bool{}}
	c.cond = sync.NewCond(&c.mu)
	mem, err := loopdev.NewMemory(c.name, int64(sectors*512))
	if err != nil {
		return nil, fmt.Errorf("kcipher: %w", err)
	}
	c.mem = mem
	log := openKmsg()
	defer log.close()
	if err := dm.Create(c.name, "", []dm.Target{dm.MappingTarget(m, mem.Devno, 0, 0, sectors, nil)}); err != nil {
		mem.Close()
		if why := log.reason(); why != "" {
			return nil, fmt.Errorf("the kernel's dm-crypt did not load %s: %s (%w)", m.Spec, why, err)
		}
		return nil, fmt.Errorf("the kernel's dm-crypt did not load %s: %w", m.Spec, err)
	}
	path, err := dm.DevicePath(c.name)
	if err == nil {
		c.dev, err = blockdev.Open(path, blockdev.Options{Direct: true, Exclusive: true})
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("kcipher: open %s: %w", c.name, err)
	}
	return c, nil
}

// Check reports whether the running kernel's dm-crypt loads m, with its
// reason when it does not.
func Check(m sectorcipher.Mapping) error {
	c, err := New(m, uint64(m.SectorSize/512))
	if err != nil {
		return err
	}
	return c.Close()
}

func (c *Cipher) SectorSize() int { return c.size }

// Err is the first failure of any call. Encrypt and Decrypt cannot return
// one (sectorcipher.Cipher), so a caller checks Err before it uses their
// output: after a failure the buffer holds nothing meaningful.
func (c *Cipher) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Cipher) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

// claim waits until no call overlaps [lo, hi), then marks it busy.
func (c *Cipher) claim(lo, hi uint64) [2]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		free := true
		for r := range c.busy {
			if r[0] < hi && lo < r[1] {
				free = false
				break
			}
		}
		if free {
			break
		}
		c.cond.Wait()
	}
	r := [2]uint64{lo, hi}
	c.busy[r] = true
	return r
}

func (c *Cipher) release(r [2]uint64) {
	c.mu.Lock()
	delete(c.busy, r)
	c.mu.Unlock()
	c.cond.Broadcast()
}

func (c *Cipher) check(buf []byte, sector512 uint64) {
	if len(buf)%c.size != 0 || sector512%uint64(c.size/512) != 0 {
		panic(fmt.Sprintf("kcipher: [%d, +%d) is not whole %d-byte sectors", sector512, len(buf), c.size))
	}
}

// Encrypt replaces plaintext buf with what the mapping stores for it at
// sector512.
func (c *Cipher) Encrypt(buf []byte, sector512 uint64) {
	c.run(buf, sector512, true)
}

// Decrypt replaces ciphertext buf with what the mapping serves for it at
// sector512.
func (c *Cipher) Decrypt(buf []byte, sector512 uint64) {
	c.run(buf, sector512, false)
}

func (c *Cipher) run(buf []byte, sector512 uint64, encrypt bool) {
	c.check(buf, sector512)
	if len(buf) == 0 {
		return
	}
	off := int64(sector512) * 512
	r := c.claim(sector512, sector512+uint64(len(buf))/512)
	defer c.release(r)
	// O_DIRECT needs an aligned buffer; the caller's need not be.
	bounce := blockdev.AlignedBuffer(len(buf))
	var err error
	if encrypt {
		copy(bounce, buf)
		if _, err = c.dev.WriteAt(bounce, off); err == nil {
			// The write returned: the loop device stored it in memory.
			_, err = c.mem.ReadAt(buf, off)
		}
	} else {
		if _, err = c.mem.WriteAt(buf, off); err == nil {
			if _, err = c.dev.ReadAt(bounce, off); err == nil {
				copy(buf, bounce)
			}
		}
	}
	clear(bounce) // plaintext, either way
	if err == nil {
		err = c.mem.Discard(off, int64(len(buf)))
	}
	if err != nil {
		c.fail(fmt.Errorf("kcipher: %s: %w", c.name, err))
	}
}

// Close removes the device and frees its memory.
func (c *Cipher) Close() error {
	var errs []error
	if c.dev != nil {
		errs = append(errs, c.dev.Close())
		c.dev = nil
	}
	if inf, err := dm.Info(c.name); err != nil {
		errs = append(errs, err)
	} else if inf.Exists {
		errs = append(errs, dm.Remove(c.name))
	}
	if c.mem != nil {
		errs = append(errs, c.mem.Close())
		c.mem = nil
	}
	return errors.Join(errs...)
}
