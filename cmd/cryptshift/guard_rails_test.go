package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

// The guard-rail tests make a user's ordinary mistakes (issue 19) on
// images with known plaintext and check that each is refused with the
// right exit code and one line naming the mistake, with every byte of the
// image as it was; or, where the mistake has a way forward, that every
// sector ends up as the recorded progress says (decrypted here with
// sectorcipher, independently of the engine).

const (
	grImage = 6 << 20
	grMeta  = 1 << 20
	grData  = grImage - grMeta
)

var grLayout = []string{"--metadata-size", "1M", "--window", "512K", "--progress", "none"}

func grMapping(t *testing.T, cipher string, key []byte, ss int, ivoff uint64) sectorcipher.Cipher {
	t.Helper()
	spec, err := sectorcipher.ParseSpec(cipher)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: key, SectorSize: ss, IVOffset: ivoff})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// grPlain is demo text with every fourth 4 KiB block zeroed, as a
// filesystem's free blocks are.
func grPlain(n int64) []byte {
	p := make([]byte, n)
	demoPlain(p, 0)
	for off := int64(0); off < n; off += 16 << 10 {
		clear(p[off:min(off+4096, n)])
	}
	return p
}

// grImageOf writes an image of size bytes holding plain encrypted by ci
// from byte off on, the rest zero.
func (c *runner) grImageOf(name string, size, off int64, plain []byte, ci sectorcipher.Cipher) string {
	c.t.Helper()
	img := make([]byte, size)
	ct := bytes.Clone(plain)
	ci.Encrypt(ct, 0)
	copy(img[off:], ct)
	return c.file(name, img)
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// refused runs args, wants exit code want with a one-line message holding
// every one of msgs, and the files unchanged.
func (c *runner) refused(want int, files []string, msgs []string, args ...string) result {
	c.t.Helper()
	before := make([][32]byte, len(files))
	for i, f := range files {
		before[i] = hashFile(c.t, f)
	}
	r := c.must(want, nil, args...)
	if !strings.HasPrefix(r.stderr, "cryptshift: ") || strings.Count(r.stderr, "\n") != 1 {
		c.t.Errorf("%v: error is not one \"cryptshift: \" line: %q", args, r.stderr)
	}
	for _, m := range msgs {
		if !strings.Contains(r.stderr, m) {
			c.t.Errorf("%v: message does not say %q: %q", args, m, r.stderr)
		}
	}
	for i, f := range files {
		if hashFile(c.t, f) != before[i] {
			c.t.Fatalf("%v: refused, but %s changed", args, f)
		}
	}
	return r
}

// sameAs fails unless got decrypted by ci equals want.
func sameAs(t *testing.T, what string, got []byte, ci sectorcipher.Cipher, sector0 uint64, want []byte) {
	t.Helper()
	b := bytes.Clone(got)
	ci.Decrypt(b, sector0)
	if !bytes.Equal(b, want) {
		for i := range b {
			if b[i] != want[i] {
				t.Fatalf("%s: differs from byte %d (sector %d)", what, i, (int64(i)+int64(sector0)*512)/512)
			}
		}
	}
}

// Defect 1: a wrong old sector size, IV offset or cipher, data already
// under the new key, or ciphertext called plaintext, is refused with the
// likely fix named; a blank disk is not.
func TestGuardPlausibility(t *testing.T) {
	c := buildCLI(t)
	k1, k2 := testKey(1), testKey(2)
	k1f, k2f := c.file("k1", k1), c.file("k2", k2)
	cbcKey := k1[:32]
	cbcf := c.file("cbc.key", cbcKey)
	plain := grPlain(grData)
	conv := func(img string, extra ...string) []string {
		return append(append(append([]string{"convert", "--new-key-file", k2f}, grLayout...), extra...), img)
	}
	cases := []struct {
		name  string
		img   func() string
		flags []string
		code  int
		msgs  []string
	}{
		{"real 4096, given 512", func() string {
			return c.grImageOf("x4096.img", grImage, 0, plain, grMapping(t, "aes-xts-plain64", k1, 4096, 0))
		}, []string{"--old-key-file", k1f}, 3, []string{"4096-byte sectors", "--old-sector-size 4096"}},
		{"real 512, given 4096", func() string {
			return c.grImageOf("x512.img", grImage, 0, plain, grMapping(t, "aes-xts-plain64", k1, 512, 0))
		}, []string{"--old-key-file", k1f, "--old-sector-size", "4096"}, 3, []string{"--old-sector-size 512"}},
		{"real 1024, given 512", func() string {
			return c.grImageOf("x1024.img", grImage, 0, plain, grMapping(t, "aes-xts-plain64", k1, 1024, 0))
		}, []string{"--old-key-file", k1f}, 3, []string{"--old-sector-size 1024"}},
		{"XTS IV offset missing", func() string {
			return c.grImageOf("xiv.img", grImage, 1<<20, plain[:grData-1<<20], grMapping(t, "aes-xts-plain64", k1, 512, 2048))
		}, []string{"--old-key-file", k1f, "--data-offset", "1M"}, 3, []string{"--old-iv-offset 2048"}},
		{"CBC IV offset missing", func() string {
			return c.grImageOf("civ.img", grImage, 0, plain, grMapping(t, "aes-cbc-essiv:sha256", cbcKey, 512, 777))
		}, []string{"--old-key-file", cbcf, "--old-cipher", "aes-cbc-essiv:sha256"}, 3, []string{"--old-iv-offset 777"}},
		{"CBC given as XTS", func() string {
			return c.grImageOf("cbc.img", grImage, 0, plain, grMapping(t, "aes-cbc-essiv:sha256", cbcKey, 512, 0))
		}, []string{"--old-key-file", cbcf}, 3, []string{"--old-cipher aes-cbc-essiv:sha256"}},
		{"already under the new key", func() string {
			return c.grImageOf("new.img", grImage, 0, plain, grMapping(t, "aes-xts-plain64", k2, 512, 0))
		}, []string{"--old-key-file", k1f}, 3, []string{"already decrypts under the new key"}},
		{"plaintext given a cipher", func() string {
			img := make([]byte, grImage)
			copy(img, plain)
			return c.file("plain.img", img)
		}, []string{"--old-key-file", k1f}, 3, []string{"--old-cipher none"}},
		{"ciphertext called plaintext", func() string {
			return c.grImageOf("ct.img", grImage, 0, plain, grMapping(t, "aes-xts-plain64", k1, 512, 0))
		}, []string{"--old-cipher", "none"}, 3, []string{"not plaintext"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.img()
			c.refused(tc.code, []string{img}, tc.msgs, conv(img, tc.flags...)...)
		})
	}

	// Half the data under the new key: window 0 gives it away.
	half := c.grImageOf("half.img", grImage, 0, plain, grMapping(t, "aes-xts-plain64", k1, 512, 0))
	b := readFile(t, half)
	nb := bytes.Clone(plain[:1<<20])
	xtsCipher(t, k2).Encrypt(nb, 0)
	copy(b, nb)
	os.WriteFile(half, b, 0o600)
	c.refused(3, []string{half}, []string{"window 0 already decrypts under the new key", "half converted"}, conv(half, "--old-key-file", k1f)...)

	// A new blank disk has nothing to judge and is converted.
	blank := c.file("blank.img", make([]byte, grImage))
	c.must(0, nil, conv(blank, "--old-key-file", k1f)...)
	was := make([]byte, grData)
	xtsCipher(t, k1).Decrypt(was, 0)
	sameAs(t, "blank disk", readFile(t, blank)[:grData], xtsCipher(t, k2), 0, was)

	// The right flags pass.
	img := c.grImageOf("ok4096.img", grImage, 0, plain, grMapping(t, "aes-xts-plain64", k1, 4096, 0))
	c.must(0, nil, conv(img, "--old-key-file", k1f, "--old-sector-size", "4096")...)
	sameAs(t, "4096 converted", readFile(t, img)[:grData], xtsCipher(t, k2), 0, plain)
}

// pauseAt runs convert with the test hook that interrupts after window n.
func (c *runner) pauseAt(n int, args ...string) {
	c.t.Helper()
	c.must(8, []string{testInterruptEnv + "=" + fmt.Sprint(n)}, args...)
}

// Defect 2: a resume that does not find the header never starts over.
func TestGuardResumeWithoutHeader(t *testing.T) {
	c := buildCLI(t)
	k1f, k2f := c.file("k1", testKey(1)), c.file("k2", testKey(2))
	plain := grPlain(grData)
	base := []string{"convert", "--old-key-file", k1f, "--new-key-file", k2f, "--window", "512K", "--progress", "none"}
	args := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }

	// Metadata in a file: paused after 2 windows, and a copy kept.
	img := c.grImageOf("sep.img", grData, 0, plain, xtsCipher(t, testKey(1)))
	meta := filepath.Join(c.dir, "m.meta")
	c.pauseAt(2, args("--metadata", meta, img)...)
	old := readFile(t, meta)
	c.pauseAt(5, args("--metadata", meta, img)...)
	files := []string{img, meta}
	c.refused(3, files, []string{"window 0 already decrypts under the new key", "not at the end of the device"}, args("--metadata-size", "1M", img)...)
	c.refused(3, files, []string{"window 0 already decrypts under the new key", "not in the --metadata given"}, args("--metadata", filepath.Join(c.dir, "other.meta"), img)...)
	if _, err := os.Stat(filepath.Join(c.dir, "other.meta")); err == nil {
		t.Error("a refused run left the metadata file it created")
	}
	// An older copy of the metadata (a backup) is detected too.
	cur := readFile(t, meta)
	os.WriteFile(meta, old, 0o600)
	c.refused(5, files, []string{"already decrypts under the new key", "older than the conversion"}, args("--metadata", meta, img)...)
	// Zeroed, or deleted.
	os.WriteFile(meta, make([]byte, len(cur)), 0o600)
	c.refused(3, files, []string{"window 0 already decrypts under the new key"}, args("--metadata", meta, img)...)
	os.Remove(meta)
	c.refused(3, []string{img}, []string{"window 0 already decrypts under the new key"}, args("--metadata", meta, img)...)
	os.WriteFile(meta, cur, 0o600)
	c.must(0, nil, args("--metadata", meta, img)...)
	sameAs(t, "separate metadata", readFile(t, img), xtsCipher(t, testKey(2)), 0, plain)

	// Metadata at the end: --metadata added, the header zeroed, the
	// device grown.
	img = c.grImageOf("end.img", grImage, 0, plain, xtsCipher(t, testKey(1)))
	endArgs := func(extra ...string) []string { return args(append([]string{"--metadata-size", "1M"}, extra...)...) }
	c.pauseAt(3, endArgs(img)...)
	c.refused(5, []string{img}, []string{"a cryptshift header is at the end of DEVICE", "leave out --metadata"}, endArgs("--metadata", filepath.Join(c.dir, "x.meta"), img)...)
	saved := readFile(t, img)
	zeroed := bytes.Clone(saved)
	clear(zeroed[len(zeroed)-8192:])
	os.WriteFile(img, zeroed, 0o600)
	c.refused(3, []string{img}, []string{"window 0 already decrypts under the new key"}, endArgs(img)...)
	os.WriteFile(img, append(bytes.Clone(saved), make([]byte, 1<<20)...), 0o600)
	c.refused(3, []string{img}, []string{"window 0 already decrypts under the new key"}, endArgs(img)...)
	os.WriteFile(img, saved, 0o600)
	c.must(0, nil, endArgs(img)...)
	sameAs(t, "metadata at the end", readFile(t, img)[:grData], xtsCipher(t, testKey(2)), 0, plain)
}

