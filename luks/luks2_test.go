package luks

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
)

// A test-only LUKS2 metadata writer: it replaces the JSON of a copy and
// recomputes that copy's checksum, which is all these tests need to make
// headers cryptsetup has an opinion on. (The package itself writes
// nothing.)

func readImage(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeImage(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// setCopy rewrites the copy at off with JSON text js (nil: keep) and
// seqid (0: keep), with a correct checksum.
func setCopy(t *testing.T, img []byte, off int, js []byte, seqid uint64) {
	t.Helper()
	hdrSize := int(binary.BigEndian.Uint64(img[off+8:]))
	area := img[off+binHeaderSize : off+hdrSize]
	if js != nil {
		if len(js) >= len(area) {
			t.Fatalf("JSON of %d bytes does not fit %d", len(js), len(area))
		}
		clear(area)
		copy(area, js)
	}
	if seqid != 0 {
		binary.BigEndian.PutUint64(img[off+16:], seqid)
	}
	bin := img[off : off+binHeaderSize]
	clear(bin[448 : 448+64])
	h := sha256.New()
	h.Write(bin)
	h.Write(area)
	copy(bin[448:], h.Sum(nil))
}

func hdrSizeOf(img []byte) int { return int(binary.BigEndian.Uint64(img[8:])) }

func openBytes(t *testing.T, img []byte) (*Volume, error) {
	t.Helper()
	return Open(byteDev(img), int64(len(img)))
}

type byteDev []byte

func (b byteDev) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, errors.New("read past end")
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, errors.New("short read")
	}
	return n, nil
}

func smallLUKS2(t *testing.T) image {
	return format(t, 5<<20, "copies", join(luks2Small, pbkdf2Cheap)...)
}

// TestLUKS2Copies: which copy is used, and why the other is not, for the
// damage cryptsetup's loader tells apart; each failed check has its own
// message, magic before version before checksum.
func TestLUKS2Copies(t *testing.T) {
	im := smallLUKS2(t)
	orig := readImage(t, im.path)
	hs := hdrSizeOf(orig)
	seq := binary.BigEndian.Uint64(orig[16:])
	cases := []struct {
		name      string
		damage    func(b []byte)
		offset    int64
		primary   string // substring of the Primary error, "" for nil
		secondary string
	}{
		{"intact", func([]byte) {}, 0, "", ""},
		{"primary zeroed", func(b []byte) { clear(b[:binHeaderSize]) }, int64(hs), "bad magic", ""},
		{"primary magic and checksum", func(b []byte) { b[0] = 'X'; b[binHeaderSize+1] ^= 1 }, int64(hs), "bad magic", ""},
		{"primary checksum", func(b []byte) { b[binHeaderSize+1] ^= 1 }, int64(hs), "checksum mismatch", ""},
		{"primary own offset", func(b []byte) { b[263] = 1; setCopy(t, b, 0, nil, 0) }, int64(hs), "records its own offset", ""},
		{"secondary checksum", func(b []byte) { b[hs+binHeaderSize+1] ^= 1 }, 0, "", "checksum mismatch"},
		{"secondary newer", func(b []byte) { setCopy(t, b, hs, nil, seq+1) }, int64(hs), "older", ""},
		{"primary newer", func(b []byte) { setCopy(t, b, 0, nil, seq+1) }, 0, "", "older"},
		{"primary JSON invalid", func(b []byte) { setCopy(t, b, 0, []byte(`{"config":{}}`), 0) }, int64(hs), "missing", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := append([]byte(nil), orig...)
			c.damage(b)
			v, err := openBytes(t, b)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if v.V2.Offset != c.offset {
				t.Errorf("copy in use at %d, want %d", v.V2.Offset, c.offset)
			}
			for _, e := range []struct {
				err  error
				want string
			}{{v.V2.Primary, c.primary}, {v.V2.Secondary, c.secondary}} {
				if (e.want == "") != (e.err == nil) || e.err != nil && !strings.Contains(e.err.Error(), e.want) {
					t.Errorf("copy status %v, want %q", e.err, e.want)
				}
			}
			// cryptsetup agrees that the volume is readable.
			p := im.path + "." + strings.ReplaceAll(c.name, " ", "-")
			writeImage(t, p, b)
			runCS(t, "luksDump", p)
		})
	}
	t.Run("primary version", func(t *testing.T) {
		// cryptsetup reads the version first and stops at an unknown one,
		// whatever the secondary copy holds.
		b := append([]byte(nil), orig...)
		b[7] = 3
		if _, err := openBytes(t, b); errclass.Code(err) != errclass.ExitHeader || !strings.Contains(err.Error(), "unsupported LUKS version 3") {
			t.Errorf("Open: %v; want a Header error for version 3", err)
		}
		p := im.path + ".v3"
		writeImage(t, p, b)
		if _, err := runCSFail(t, "luksDump", p); err == nil {
			t.Error("cryptsetup accepts a version 3 header")
		}
	})
	t.Run("both damaged", func(t *testing.T) {
		b := append([]byte(nil), orig...)
		b[binHeaderSize+1] ^= 1
		b[hs+binHeaderSize+1] ^= 1
		_, err := openBytes(t, b)
		if errclass.Code(err) != errclass.ExitHeader || !strings.Contains(err.Error(), "primary") || !strings.Contains(err.Error(), "secondary") {
			t.Fatalf("Open: %v; want a Header error naming both copies", err)
		}
	})
}

