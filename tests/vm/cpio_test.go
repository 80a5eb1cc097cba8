package vm

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
)

type cpioRecord struct {
	name         string
	mode         uint32
	data         []byte
	major, minor uint32
}

// readNewc parses a newc archive strictly, checking the alignment rules the
// kernel's unpacker relies on.
func readNewc(t *testing.T, b []byte) []cpioRecord {
	t.Helper()
	var out []cpioRecord
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("bad header field %d at %d: %v", i, off, err)
		}
		return uint32(v)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off%4 != 0 {
			t.Fatalf("entry at %d is not 4-byte aligned", off)
		}
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc magic at %d", off)
		}
		mode, size := field(1), int(field(6))
		rmaj, rmin, namesize := field(9), field(10), int(field(11))
		nameStart := off + 110
		name := string(b[nameStart : nameStart+namesize])
		if name[len(name)-1] != 0 {
			t.Fatalf("name at %d not NUL-terminated", nameStart)
		}
		name = name[:len(name)-1]
		dataStart := align(nameStart + namesize)
		data := b[dataStart : dataStart+size]
		off = align(dataStart + size)
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, cpioRecord{name: name, mode: mode, data: data, major: rmaj, minor: rmin})
	}
}

func TestCpioRoundTrip(t *testing.T) {
	a := newArchive()
	a.addFile("/usr/local/bin/tool", 0o755, []byte("#!/bin/sh\necho hi\n"))
	a.addFile("etc/odd", 0o644, []byte("12345")) // length not a multiple of 4
	a.addFile("/empty", 0o600, nil)
	a.addSymlink("/bin/sh", "/bin/busybox")
	a.addCharDev("/dev/console", 5, 1)
	var buf bytes.Buffer
	if err := a.writeTo(&buf); err != nil {
		t.Fatal(err)
	}
	recs := readNewc(t, buf.Bytes())
	got := map[string]cpioRecord{}
	pos := map[string]int{}
	for i, r := range recs {
		if _, dup := got[r.name]; dup {
			t.Fatalf("duplicate entry %s", r.name)
		}
		got[r.name] = r
		pos[r.name] = i
	}
	want := map[string]string{
		"usr/local/bin/tool": fmt.Sprintf("%o:#!/bin/sh\necho hi\n", modeReg|0o755),
		"etc/odd":            fmt.Sprintf("%o:12345", modeReg|0o644),
		"empty":              fmt.Sprintf("%o:", modeReg|0o600),
		"bin/sh":             fmt.Sprintf("%o:/bin/busybox", modeLink|0o777),
		"dev/console":        fmt.Sprintf("%o:", modeChr|0o600),
	}
	for name, w := range want {
		r, ok := got[name]
		if !ok {
			t.Fatalf("missing %s; have %v", name, recs)
		}
		if g := fmt.Sprintf("%o:%s", r.mode, r.data); g != w {
			t.Errorf("%s = %q, want %q", name, g, w)
		}
	}
	if c := got["dev/console"]; c.major != 5 || c.minor != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", c.major, c.minor)
	}
	// The unpacker does not create parents, so each must come before its children.
	for _, d := range []string{"usr", "usr/local", "usr/local/bin", "etc", "bin", "dev"} {
		r, ok := got[d]
		if !ok || r.mode&0o170000 != modeDir {
			t.Fatalf("parent directory %s missing or not a directory", d)
		}
	}
	for _, c := range []struct{ dir, child string }{
		{"usr", "usr/local"}, {"usr/local/bin", "usr/local/bin/tool"}, {"dev", "dev/console"}, {"bin", "bin/sh"},
	} {
		if pos[c.dir] > pos[c.child] {
			t.Errorf("%s comes after %s", c.dir, c.child)
		}
	}
}

func TestParseMarkersIgnoreOtherNonces(t *testing.T) {
	console := "noise @@VM-EXIT deadbeef 0@@\n[  1.0] kernel: x\n@@VM-MODFAIL abc /m/a.ko@@\n@@VM-MODFAIL deadbeef /m/b.ko@@\n" +
		"\n@@VM-EXIT abc 3@@\n"
	if code, ok := parseExit(console, "abc"); !ok || code != 3 {
		t.Fatalf("parseExit = %d, %v; want 3, true", code, ok)
	}
	if _, ok := parseExit(console, "0123"); ok {
		t.Fatal("parseExit found an exit marker for a nonce that never appeared")
	}
	if got := parseModFails(console, "abc"); len(got) != 1 || got[0] != "/m/a.ko" {
		t.Fatalf("parseModFails = %v, want [/m/a.ko]", got)
	}
}