// Defects 3 and 4, and a device of odd size: nothing of the user's is
// taken for metadata, and the converted range is never cut short
// silently.
func TestGuardLayout(t *testing.T) {
	c := buildCLI(t)
	k1f, k2f := c.file("k1", testKey(1)), c.file("k2", testKey(2))
	args := func(extra ...string) []string {
		return append([]string{"convert", "--old-key-file", k1f, "--new-key-file", k2f, "--window", "512K", "--progress", "none"}, extra...)
	}
	// A filesystem that fills the device.
	full := grPlain(grImage)
	img := c.grImageOf("full.img", grImage, 0, full, xtsCipher(t, testKey(1)))
	c.refused(4, []string{img}, []string{"the last 1 MiB of the device", "shrink the filesystem to at most 5242880 bytes", "--data-size 5242880", "--metadata"}, args("--metadata-size", "1M", img)...)
	// The same with plaintext.
	pimg := c.file("plainfull.img", full)
	c.refused(4, []string{pimg}, []string{"the last 1 MiB of the device"}, append([]string{"convert", "--old-cipher", "none", "--new-key-file", k2f, "--metadata-size", "1M", "--window", "512K", "--progress", "none"}, pimg)...)
	// --data-size says the data ends before the area (the filesystem was
	// shrunk); --force takes the area too.
	c.must(0, nil, args("--metadata-size", "1M", "--data-size", fmt.Sprint(grData), img)...)
	sameAs(t, "sized", readFile(t, img)[:grData], xtsCipher(t, testKey(2)), 0, full[:grData])
	c.must(0, nil, append([]string{"convert", "--old-cipher", "none", "--new-key-file", k2f, "--metadata-size", "1M", "--window", "512K", "--progress", "none", "--force"}, pimg)...)
	sameAs(t, "forced", readFile(t, pimg)[:grData], xtsCipher(t, testKey(2)), 0, full[:grData])

	// Shift towards the end without --data-size would drop a gap's worth.
	plain := grPlain(grData)
	img = c.grImageOf("shift.img", grImage, 0, plain, xtsCipher(t, testKey(1)))
	c.refused(4, []string{img}, []string{"would not be converted", "--data-size"}, args("--metadata-size", "1M", "--resilience", "shift", img)...)

	// A separate metadata device beside a data device of odd size.
	odd := c.grImageOf("odd.img", grData+512, 0, plain, xtsCipher(t, testKey(1)))
	meta := filepath.Join(c.dir, "odd.meta")
	c.refused(4, []string{odd}, []string{"last 512 bytes would stay under the old mapping", fmt.Sprintf("--data-size %d", grData)}, args("--metadata", meta, odd)...)

	// --metadata naming a file of someone's data.
	junk := make([]byte, 4<<20)
	rand.Read(junk)
	jf := c.file("junk.meta", junk)
	img = c.grImageOf("sep.img", grData, 0, plain, xtsCipher(t, testKey(1)))
	c.refused(4, []string{img, jf}, []string{"--metadata holds data", "no cryptshift header"}, args("--metadata", jf, img)...)
	c.must(0, nil, args("--metadata", jf, "--force", img)...)
	sameAs(t, "metadata forced", readFile(t, img), xtsCipher(t, testKey(2)), 0, plain)
}

