package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/cryptshift/cryptshift/errclass"
)

// defaultTab lists the conversions `recover --all` brings up at boot.
const defaultTab = "/etc/cryptshift/cryptshifttab"

type tabEntry struct {
	line                   int
	name, device           string
	oldKeyFile, newKeyFile string
	metadata               string
	tableOptions           []string // dm-crypt option names
}

// crypttabTableOptions maps the /etc/crypttab names of the format-neutral
// dm-crypt options to the kernel's: the table file and --table-options
// take the names admins already write in crypttab.
var crypttabTableOptions = map[string]string{
	"discard":                "allow_discards",
	"same-cpu-crypt":         "same_cpu_crypt",
	"submit-from-crypt-cpus": "submit_from_crypt_cpus",
	"no-read-workqueue":      "no_read_workqueue",
	"no-write-workqueue":     "no_write_workqueue",
	"high-priority":          "high_priority",
}

// tableOption returns the dm-crypt name of a table option given by its
// crypttab name, ok false for anything else.
func tableOption(name string) (string, bool) {
	o, ok := crypttabTableOptions[name]
	return o, ok
}

// parseTableOptions parses --table-options: crypttab names separated by
// commas.
func parseTableOptions(list string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(list, ",") {
		if n == "" {
			continue
		}
		o, ok := tableOption(n)
		if !ok {
			return nil, usageErr("--table-options: %q is not one of discard, same-cpu-crypt, submit-from-crypt-cpus, no-read-workqueue, no-write-workqueue, high-priority", n)
		}
		out = append(out, o)
	}
	return out, nil
}

// readTab parses the table file: one conversion per line, fields separated
// by blanks, # starts a comment. A malformed file is refused whole: at boot
// a guess is worse than a clear error.
func readTab(path string) ([]tabEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: --tab: %w", errclass.Usage, err)
	}
	defer f.Close()
	var out []tabEntry
	seen := map[string]int{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fs := strings.Fields(line)
		if len(fs) == 0 {
			continue
		}
		if len(fs) < 4 || len(fs) > 5 {
			return nil, fmt.Errorf("%w: %s:%d: want NAME DEVICE OLD-KEY-FILE NEW-KEY-FILE [metadata=PATH,discard,...], got %d fields", errclass.Usage, path, n, len(fs))
		}
		e := tabEntry{line: n, name: fs[0], device: fs[1], oldKeyFile: fs[2], newKeyFile: fs[3]}
		if strings.ContainsAny(e.name, "/") {
			return nil, fmt.Errorf("%w: %s:%d: NAME %q must not contain /", errclass.Usage, path, n, e.name)
		}
		if len(fs) == 5 {
			for _, opt := range strings.Split(fs[4], ",") {
				k, v, _ := strings.Cut(opt, "=")
				o, isTableOption := tableOption(opt)
				switch {
				case k == "metadata" && v != "":
					e.metadata = v
				case isTableOption:
					e.tableOptions = append(e.tableOptions, o)
				default:
					return nil, fmt.Errorf("%w: %s:%d: unknown option %q", errclass.Usage, path, n, opt)
				}
			}
		}
		if prev, dup := seen[e.name]; dup {
			return nil, fmt.Errorf("%w: %s:%d: NAME %s already on line %d", errclass.Usage, path, n, e.name, prev)
		}
		seen[e.name] = n
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", errclass.Usage, path, err)
	}
	return out, nil
}
