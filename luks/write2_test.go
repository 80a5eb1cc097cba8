package luks

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/cryptshift/cryptshift/blockdev"
)

// openDev opens an image file read-write as a blockdev.Device.
func openDev(t *testing.T, path string) *blockdev.File {
	t.Helper()
	f, err := blockdev.Open(path, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readLUKS2File(t *testing.T, path string) *LUKS2 {
	t.Helper()
	v, done := openFile(t, path)
	defer done()
	if v.V2 == nil {
		t.Fatalf("%s is not LUKS2", path)
	}
	return v.V2
}

var epochLine = regexp.MustCompile(`(?m)^Epoch:.*$`)

// luksDumpNoEpoch is luksDump's text with the Epoch (seqid) line taken out.
func luksDumpNoEpoch(t *testing.T, path string) string {
	t.Helper()
	return epochLine.ReplaceAllString(runCS(t, "luksDump", path), "Epoch: -")
}

// addPassphrases adds keyslots with cryptsetup, one per extra KDF option
// set, and returns every passphrase file (the format one first).
func addPassphrases(t *testing.T, im image, kdfs ...[]string) []string {
	t.Helper()
	passes := []string{im.pass}
	for i, k := range kdfs {
		pf := filepath.Join(filepath.Dir(im.path), fmt.Sprintf("pass%d", i+1))
		if err := os.WriteFile(pf, []byte(fmt.Sprintf("extra %d", i+1)), 0o600); err != nil {
			t.Fatal(err)
		}
		runCS(t, join([]string{"luksAddKey", "--batch-mode", "--key-file", im.pass}, k, []string{im.path, pf})...)
		passes = append(passes, pf)
	}
	return passes
}

// TestLUKS2RoundTrip: a header cryptsetup made, read and committed again
// unchanged (seqid + 1), is one cryptsetup loads with the same content and
// opens with the same passphrases, for every KDF, 1 and 8 keyslots, a
// token, a label and subsystem, and several metadata sizes.
func TestLUKS2RoundTrip(t *testing.T) {
	token := `{"type":"cryptshift-test","keyslots":["0"],"opaque":{"n":1,"s":"a<b>&c/d"},"list":[1,2.5,-3e2]}`
	cases := []struct {
		name  string
		size  int64
		opts  []string
		extra [][]string
		token bool
	}{
		{"argon2id", 5 << 20, join(luks2Small, argon2idCheap), nil, false},
		{"argon2i", 5 << 20, join(luks2Small, argon2iCheap), nil, false},
		{"pbkdf2-sha512", 5 << 20, join(luks2Small, pbkdf2Cheap, []string{"--hash", "sha512"}), nil, false},
		{"eight-keyslots", 5 << 20, join(luks2Small, pbkdf2Cheap), [][]string{argon2idCheap, pbkdf2Cheap, argon2iCheap, pbkdf2Cheap, argon2idCheap, pbkdf2Cheap, argon2idCheap}, false},
		{"token", 5 << 20, join(luks2Small, argon2idCheap), nil, true},
		{"label-subsystem", 5 << 20, join(luks2Small, pbkdf2Cheap, []string{"--label", "my label", "--subsystem", "sub-1"}), nil, false},
		{"metadata-64k", 8 << 20, join([]string{"--type", "luks2", "--luks2-metadata-size", "64k", "--luks2-keyslots-size", "1m", "--offset", "12288"}, pbkdf2Cheap), [][]string{argon2idCheap}, false},
		{"default-layout", 20 << 20, join([]string{"--type", "luks2"}, argon2idCheap), nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			im := format(t, c.size, "round trip "+c.name, c.opts...)
			passes := addPassphrases(t, im, c.extra...)
			if c.token {
				tf := filepath.Join(filepath.Dir(im.path), "token.json")
				if err := os.WriteFile(tf, []byte(token), 0o600); err != nil {
					t.Fatal(err)
				}
				runCS(t, "token", "import", "--json-file", tf, "--token-id", "5", im.path)
			}
			before := readImage(t, im.path)
			jsonBefore := runCS(t, "luksDump", "--dump-json-metadata", im.path)
			dumpBefore := luksDumpNoEpoch(t, im.path)
			h := readLUKS2File(t, im.path)
			d, err := h.Draft()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(d.JSON, h.Meta.Raw) {
				t.Error("the draft's JSON differs from the text cryptsetup wrote (cryptsetup writes compact JSON)")
			}
			if err := CommitLUKS2(openDev(t, im.path), d); err != nil {
				t.Fatalf("CommitLUKS2: %v", err)
			}
			after := readImage(t, im.path)
			// Byte for byte what cryptsetup had, but the seqid and checksum
			// of each copy.
			for i := 0; i < 2; i++ {
				off := i * int(h.HdrSize)
				a, b := bytes.Clone(before[off:off+int(h.HdrSize)]), bytes.Clone(after[off:off+int(h.HdrSize)])
				clear(a[16:24])
				clear(b[16:24])
				clear(a[448:512])
				clear(b[448:512])
				if !bytes.Equal(a, b) {
					t.Errorf("copy %d differs beyond seqid and checksum", i)
				}
			}
			if !bytes.Equal(before[2*h.HdrSize:], after[2*h.HdrSize:]) {
				t.Error("the commit wrote beyond the two header copies")
			}
			h2 := readLUKS2File(t, im.path)
			if h2.SeqID != h.SeqID+1 || h2.Primary != nil || h2.Secondary != nil {
				t.Errorf("after commit: seqid %d (was %d), primary %v, secondary %v", h2.SeqID, h.SeqID, h2.Primary, h2.Secondary)
			}
			if got := runCS(t, "luksDump", "--dump-json-metadata", im.path); !jsonEqual(t, []byte(got), []byte(jsonBefore)) {
				t.Errorf("cryptsetup's JSON dump changed:\n%s\nwas\n%s", got, jsonBefore)
			}
			if got := luksDumpNoEpoch(t, im.path); got != dumpBefore {
				t.Errorf("luksDump changed:\n%s\nwas\n%s", got, dumpBefore)
			}
			f := dumpFields(runCS(t, "luksDump", im.path))
			if f["Epoch"] != fmt.Sprint(h.SeqID+1) {
				t.Errorf("luksDump epoch %q, want %d", f["Epoch"], h.SeqID+1)
			}
			for _, pf := range passes {
				runCS(t, "open", "--test-passphrase", "--key-file", pf, im.path)
			}
			// cryptsetup did not need to repair anything on those loads.
			if !bytes.Equal(readImage(t, im.path)[:2*h.HdrSize], after[:2*h.HdrSize]) {
				t.Error("cryptsetup rewrote the committed header on load")
			}
		})
	}
}