// Defect 6: resilience none, killed after a window: recover
// --accept-damage leaves the window in flight as it is, and convert never
// converts it again.
func TestGuardAcceptDamageNone(t *testing.T) {
	c := buildCLI(t)
	k1f, k2f := c.file("k1", testKey(1)), c.file("k2", testKey(2))
	plain := grPlain(grData)
	img := c.grImageOf("none.img", grImage, 0, plain, xtsCipher(t, testKey(1)))
	args := []string{"convert", "--old-key-file", k1f, "--new-key-file", k2f, "--resilience", "none", "--force", "--progress", "none", "--metadata-size", "1M", "--window", "512K", img}
	r := c.run([]string{testKillEnv + "=2"}, args...)
	if r.code != 137 && r.code != -1 {
		t.Fatalf("killed run exited %d", r.code)
	}
	const win = 512 << 10
	// Make window 2 half converted, as a crash inside it would.
	b := readFile(t, img)
	part := bytes.Clone(plain[2*win : 2*win+win/2])
	xtsCipher(t, testKey(2)).Encrypt(part, 2*win/512)
	copy(b[2*win:], part)
	os.WriteFile(img, b, 0o600)
	accepted := bytes.Clone(b[2*win : 3*win])
	rec := []string{"recover", "--old-key-file", k1f, "--new-key-file", k2f, img}
	c.refused(9, []string{img}, []string{"window 2"}, rec...)
	c.must(0, nil, append(rec[:1:1], append([]string{"--accept-damage"}, rec[1:]...)...)...)
	c.must(0, nil, args...)
	got := readFile(t, img)
	if !bytes.Equal(got[2*win:3*win], accepted) {
		t.Fatal("the accepted window was converted again")
	}
	sameAs(t, "windows 0-1", got[:2*win], xtsCipher(t, testKey(2)), 0, plain[:2*win])
	sameAs(t, "windows 3-", got[3*win:grData], xtsCipher(t, testKey(2)), 3*win/512, plain[3*win:])
}

