package online

import (
	"fmt"
	"os"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
)

// Request names the devices of an online conversion, as `convert
// --online` (and `recover --activate`) takes them. The same request drives
// the command line and the real-kernel test guests, so both run this
// package's sequence.
type Request struct {
	// Name is the device-mapper device that serves the data (the one the
	// filesystem is on). For a new conversion its live table gives the old
	// mapping, key, data offset and size.
	Name string
	// Device is the backing device the data lives on, a path.
	Device string
	// Metadata is the separate metadata file or device; "" keeps the
	// metadata at the end of Device.
	Metadata string
	// NewLike, when set, is a device-mapper device over Device whose live
	// table gives the new mapping; Convert removes it at the end, since it
	// serves the same data as Name then does.
	NewLike string
	// TableOptions are format-neutral dm-crypt options (allow_discards,
	// same_cpu_crypt, submit_from_crypt_cpus, no_read_workqueue,
	// no_write_workqueue, high_priority) for the tables of an activation
	// that cannot read them from a live table: after a reboot Name is
	// gone, and the header does not record them. A live Name's own options
	// win; a conversion always takes them from Name's live table.
	TableOptions []string
	// KernelCrypto moves the data through private dm-crypt devices
	// (KernelCrypto) instead of the userspace ciphers.
	KernelCrypto bool
	// AutoKernelCrypto does so only when a side's spec has no userspace
	// cipher (--crypto auto); the ciphers themselves come from the
	// engine options' Ciphers.
	AutoKernelCrypto bool
	// Open opens Device and Metadata with o (the caller decides how
	// metadata files are found and created; create is true only for a
	// conversion, which may create a missing metadata file). cleanup
	// closes them; failed says that the conversion ended with an error
	// other than a pause, so a metadata file the call created and nothing
	// wrote a header to may go. nil opens both with blockdev.Open, always
	// with O_DIRECT (as the command line does), creating nothing.
	Open func(o blockdev.Options, create bool) (t engine.Target, cleanup func(failed bool), err error)
	// Logf receives what the operator must be told (aborts, warnings). nil
	// writes to stderr.
	Logf func(format string, args ...any)
	// Hooks, when set, see each window the holder holds.
	Hooks Hooks
	// dmUUID, when set, is the device-mapper UUID an activation gives
	// Name (a LUKS2 volume's, as cryptsetup names it).
	dmUUID string
}

// Hooks let a program watch the windows an online conversion holds: the
// real-kernel guests measure how long application I/O to a held window
// waits, and the CLI's testhooks build dies while one is held. Each runs on
// the converting goroutine, right after the device-mapper step it names.
type Hooks struct {
	Held     func(w uint64, start, length int64)
	Released func(w uint64, start, length int64, err error)
	Aborted  func(w uint64, start, length int64)
}

func (r Request) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
		return
	}
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (r Request) open(o blockdev.Options, create bool) (engine.Target, func(bool), error) {
	if r.Open != nil {
		return r.Open(o, create)
	}
	o.Direct = true
	data, err := blockdev.Open(r.Device, o)
	if err != nil {
		return engine.Target{}, nil, fmt.Errorf("%w: %w", errclass.Device, err)
	}
	if r.Metadata == "" {
		return engine.Target{Data: data, Meta: data, MetaOnData: true}, func(bool) { data.Close() }, nil
	}
	meta, err := blockdev.Open(r.Metadata, o)
	if err != nil {
		data.Close()
		return engine.Target{}, nil, fmt.Errorf("%w: %w", errclass.Device, err)
	}
	return engine.Target{Data: data, Meta: meta}, func(bool) { meta.Close(); data.Close() }, nil
}

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errclass.Usage, fmt.Sprintf(format, a...))
}

func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}
