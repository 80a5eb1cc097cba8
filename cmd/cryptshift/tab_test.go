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
fast   /dev/sdd   /etc/k/old  /etc/k/new     discard,metadata=/m,same-cpu-crypt,submit-from-crypt-cpus,no-read-workqueue,no-write-workqueue
`)
	es, err := readTab(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || es[0].tableOptions != nil || es[2].metadata != "/m" ||
		strings.Join(es[2].tableOptions, " ") != "allow_discards same_cpu_crypt submit_from_crypt_cpus no_read_workqueue no_write_workqueue" {
		t.Fatalf("parsed %+v", es)
	}
	if es[0].name != "data" || es[0].device != "/dev/sdb" || es[0].metadata != "" ||
		es[1].oldKeyFile != "-" || es[1].metadata != "/var/lib/p.meta" || es[1].line != 3 {
		t.Fatalf("parsed %+v", es)
	}
}

func TestReadTabRefuses(t *testing.T) {
	for name, body := range map[string]string{
		"too few fields": "data /dev/sdb /k\n",
		"unknown option": "data /dev/sdb /k1 /k2 discards\n",
		"kernel name":    "data /dev/sdb /k1 /k2 allow_discards\n",
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

func TestParseTableOptions(t *testing.T) {
	got, err := parseTableOptions("discard,no-write-workqueue")
	if err != nil || strings.Join(got, " ") != "allow_discards no_write_workqueue" {
		t.Fatalf("got %q, %v", got, err)
	}
	if got, err := parseTableOptions(""); err != nil || got != nil {
		t.Fatalf("empty list: %q, %v", got, err)
	}
	for _, bad := range []string{"sector-size=4096", "allow_discards", "discard,bogus"} {
		if _, err := parseTableOptions(bad); !errors.Is(err, errclass.Usage) {
			t.Errorf("%q: want a usage error, got %v", bad, err)
		}
	}
}