// Defect 7 and the finished-rerun rules: a finished record is bound to
// its device, refuses changed options, and says it was complete.
func TestGuardFinishedRecord(t *testing.T) {
	c := buildCLI(t)
	k1f, k2f := c.file("k1", testKey(1)), c.file("k2", testKey(2))
	plain := grPlain(grData)
	img := c.grImageOf("a.img", grData, 0, plain, xtsCipher(t, testKey(1)))
	meta := filepath.Join(c.dir, "done.meta")
	args := func(dev string, extra ...string) []string {
		return append(append([]string{"convert", "--old-key-file", k1f, "--new-key-file", k2f, "--metadata", meta, "--window", "512K"}, extra...), dev)
	}
	c.must(0, nil, args(img, "--progress", "none")...)
	r := c.must(0, nil, args(img, "--progress", "plain")...)
	if strings.Contains(r.stderr+r.stdout, "2562047h") || !strings.Contains(r.stderr+r.stdout, "Already complete") {
		t.Errorf("rerun of a finished conversion: %q %q", r.stdout, r.stderr)
	}
	for _, changed := range [][]string{{"--data-size", "4M"}, {"--new-sector-size", "4096"}, {"--new-cipher", "aes-xts-plain"}, {"--resilience", "checksum"}} {
		c.refused(6, []string{img, meta}, []string{changed[0]}, args(img, append(changed, "--progress", "none")...)...)
	}
	// Another image of the same size, and a smaller one.
	other := c.grImageOf("b.img", grData, 0, plain, xtsCipher(t, testKey(1)))
	c.refused(4, []string{other, meta}, []string{"not of this device"}, args(other, "--progress", "none")...)
	small := c.grImageOf("c.img", grData/2, 0, plain[:grData/2], xtsCipher(t, testKey(1)))
	c.refused(4, []string{small, meta}, []string{"wrong device"}, args(small, "--progress", "none")...)
}

