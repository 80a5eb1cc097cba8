package vm

import (
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// The kernel's initramfs unpacker reads the "newc" cpio format (magic 070701):
// a 110-byte ASCII header of 8-digit hex fields, the NUL-terminated name padded to
// a multiple of 4 bytes, then the data padded the same way, ending with an entry
// named TRAILER!!!. Several archives may be concatenated; later entries replace
// earlier ones, which is how a per-boot script is layered on a cached base.

const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeLink = 0o120000
	modeChr  = 0o020000
)

// entry is one file of an archive.
type entry struct {
	mode         uint32 // type bits and permissions
	data         []byte // file contents, or the target of a symlink
	major, minor uint32 // device numbers of a character device
}

// archive is an in-memory file tree keyed by absolute guest path. Parent
// directories are created implicitly when it is written.
type archive struct {
	files map[string]entry
}

func newArchive() *archive { return &archive{files: map[string]entry{}} }

func cleanGuestPath(p string) string {
	return path.Clean("/" + p)
}

func (a *archive) addFile(p string, perm uint32, data []byte) {
	a.files[cleanGuestPath(p)] = entry{mode: modeReg | perm&0o7777, data: data}
}

func (a *archive) addSymlink(p, target string) {
	a.files[cleanGuestPath(p)] = entry{mode: modeLink | 0o777, data: []byte(target)}
}

func (a *archive) addDir(p string) {
	a.files[cleanGuestPath(p)] = entry{mode: modeDir | 0o755}
}

func (a *archive) addCharDev(p string, major, minor uint32) {
	a.files[cleanGuestPath(p)] = entry{mode: modeChr | 0o600, major: major, minor: minor}
}

// writeTo writes the archive in newc format. Directories come before their
// contents because the unpacker does not create missing parents.
func (a *archive) writeTo(w io.Writer) error {
	all := map[string]entry{}
	for p, e := range a.files {
		all[p] = e
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				if _, explicit := a.files[d]; !explicit {
					all[d] = entry{mode: modeDir | 0o755}
				}
			}
		}
	}
	names := make([]string, 0, len(all))
	for p := range all {
		names = append(names, p)
	}
	// Sorting by path puts every directory before the paths under it.
	sort.Strings(names)
	cw := &cpioWriter{w: w}
	for i, p := range names {
		e := all[p]
		if err := cw.writeEntry(strings.TrimPrefix(p, "/"), uint32(i+1), e); err != nil {
			return fmt.Errorf("cpio: write %s: %w", p, err)
		}
	}
	if err := cw.writeEntry("TRAILER!!!", 0, entry{}); err != nil {
		return fmt.Errorf("cpio: write trailer: %w", err)
	}
	return nil
}

type cpioWriter struct {
	w   io.Writer
	off int64
}

func (c *cpioWriter) write(b []byte) error {
	n, err := c.w.Write(b)
	c.off += int64(n)
	return err
}

func (c *cpioWriter) pad() error {
	if r := c.off % 4; r != 0 {
		return c.write(make([]byte, 4-r))
	}
	return nil
}

func (c *cpioWriter) writeEntry(name string, ino uint32, e entry) error {
	nlink := uint32(1)
	if e.mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.major, e.minor, len(name)+1, 0)
	if err := c.write([]byte(hdr)); err != nil {
		return err
	}
	if err := c.write(append([]byte(name), 0)); err != nil {
		return err
	}
	if err := c.pad(); err != nil {
		return err
	}
	if len(e.data) > 0 {
		if err := c.write(e.data); err != nil {
			return err
		}
	}
	return c.pad()
}
