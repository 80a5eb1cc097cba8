package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
)

// openTarget opens DEVICE and, when metaPath is set, the separate metadata
// file or device. createMeta > 0 creates a missing metadata file of that
// size (convert only: anywhere else a missing file means a wrong path, and
// an empty new file would only hide that). The returned cleanup closes what
// was opened; removeCreated also deletes a metadata file this call created,
// for when the conversion never wrote a header into it.
func openTarget(devPath, metaPath string, createMeta int64, o blockdev.Options) (t engine.Target, cleanup func(removeCreated bool), err error) {
	// Before anything is opened: the exclusive lock on DEVICE would make
	// the second open fail with a lock error that hides the real mistake.
	if metaPath != "" && sameFile(devPath, metaPath) {
		return t, nil, usageErr("--metadata %s is DEVICE itself; leave --metadata out to keep the metadata at the end of DEVICE", metaPath)
	}
	data, err := openDevice(devPath, o)
	if err != nil {
		return t, nil, err
	}
	if metaPath == "" {
		return engine.Target{Data: data, Meta: data, MetaOnData: true}, func(bool) { data.Close() }, nil
	}
	created := false
	if createMeta > 0 {
		if created, err = createMetaFile(metaPath, createMeta); err != nil {
			data.Close()
			return t, nil, err
		}
	}
	meta, err := openDevice(metaPath, o)
	if err != nil {
		data.Close()
		if created {
			os.Remove(metaPath)
		}
		return t, nil, err
	}
	cleanup = func(removeCreated bool) {
		meta.Close()
		data.Close()
		if created && removeCreated {
			os.Remove(metaPath)
		}
	}
	return engine.Target{Data: data, Meta: meta}, cleanup, nil
}

// openDevice opens an image file or block device with O_DIRECT: it keeps
// the page cache from holding stale copies of what the conversion rewrites,
// and spares copying every byte through it. An image file on a filesystem
// without O_DIRECT (tmpfs), or whose size is not a multiple of the direct
// I/O alignment, is opened buffered instead; fdatasync makes it just as
// durable.
func openDevice(path string, o blockdev.Options) (*blockdev.File, error) {
	isBlock := false
	if st, err := os.Stat(path); err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0 {
		isBlock = true
	}
	o.Direct = true
	f, err := blockdev.Open(path, o)
	if err != nil && !isBlock && !errors.Is(err, blockdev.ErrInUse) && !errors.Is(err, blockdev.ErrNotFound) &&
		!errors.Is(err, blockdev.ErrPermission) && !errors.Is(err, blockdev.ErrNotBlockOrFile) {
		o.Direct = false
		f, err = blockdev.Open(path, o)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errclass.Device, err)
	}
	return f, nil
}

func createMetaFile(path string, size int64) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: create metadata file: %w", errclass.Device, err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		os.Remove(path)
		return false, fmt.Errorf("%w: size metadata file %s: %w", errclass.Device, path, err)
	}
	return true, nil
}

func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// hasHeader reports whether the metadata holds a cryptshift header (valid
// or not), so that a failed first attempt can clean up after itself.
func hasHeader(meta blockdev.Device) bool {
	s, err := header.ReadStore(meta)
	if err != nil {
		return true // cannot tell: keep it
	}
	_, err = s.Current(nil)
	return !errors.Is(err, header.ErrNoHeader)
}
