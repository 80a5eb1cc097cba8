package online

import (
	"errors"
	"fmt"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/internal/loopdev"
)

// sealer shows the new mapping's ciphertext of a window's plaintext without
// writing the backing device (engine.Sealer, for --resilience checksum): a
// third private dm-crypt device with the new device's table, except that
// it sits at offset 0 on a loop device over sparse memory instead of on the
// backing device. A sector written through it at data-area sector s gets
// the IV the new device gives s, so the memory then holds exactly what the
// new device will store there. Only one window's memory is in use at a time.
type sealer struct {
	name string
	mem  *loopdev.Memory
	f    *blockdev.File
}

// sealName is the sealing device's name for the served device name.
func sealName(name string) string {
	return cryptoPrefix(name) + "-crypt-seal"
}

// sealTable is the new device's table over the scratch device.
func (l *layout) sealTable(scratch string) []dm.Target {
	return []dm.Target{dm.MappingTarget(l.new, scratch, 0, 0, l.size, l.extra)}
}

// Seal implements engine.Sealer's Seal for the holder's private devices.
func (h *holder) Seal(buf []byte, start int64) error {
	if h.kc == nil {
		return fmt.Errorf("online: seal before the kernel crypto devices were opened")
	}
	return h.kc.Seal(buf, start)
}

// Seal encrypts buf in place as the new device stores it at data-area
// byte start. The sealing device is made on first use.
func (k *KernelCrypto) Seal(buf []byte, start int64) error {
	if k.seal == nil {
		s, err := k.newSealer()
		if err != nil {
			return err
		}
		k.seal = s
	}
	s := k.seal
	if _, err := s.f.WriteAt(buf, start); err != nil {
		return fmt.Errorf("online: seal through %s: %w", s.name, err)
	}
	// The write returned: the loop device has stored it in the memfd.
	if _, err := s.mem.ReadAt(buf, start); err != nil {
		return fmt.Errorf("online: read sealed window: %w", err)
	}
	return s.mem.Discard(start, int64(len(buf)))
}

func (k *KernelCrypto) newSealer() (*sealer, error) {
	o := k.o
	s := &sealer{name: sealName(o.name)}
	if err := o.clearStale([]string{s.name}); err != nil {
		return nil, err
	}
	mem, err := loopdev.NewMemory(s.name, int64(o.l.size*512))
	if err != nil {
		return nil, fmt.Errorf("online: kernel crypto: scratch device for checksum records: %w", err)
	}
	s.mem = mem
	if err := o.ctl.create(s.name, "", o.l.sealTable(mem.Devno)); err != nil {
		k.closeSealer(s)
		return nil, fmt.Errorf("online: kernel crypto: %w", err)
	}
	path, err := dm.DevicePath(s.name)
	if err == nil {
		s.f, err = blockdev.Open(path, blockdev.Options{Direct: true, Exclusive: true})
	}
	if err != nil {
		k.closeSealer(s)
		return nil, fmt.Errorf("online: kernel crypto: open %s: %w", s.name, err)
	}
	return s, nil
}

// closeSealer removes the sealing device, then lets its loop device go.
func (k *KernelCrypto) closeSealer(s *sealer) error {
	var errs []error
	if s.f != nil {
		errs = append(errs, s.f.Close())
	}
	if inf, err := k.o.ctl.info(s.name); err != nil {
		errs = append(errs, err)
	} else if inf.Exists {
		errs = append(errs, k.o.ctl.remove(s.name))
	}
	if s.mem != nil {
		errs = append(errs, s.mem.Close())
	}
	return errors.Join(errs...)
}
