package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
)

// fullDisk fails the failAt-th window-sized write (a journal record's
// payload: nothing else written to the metadata is that large) with
// ENOSPC, writing nothing, as a file system out of space does for a
// sparse file's unallocated blocks. The metadata file is large enough
// that the log does not wrap before: the failed payload lands on blocks
// no write reached, as only those can run out of space.
type fullDisk struct {
	blockdev.Device
	window int
	writes int
	failAt int
}

func (d *fullDisk) WriteAt(p []byte, off int64) (int, error) {
	if len(p) == d.window {
		d.writes++
		if d.writes >= d.failAt {
			return 0, fmt.Errorf("write at %d: %w", off, syscall.ENOSPC)
		}
	}
	return d.Device.WriteAt(p, off)
}

// Unwritten is the wrapped file's: the wrapper must not hide it.
func (d *fullDisk) Unwritten(off, n int64) bool {
	return d.Device.(interface{ Unwritten(int64, int64) bool }).Unwritten(off, n)
}

// TestStatusAfterENOSPC: a journal record whose header block was written
// and whose payload was not (the metadata file's file system filled up)
// is not counted by status, which has no key to check the payload: it
// agrees with recovery, which has.
func TestStatusAfterENOSPC(t *testing.T) {
	c := &runner{t: t, dir: t.TempDir()}
	img, _ := c.makeImage("disk.img", 4<<20, 4<<20, testKey(1))
	meta := filepath.Join(c.dir, "m.meta")
	oldKey, newKey := c.file("old.key", testKey(1)), c.file("new.key", testKey(2))
	const window = 256 << 10

	tg, cleanup, err := openTarget(img, meta, 4<<20, blockdev.Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	tg.Meta = &fullDisk{Device: tg.Meta, window: window, failAt: 3}
	cfg := engine.Config{
		Old:  engine.Side{Cipher: "aes-xts-plain64", Key: testKey(1)},
		New:  engine.Side{Cipher: "aes-xts-plain64", Key: testKey(2)},
		Mode: "journal", Window: window,
	}
	_, err = engine.Convert(context.Background(), tg, cfg, engine.Options{})
	cleanup(false)
	if code := exitCode(err); code != exitIO {
		t.Fatalf("conversion on a full metadata file: exit %d (%v), want %d", code, err, exitIO)
	}

	var out, errb bytes.Buffer
	if code := run([]string{"cryptshift", "status", "--json", "--metadata", meta, img}, &out, &errb); code != 0 {
		t.Fatalf("status: exit %d: %s", code, errb.String())
	}
	var st statusReport
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out.String())
	}

	out.Reset()
	if code := run([]string{"cryptshift", "recover", "--old-key-file", oldKey, "--new-key-file", newKey, "--metadata", meta, img}, &out, &errb); code != 0 {
		t.Fatalf("recover: exit %d: %s", code, errb.String())
	}
	rec := strings.TrimSpace(out.String())
	m := regexp.MustCompile(`(\d+) of (\d+) windows converted`).FindStringSubmatch(rec)
	if m == nil {
		t.Fatalf("recover did not say how far the conversion got: %q", rec)
	}
	converted, _ := strconv.ParseUint(m[1], 10, 64)
	// Status speaks of the state before recovery: the window it shows in
	// flight is the one recovery finished or undid, and nothing else.
	switch {
	case st.OpenWindow == nil:
		if !strings.Contains(rec, "no window was in flight") || st.WindowsDone != converted {
			t.Errorf("status: %d windows done, none in flight; recovery with the keys: %s", st.WindowsDone, rec)
		}
	default:
		w := *st.OpenWindow
		if !strings.Contains(rec, fmt.Sprintf("window %d rolled", w)) || converted != w && converted != w+1 {
			t.Errorf("status: %d windows done, window %d in flight (%d log records); recovery with the keys: %s", st.WindowsDone, w, st.LogRecords, rec)
		}
	}
}
