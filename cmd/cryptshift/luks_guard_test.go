package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// luksImage formats an image file with stock cryptsetup (no device-mapper
// needed) and returns its path and the passphrase file. Small KDF costs
// keep the machine free for others.
func luksImage(t *testing.T, dir, typ string) (string, string) {
	t.Helper()
	cs, err := exec.LookPath("cryptsetup")
	if err != nil {
		t.Fatalf("cryptsetup is needed to make LUKS test images (scripts/test.sh installs it via tests/vm/install-deps.sh): %v", err)
	}
	img := filepath.Join(dir, typ+".img")
	pass := filepath.Join(dir, typ+".pass")
	if err := os.WriteFile(pass, []byte("guard test passphrase"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	args := []string{"luksFormat", "--type", typ, "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
	if typ == "luks2" {
		args = append(args, "--luks2-metadata-size", "16k", "--luks2-keyslots-size", "1m", "--offset", "4096")
	}
	out, err := exec.Command(cs, append(args, img, pass)...).CombinedOutput()
	if err != nil {
		t.Fatalf("cryptsetup %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return img, pass
}

func luksUUID(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("cryptsetup", "luksUUID", img).Output()
	if err != nil {
		t.Fatalf("cryptsetup luksUUID %s: %v", img, err)
	}
	return strings.TrimSpace(string(out))
}

// TestConvertRefusesLUKS: converting a LUKS volume's data area as a plain
// mapping would strand every passphrase on the old volume key, so convert
// refuses it, offline and online, before touching the device: LUKS volumes
// are converted only with their passphrases (--key-file,
// TestLUKS2ConvertCLI, TestLUKS1ConvertCLI).
func TestConvertRefusesLUKS(t *testing.T) {
	c := buildCLI(t)
	oldKey := c.file("old.key", testKey(1))
	newKey := c.file("new.key", testKey(2))
	for _, typ := range []string{"luks1", "luks2", "luks2-secondary"} {
		t.Run(typ, func(t *testing.T) {
			img, _ := luksImage(t, t.TempDir(), strings.TrimSuffix(typ, "-secondary"))
			uuid := luksUUID(t, img)
			version := "LUKS1"
			if typ != "luks1" {
				version = "LUKS2"
			}
			if typ == "luks2-secondary" {
				// A damaged primary copy leaves a LUKS2 volume that
				// cryptsetup still opens from its secondary copy.
				f, err := os.OpenFile(img, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt(make([]byte, 4096), 0); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			before := hashFile(t, img)
			for _, online := range [][]string{nil, {"--online", "cryptshift-test-nonexistent"}} {
				args := append([]string{"convert", "--old-key-file", oldKey, "--new-key-file", newKey}, online...)
				r := c.must(4, nil, append(args, img)...)
				for _, want := range []string{version + " volume", uuid, "keyslots wrapping the old volume key"} {
					if !strings.Contains(r.stderr, want) {
						t.Errorf("convert %v: stderr %q lacks %q", online, r.stderr, want)
					}
				}
				if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n != 0 {
					t.Errorf("convert %v: error is %d lines, want one:\n%s", online, n+1, r.stderr)
				}
				if hashFile(t, img) != before {
					t.Fatalf("convert %v changed the LUKS image", online)
				}
			}
			for _, cmd := range []string{"recover", "verify"} {
				r := c.run(nil, cmd, "--old-key-file", oldKey, "--new-key-file", newKey, img)
				if r.code == 0 || !strings.Contains(r.stderr, version+" volume") || !strings.Contains(r.stderr, uuid) {
					t.Errorf("%s on a %s image: exit %d, stderr %q; want a failure naming the LUKS volume", cmd, typ, r.code, r.stderr)
				}
			}
			if hashFile(t, img) != before {
				t.Fatal("recover or verify changed the LUKS image")
			}
		})
	}
}
