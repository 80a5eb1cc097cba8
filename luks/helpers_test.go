package luks

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// cryptsetup returns the path of stock cryptsetup. The golden tests are
// the point of this package, so a machine without it fails them loudly
// (scripts/test.sh installs it via tests/vm/install-deps.sh).
func cryptsetup(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("cryptsetup")
	if err != nil {
		t.Fatalf("stock cryptsetup is needed for the LUKS golden tests (install cryptsetup-bin, or run tests/vm/install-deps.sh): %v", err)
	}
	return p
}

func execCS(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	return exec.Command(cryptsetup(t), args...)
}

func runCS(t *testing.T, args ...string) string {
	t.Helper()
	cmd := execCS(t, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("cryptsetup %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// image is a LUKS image file made by stock cryptsetup, with the passphrase
// of its first keyslot in a file.
type image struct {
	path, pass string
}

// format makes an image of size bytes with luksFormat and the given
// options (KDF costs are the caller's: keep them small).
func format(t *testing.T, size int64, pass string, opts ...string) image {
	t.Helper()
	dir := t.TempDir()
	im := image{path: filepath.Join(dir, "luks.img"), pass: filepath.Join(dir, "pass")}
	if err := os.WriteFile(im.pass, []byte(pass), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(im.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	args := append([]string{"luksFormat", "--batch-mode"}, opts...)
	runCS(t, append(args, im.path, im.pass)...)
	return im
}

// csKey is the volume key cryptsetup itself recovers with a passphrase
// file (luksDump --dump-volume-key prints it as hex).
func csKey(t *testing.T, img, passFile string, extra ...string) []byte {
	t.Helper()
	args := append([]string{"luksDump", "--dump-volume-key", "--batch-mode", "--key-file", passFile}, extra...)
	return parseKeyDump(t, runCS(t, append(args, img)...), "MK dump:")
}

// csUnboundKey is the key of an unbound LUKS2 keyslot, as cryptsetup
// dumps it.
func csUnboundKey(t *testing.T, img, passFile string, slot string) []byte {
	t.Helper()
	return parseKeyDump(t, runCS(t, "luksDump", "--unbound", "--key-slot", slot, "--batch-mode", "--key-file", passFile, img), "Unbound Key:")
}

func parseKeyDump(t *testing.T, out, label string) []byte {
	t.Helper()
	var hexs strings.Builder
	in := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, label); ok {
			in = true
			line = rest
		} else if in && !strings.HasPrefix(line, "\t") {
			break
		}
		if in {
			hexs.WriteString(strings.ReplaceAll(strings.TrimSpace(line), " ", ""))
		}
	}
	k, err := hex.DecodeString(hexs.String())
	if err != nil || len(k) == 0 {
		t.Fatalf("no volume key in luksDump output (%v):\n%s", err, out)
	}
	return k
}

// dumpFields returns "Name: value" lines of a luksDump, first occurrence
// of each name (tab-indented segment lines included).
func dumpFields(out string) map[string]string {
	f := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		name, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		if _, seen := f[name]; !seen {
			f[name] = strings.TrimSpace(val)
		}
	}
	return f
}

func atoi64(t *testing.T, s string) int64 {
	t.Helper()
	s, _, _ = strings.Cut(s, " ")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

// openFile opens a LUKS image with this package.
func openFile(t *testing.T, path string) (*Volume, func()) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(f, st.Size())
	if err != nil {
		f.Close()
		t.Fatalf("Open %s: %v", path, err)
	}
	return v, func() { f.Close() }
}

func readPass(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sharedData returns the directory of the LUKS images made by other
// people's tools (../shared/luks-testdata beside the checkout in CI; a
// worktree may sit deeper, so every parent of the module root is tried).
// Missing data fails the test: a silent skip would hide the comparison.
func sharedData(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		p := filepath.Join(filepath.Dir(d), "shared", "luks-testdata")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	t.Fatalf("shared LUKS test data not found in ../shared/luks-testdata relative to the module root %s or any parent", dir)
	return ""
}

// unxz decompresses a shared file (name without .xz, or a .tar.xz) into a
// temporary directory and returns that directory.
func unxz(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join(sharedData(t), name)
	dir := t.TempDir()
	var cmd *exec.Cmd
	if strings.HasSuffix(name, ".tar.xz") {
		cmd = exec.Command("tar", "-xJf", src, "-C", dir)
	} else {
		out, err := os.Create(filepath.Join(dir, strings.TrimSuffix(name, ".xz")))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		cmd = exec.Command("xz", "-dc", src)
		cmd.Stdout = out
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("decompress %s (needs xz): %v\n%s", name, err, errb.String())
	}
	return dir
}
