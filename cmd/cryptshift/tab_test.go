package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/errclass"
)

func writeTab(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "tab")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadTab(t *testing.T) {
	p := writeTab(t, `# converting data to a new key
data   /dev/sdb   /etc/k/old  /etc/k/new
plain  /dev/sdc1  -           /etc/k/p.new   metadata=/var/lib/p.meta  # encrypting
`)
	es, err := readTab(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].name != "data" || es[0].device != "/dev/sdb" || es[0].metadata != "" ||
		es[1].oldKeyFile != "-" || es[1].metadata != "/var/lib/p.meta" || es[1].line != 3 {
		t.Fatalf("parsed %+v", es)
	}
}

func TestReadTabRefuses(t *testing.T) {
	for name, body := range map[string]string{
		"too few fields": "data /dev/sdb /k\n",
		"unknown option": "data /dev/sdb /k1 /k2 discard\n",
		"duplicate name": "a /dev/sdb /k1 /k2\na /dev/sdc /k1 /k2\n",
		"slash in name":  "x/y /dev/sdb /k1 /k2\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := readTab(writeTab(t, body))
			if !errors.Is(err, errclass.Usage) {
				t.Fatalf("want a usage error, got %v", err)
			}
			if !strings.Contains(err.Error(), ":1") && !strings.Contains(err.Error(), ":2") {
				t.Fatalf("error does not name the line: %v", err)
			}
		})
	}
}
