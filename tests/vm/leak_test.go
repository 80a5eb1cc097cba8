package vm

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/internal/testkit"
)

func TestLeaksFindsKeysInOutput(t *testing.T) {
	key := testkit.Key(64, 3)
	other := testkit.Key(64, 9)
	cfg := Config{Files: map[string][]byte{
		"/etc/vm/keyB":     key,
		"/etc/vm/keyA.hex": []byte(hex.EncodeToString(other) + "\n"),
		"/etc/vm/plain":    testkit.Plaintext(64, 1), // not a secret: its name says so
		"/etc/vm/pass0":    []byte("pass0"),          // too short to search for
	}}
	cases := []struct {
		name    string
		res     Result
		leakers []string
	}{
		{"clean", Result{Console: "0 8 crypt aes-xts-plain64 0000 0 254:0 0\n" + string(testkit.Plaintext(64, 1))}, nil},
		{"whole key in hex on the console", Result{Console: "table " + hex.EncodeToString(key)}, []string{"guest console"}},
		{"upper-case half key", Result{Console: strings.ToUpper(hex.EncodeToString(key[32:48]))}, []string{"guest console"}},
		{"a key given as hex, printed raw by qemu", Result{QemuStderr: "x" + string(other) + "x"}, []string{"qemu stderr"}},
		{"both", Result{Console: hex.EncodeToString(other[16:32]), QemuStderr: hex.EncodeToString(key)}, []string{"guest console", "qemu stderr"}},
	}
	for _, c := range cases {
		got := Leaks(cfg, &c.res)
		if strings.Join(got, ",") != strings.Join(c.leakers, ",") {
			t.Errorf("%s: leaks in %v, want %v", c.name, got, c.leakers)
		}
	}
}