// TestLUKS2Validation is differential: each edit of the JSON metadata is
// judged by stock cryptsetup (luksDump loads and validates the header),
// and Open must agree, accepting what it accepts and refusing what it
// refuses.
func TestLUKS2Validation(t *testing.T) {
	im := smallLUKS2(t)
	orig := readImage(t, im.path)
	hs := hdrSizeOf(orig)
	type J = map[string]any
	obj := func(m J, keys ...string) J {
		for _, k := range keys {
			m = m[k].(J)
		}
		return m
	}
	edits := map[string]func(m J){
		"unknown keyslot type with area": func(m J) {
			obj(m, "keyslots")["5"] = J{"type": "frobnicate", "key_size": 32, "x": []any{1.0}, "area": J{"type": "other", "offset": "2097152", "size": "4096"}}
		},
		"unknown keyslot type without area": func(m J) { obj(m, "keyslots")["5"] = J{"type": "frobnicate", "key_size": 32} },
		"unknown token type":                func(m J) { obj(m, "tokens")["2"] = J{"type": "x-test", "keyslots": []any{"0"}, "blob": J{"a": "b"}} },
		"token names missing keyslot":       func(m J) { obj(m, "tokens")["2"] = J{"type": "x-test", "keyslots": []any{"7"}} },
		"token without keyslots":            func(m J) { obj(m, "tokens")["2"] = J{"type": "x-test"} },
		"unknown requirement":               func(m J) { obj(m, "config")["requirements"] = J{"mandatory": []any{"frobnicate"}} },
		"requirement not a string":          func(m J) { obj(m, "config")["requirements"] = J{"mandatory": []any{1.0}} },
		"two reencrypt requirements": func(m J) {
			obj(m, "config")["requirements"] = J{"mandatory": []any{"online-reencrypt-v2", "online-reencrypt-v9"}}
		},
		"reencrypt requirement, no slot":   func(m J) { obj(m, "config")["requirements"] = J{"mandatory": []any{"online-reencrypt-v2"}} },
		"config flags":                     func(m J) { obj(m, "config")["flags"] = []any{"allow-discards", "no-such-flag"} },
		"config flag not a string":         func(m J) { obj(m, "config")["flags"] = []any{true} },
		"json_size mismatch":               func(m J) { obj(m, "config")["json_size"] = "28672" },
		"json_size a number":               func(m J) { obj(m, "config")["json_size"] = 12288.0 },
		"keyslots_size unaligned":          func(m J) { obj(m, "config")["keyslots_size"] = "3145000" },
		"keyslots_size into data":          func(m J) { obj(m, "config")["keyslots_size"] = "4194304" },
		"key_size a string":                func(m J) { obj(m, "keyslots", "0")["key_size"] = "64" },
		"key_size negative":                func(m J) { obj(m, "keyslots", "0")["key_size"] = -1.0 },
		"pbkdf2 extra member":              func(m J) { obj(m, "keyslots", "0", "kdf")["time"] = 4.0 },
		"pbkdf2 without hash":              func(m J) { delete(obj(m, "keyslots", "0", "kdf"), "hash") },
		"unknown kdf type":                 func(m J) { obj(m, "keyslots", "0", "kdf")["type"] = "scrypt" },
		"unknown af type":                  func(m J) { obj(m, "keyslots", "0", "af")["type"] = "luks9" },
		"area offset in metadata":          func(m J) { obj(m, "keyslots", "0", "area")["offset"] = "16384" },
		"area past keyslots area":          func(m J) { obj(m, "keyslots", "0", "area")["size"] = "4194304" },
		"area size zero":                   func(m J) { obj(m, "keyslots", "0", "area")["size"] = "0" },
		"area offset not digits":           func(m J) { obj(m, "keyslots", "0", "area")["offset"] = "0x8000" },
		"keyslot in no digest":             func(m J) { obj(m, "digests", "0")["keyslots"] = []any{} },
		"digest names missing segment":     func(m J) { obj(m, "digests", "0")["segments"] = []any{"0", "3"} },
		"segment size unaligned":           func(m J) { obj(m, "segments", "0")["size"] = "1000000" },
		"segment size not sector multiple": func(m J) { obj(m, "segments", "0")["size"] = "1049088" },
		"segment fixed size":               func(m J) { obj(m, "segments", "0")["size"] = "1048576" },
		"segment iv_tweak a number":        func(m J) { obj(m, "segments", "0")["iv_tweak"] = 0.0 },
		"segment iv_tweak set":             func(m J) { obj(m, "segments", "0")["iv_tweak"] = "8" },
		"segment sector_size 1000":         func(m J) { obj(m, "segments", "0")["sector_size"] = 1000.0 },
		"segment flags":                    func(m J) { obj(m, "segments", "0")["flags"] = []any{"some-flag"} },
		"segment flag not a string":        func(m J) { obj(m, "segments", "0")["flags"] = []any{J{}} },
		"segment gap":                      func(m J) { s := obj(m, "segments"); s["1"] = s["0"]; delete(s, "0") },
		"no segments":                      func(m J) { m["segments"] = J{} },
		"second overlapping segment": func(m J) {
			s := obj(m, "segments")
			s["1"] = J{"type": "linear", "offset": "4194304", "size": "dynamic"}
		},
		"unknown top-level member": func(m J) { m["x-extra"] = J{"k": "v"} },
		"missing tokens":           func(m J) { delete(m, "tokens") },
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			var m J
			if err := json.Unmarshal([]byte(runCS(t, "luksDump", "--dump-json-metadata", im.path)), &m); err != nil {
				t.Fatal(err)
			}
			edit(m)
			js, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			b := append([]byte(nil), orig...)
			setCopy(t, b, 0, js, 0)
			setCopy(t, b, hs, js, 0)
			p := im.path + ".edit"
			writeImage(t, p, b)
			_, csErr := runCSFail(t, "luksDump", p)
			v, err := openBytes(t, b)
			switch {
			case csErr == nil && err != nil:
				t.Fatalf("cryptsetup accepts the header, Open refuses it: %v", err)
			case csErr != nil && err == nil:
				t.Fatalf("cryptsetup refuses the header, Open accepts it")
			case err != nil && errclass.Code(err) != errclass.ExitHeader:
				t.Fatalf("refusal %v is not a Header error", err)
			case err == nil && !jsonEqual(t, v.V2.Meta.Raw, js):
				t.Fatal("accepted metadata not kept intact in Raw")
			}
			if err != nil {
				t.Logf("refused: %v", err)
			}
		})
	}
}