// Defect 8: a converted window changed while paused stops the resume with
// its range named; recover --accept-damage records it and convert goes on.
func TestGuardStuckWindow(t *testing.T) {
	c := buildCLI(t)
	k1f, k2f := c.file("k1", testKey(1)), c.file("k2", testKey(2))
	plain := grPlain(grData)
	flipped := (2*(512<<10) + 700) / 512
	for _, way := range []string{"recover", "force"} {
		t.Run(way, func(t *testing.T) {
			img := c.grImageOf("s"+way+".img", grImage, 0, plain, xtsCipher(t, testKey(1)))
			args := []string{"convert", "--old-key-file", k1f, "--new-key-file", k2f, "--metadata-size", "1M", "--window", "512K", "--progress", "none", img}
			c.pauseAt(3, args...)
			b := readFile(t, img)
			b[2*(512<<10)+700] ^= 1
			os.WriteFile(img, b, 0o600)
			c.refused(4, []string{img}, []string{"window 2 (bytes [1048576, 1572864)", "recover --accept-damage"}, args...)
			if way == "recover" {
				r := c.must(0, nil, "recover", "--accept-damage", "--old-key-file", k1f, "--new-key-file", k2f, img)
				if !strings.Contains(r.stdout, "window 2") {
					t.Errorf("recover --accept-damage does not name the window: %q", r.stdout)
				}
				c.must(0, nil, args...)
			} else {
				c.must(0, nil, append([]string{"convert", "--force"}, args[1:]...)...)
			}
			got := readFile(t, img)[:grData]
			xtsCipher(t, testKey(2)).Decrypt(got, 0)
			for s := 0; s < grData/512; s++ {
				if !bytes.Equal(got[s*512:(s+1)*512], plain[s*512:(s+1)*512]) && s != flipped {
					t.Fatalf("sector %d lost", s)
				}
			}
		})
	}
}

