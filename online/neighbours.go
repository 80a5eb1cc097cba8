package online

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/errclass"
)

// errInterfered marks a change to Name or its backing device that
// cryptshift did not make: a neighbour's `dmsetup reload` or `suspend`,
// `cryptsetup close`, or a grown device. The holder stops before its next
// table change and touches Name no more (not even to resume it).
var errInterfered = errors.New("changed by someone else")

// interfered builds the error the operator sees: what changed, and that
// nothing is lost.
func (o *Online) interfered(what string) error {
	return fmt.Errorf("%w: online: %s %w: %s; cryptshift stopped before its next table change and nothing is lost; "+
		"once it is put back, run `cryptshift recover --activate %s` (or the same command) to continue",
		errclass.Device, o.name, errInterfered, what, o.name)
}

// remember records Name's live table and the backing device's size as
// cryptshift leaves them, for checkNeighbours. The table is read back
// rather than taken from what was loaded, since the kernel may print a
// target's parameters differently from how they were given.
func (o *Online) remember() error {
	live, err := o.ctl.table(o.name)
	if err == nil {
		o.last = append([]dm.Target(nil), live...)
		o.devSize, err = o.ctl.devSize(o.l.dev)
	}
	o.unknown = nil
	if err != nil {
		// The next checkNeighbours cannot compare: it stops there.
		o.unknown = fmt.Errorf("online: read back %s after a table change: %w", o.name, err)
	}
	return o.unknown
}

// checkNeighbours compares Name and its backing device with what
// cryptshift last left them as; called with mu before every change to
// Name's table. Nothing a neighbour did is repaired here: a table loaded
// over theirs, or a resume of a device they suspended, would undo their
// intent without knowing it, and a device that grew moves the end where
// the metadata is found.
func (o *Online) checkNeighbours() error {
	if o.unknown != nil {
		return o.unknown
	}
	return o.neighbourChange(false)
}

// explainFailure is called when an ioctl on Name failed in Hold: a
// neighbour's change between checkNeighbours and that ioctl (a suspend that
// completed once the previous window's flush went through, say) makes the
// kernel refuse ours, with EINVAL for a second suspend. If so, that is the
// error, and it is an interference (Abort leaves Name alone). loaded says
// Name's inactive table is cryptshift's own.
func (o *Online) explainFailure(err error, loaded bool) error {
	if why := o.neighbourChange(loaded); why != nil {
		return fmt.Errorf("%w (%v)", why, err)
	}
	return err
}

func (o *Online) neighbourChange(loaded bool) error {
	inf, err := o.ctl.info(o.name)
	if err != nil {
		return fmt.Errorf("online: %w", err)
	}
	switch {
	case !inf.Exists:
		return o.interfered("was removed (cryptsetup close or dmsetup remove?)")
	case inf.Suspended:
		return o.interfered("is suspended (dmsetup suspend?)")
	case inf.Inactive && !loaded:
		return o.interfered("has an inactive table cryptshift did not load (dmsetup reload?)")
	}
	live, err := o.ctl.table(o.name)
	if err != nil {
		return fmt.Errorf("online: %w", err)
	}
	if why := tableChange(o.last, live); why != "" {
		return o.interfered("has a live table cryptshift did not load (" + why + ")")
	}
	size, err := o.ctl.devSize(o.l.dev)
	if err != nil {
		return fmt.Errorf("online: %w", err)
	}
	if size != o.devSize {
		return o.interfered(fmt.Sprintf("is served from %s, which now has %d sectors instead of %d (grown or shrunk)", o.l.dev, size, o.devSize))
	}
	return nil
}

// tableChange names the first difference between two tables, without
// printing parameters (they hold keys), or returns "".
func tableChange(was, now []dm.Target) string {
	if len(was) != len(now) {
		return fmt.Sprintf("%d targets instead of %d", len(now), len(was))
	}
	for i := range was {
		a, b := was[i], now[i]
		switch {
		case a.Start != b.Start || a.Length != b.Length:
			return fmt.Sprintf("target %d covers sectors %d+%d instead of %d+%d", i, b.Start, b.Length, a.Start, a.Length)
		case a.Type != b.Type:
			return fmt.Sprintf("target %d is %s instead of %s", i, b.Type, a.Type)
		case a.Params != b.Params:
			return fmt.Sprintf("target %d has other parameters", i)
		}
	}
	return ""
}

// blockDevSize reads the size in sectors of the block device "major:minor"
// from sysfs (it is what BLKGETSIZE64 reports, without opening the device).
func blockDevSize(sysfs, devno string) (uint64, error) {
	b, err := os.ReadFile(sysfs + "/dev/block/" + devno + "/size")
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", devno, err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", devno, err)
	}
	return n, nil
}
