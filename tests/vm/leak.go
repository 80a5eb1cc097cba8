package vm

import (
	"bytes"
	"encoding/hex"
	"path"
	"strings"
)

// Keys must never reach a log: cryptshift prints no key, and a guest script
// only ever compares one (`dmsetup table --showkeys ... | grep -q`). Every
// boot's console and qemu's own output are searched for the key material
// the boot was given, so a leak anywhere in the real-kernel suite fails the
// test that caused it.

// minLeakLen is the shortest secret searched for; shorter ones (test
// passphrases such as "pass0") would match ordinary text.
const minLeakLen = 16

// bootSecrets are the secrets among a boot's files: every file whose name
// says key or pass, raw, and decoded when its content is hex text (the
// *.hex files the scripts grep tables with).
func bootSecrets(files map[string][]byte) [][]byte {
	var out [][]byte
	for p, b := range files {
		base := strings.ToLower(path.Base(p))
		if !strings.Contains(base, "key") && !strings.Contains(base, "pass") {
			continue
		}
		if raw, err := hex.DecodeString(strings.TrimSpace(string(b))); err == nil && len(raw) > 0 {
			b = raw
		}
		if len(b) >= minLeakLen {
			out = append(out, b)
		}
	}
	return out
}

// leakForms are the byte strings whose presence in an output means a
// secret leaked: raw, and hex in both cases, whole and each aligned 16-byte
// piece (an XTS key is two keys, and a table could print either).
func leakForms(secrets [][]byte) [][]byte {
	var forms [][]byte
	for _, k := range secrets {
		pieces := [][]byte{k}
		for i := 0; i+16 <= len(k) && len(k) > 16; i += 16 {
			pieces = append(pieces, k[i:i+16])
		}
		for _, p := range pieces {
			h := hex.EncodeToString(p)
			forms = append(forms, p, []byte(h), []byte(strings.ToUpper(h)))
		}
	}
	return forms
}

// Leaks names each output of the boot that holds one of its secrets.
func Leaks(cfg Config, res *Result) []string {
	forms := leakForms(bootSecrets(cfg.Files))
	var found []string
	for _, o := range []struct{ name, text string }{{"guest console", res.Console}, {"qemu stderr", res.QemuStderr}} {
		for _, f := range forms {
			if bytes.Contains([]byte(o.text), f) {
				found = append(found, o.name)
				break
			}
		}
	}
	return found
}