// Issue 12, defect 1: the next rotation after a finished one, for every
// (finished mapping, old-side flags) pair: omitted flags mean the finished
// new mapping, flags spelled out equal work, flags that contradict it
// are a conflict.
func TestGuardNextRotation(t *testing.T) {
	c := buildCLI(t)
	k1, kb := testKey(1), testKey(5)
	k1f, kbf, kb32f, k3f := c.file("k1", k1), c.file("kb", kb), c.file("kb32", kb[:32]), c.file("k3", testKey(3))
	plain := grPlain(grData)
	type finished struct {
		name  string
		flags []string // the first conversion's new side
		key   string   // its key file, "" for none
		equal []string // the next conversion's old side, spelled out
		diff  []string // and contradicting it
	}
	fins := []finished{
		{"xts512", []string{"--new-key-file", kbf}, kbf, []string{"--old-cipher", "aes-xts-plain64", "--old-sector-size", "512"}, []string{"--old-sector-size", "4096"}},
		{"xts4096", []string{"--new-key-file", kbf, "--new-sector-size", "4096"}, kbf, []string{"--old-cipher", "aes-xts-plain64", "--old-sector-size", "4096"}, []string{"--old-sector-size", "512"}},
		{"cbc-essiv", []string{"--new-key-file", kb32f, "--new-cipher", "aes-cbc-essiv:sha256"}, kb32f, []string{"--old-cipher", "aes-cbc-essiv:sha256"}, []string{"--old-cipher", "aes-xts-plain64"}},
		{"none", []string{"--new-cipher", "none"}, "", []string{"--old-cipher", "none"}, []string{"--old-sector-size", "4096"}},
	}
	for _, f := range fins {
		for _, how := range []string{"omitted", "equal", "different"} {
			t.Run(f.name+"/"+how, func(t *testing.T) {
				img := c.grImageOf(f.name+how+".img", grImage, 0, plain, xtsCipher(t, k1))
				first := append(append([]string{"convert", "--old-key-file", k1f, "--metadata-size", "1M", "--window", "512K", "--progress", "none"}, f.flags...), img)
				c.must(0, nil, first...)
				next := []string{"convert", "--new-key-file", k3f, "--metadata-size", "1M", "--window", "512K", "--progress", "none"}
				if f.key != "" {
					next = append(next, "--old-key-file", f.key)
				}
				switch how {
				case "equal":
					next = append(next, f.equal...)
				case "different":
					next = append(next, f.diff...)
				}
				next = append(next, img)
				if how == "different" {
					c.refused(6, []string{img}, []string{f.diff[0], "leave them out"}, next...)
					return
				}
				c.must(0, nil, next...)
				sameAs(t, "second rotation", readFile(t, img)[:grData], xtsCipher(t, testKey(3)), 0, plain)
			})
		}
	}
}
