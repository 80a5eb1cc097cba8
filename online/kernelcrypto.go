package online

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/dm"
)

// KernelCrypto is an online conversion's data path through the kernel's
// crypto (engine.CryptoDevices): two private devices over the backing
// device, one serving the whole data area with the old mapping, one with
// the new mapping at the new offset. The engine reads a held window's
// plaintext from the first and writes it to the second, so dm-crypt does
// the decryption and encryption, on every CPU, and the bytes never pass
// through userspace ciphers. Nothing routes application I/O to them.
type KernelCrypto struct {
	o     *Online
	names [2]string
	files [2]*blockdev.File
	seal  *sealer // checksum mode's, made on first Seal (kernelseal.go)
}

// cryptoNames are the private devices' names for the served device name.
func cryptoNames(name string) [2]string {
	p := cryptoPrefix(name)
	return [2]string{p + "-crypt-old", p + "-crypt-new"}
}

// cryptoPrefix is what the private crypto devices' names of the served
// device name start with.
func cryptoPrefix(name string) string {
	id := sha256.Sum256([]byte(name))
	return holdPrefix + hex.EncodeToString(id[:4])
}

// cryptoTables are the private devices' tables: the data area from sector
// 0, with each mapping at its own offset, exactly as a single-target table
// of that mapping would serve it.
func (l *layout) cryptoTables() [2][]dm.Target {
	return [2][]dm.Target{
		{dm.MappingTarget(l.old, l.dev, l.oldOff, 0, l.size, l.extra)},
		{dm.MappingTarget(l.new, l.dev, l.newOff, 0, l.size, l.extra)},
	}
}

// KernelCrypto creates the private devices (removing any an earlier run
// left) and opens them with O_DIRECT and O_EXCL: no page cache can hold a
// stale copy of a window, and nobody else can open them meanwhile.
func (o *Online) KernelCrypto() (*KernelCrypto, error) {
	k := &KernelCrypto{o: o, names: cryptoNames(o.name)}
	if err := o.clearStale(append(k.names[:], sealName(o.name))); err != nil {
		return nil, err
	}
	tables := o.l.cryptoTables()
	for i, n := range k.names {
		if err := o.ctl.create(n, "", tables[i]); err != nil {
			k.Close()
			return nil, fmt.Errorf("online: kernel crypto: %w", err)
		}
		path, err := dm.DevicePath(n)
		if err != nil {
			k.Close()
			return nil, fmt.Errorf("online: kernel crypto: %w", err)
		}
		f, err := blockdev.Open(path, blockdev.Options{Direct: true, Exclusive: true, ReadOnly: i == 0})
		if err != nil {
			k.Close()
			return nil, fmt.Errorf("online: kernel crypto: open %s: %w", n, err)
		}
		if f.Size() != int64(o.l.size*512) {
			f.Close()
			k.Close()
			return nil, fmt.Errorf("online: kernel crypto: %s is %d bytes, the data area %d", n, f.Size(), o.l.size*512)
		}
		k.files[i] = f
	}
	return k, nil
}

// Names are the private devices' device-mapper names, old then new.
func (k *KernelCrypto) Names() [2]string { return k.names }

// Devices returns the old (read) and new (write) devices.
func (k *KernelCrypto) Devices() (old, new blockdev.Device) { return k.files[0], k.files[1] }

// Close closes and removes the private devices. The data written through
// the new one was flushed by the engine before each commit; Close adds
// nothing to durability.
func (k *KernelCrypto) Close() error {
	var errs []error
	if k.seal != nil {
		errs = append(errs, k.closeSealer(k.seal))
		k.seal = nil
	}
	for i, f := range k.files {
		if f != nil {
			errs = append(errs, f.Close())
			k.files[i] = nil
		}
	}
	for _, n := range k.names {
		inf, err := k.o.ctl.info(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if inf.Exists {
			errs = append(errs, k.o.ctl.remove(n))
		}
	}
	return errors.Join(errs...)
}