// TestLUKS2TrailingBytes: the JSON text must be followed by NULs only.
func TestLUKS2TrailingBytes(t *testing.T) {
	im := smallLUKS2(t)
	b := readImage(t, im.path)
	hs := hdrSizeOf(b)
	js := []byte(runCS(t, "luksDump", "--dump-json-metadata", im.path))
	var compact json.RawMessage
	if err := json.Unmarshal(js, &compact); err != nil {
		t.Fatal(err)
	}
	text, _ := json.Marshal(compact)
	for _, tail := range []string{" ", "\n", "x"} {
		c := append([]byte(nil), b...)
		setCopy(t, c, 0, append(append([]byte(nil), text...), tail...), 0)
		setCopy(t, c, hs, append(append([]byte(nil), text...), tail...), 0)
		if _, err := openBytes(t, c); errclass.Code(err) != errclass.ExitHeader {
			t.Errorf("JSON followed by %q: %v, want a Header error", tail, err)
		}
	}
}

// TestDetect covers the signatures the convert guard relies on.
func TestDetect(t *testing.T) {
	l1 := format(t, 4<<20, "d", join([]string{"--type", "luks1"}, pbkdf2Cheap)...)
	l2 := smallLUKS2(t)
	b1, b2 := readImage(t, l1.path), readImage(t, l2.path)
	hs := int64(hdrSizeOf(b2))
	zeroPrimary := append([]byte(nil), b2...)
	clear(zeroPrimary[:binHeaderSize])
	zeroBoth := append([]byte(nil), zeroPrimary...)
	clear(zeroBoth[hs : hs+binHeaderSize])
	reenc := append([]byte(nil), b1...)
	copy(reenc, magicReenc)
	cases := []struct {
		name    string
		img     []byte
		version int
		offset  int64
		reenc   bool
	}{
		{"luks1", b1, 1, 0, false},
		{"luks2", b2, 2, 0, false},
		{"luks2 secondary", zeroPrimary, 2, hs, false},
		{"legacy reencryption", reenc, 1, 0, true},
		{"nothing", zeroBoth, 0, 0, false},
		{"empty", nil, 0, 0, false},
	}
	for _, c := range cases {
		s, err := Detect(byteDev(c.img), int64(len(c.img)))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.version == 0 {
			if s != nil {
				t.Errorf("%s: detected %v", c.name, s)
			}
			continue
		}
		if s == nil || s.Version != c.version || s.Offset != c.offset || s.Reencrypting != c.reenc || s.UUID == "" {
			t.Errorf("%s: %+v, want LUKS%d at %d (reencrypting %v)", c.name, s, c.version, c.offset, c.reenc)
		}
	}
}
