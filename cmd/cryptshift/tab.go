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
			return nil, fmt.Errorf("%w: %s:%d: want NAME DEVICE OLD-KEY-FILE NEW-KEY-FILE [metadata=PATH], got %d fields", errclass.Usage, path, n, len(fs))
		}
		e := tabEntry{line: n, name: fs[0], device: fs[1], oldKeyFile: fs[2], newKeyFile: fs[3]}
		if strings.ContainsAny(e.name, "/") {
			return nil, fmt.Errorf("%w: %s:%d: NAME %q must not contain /", errclass.Usage, path, n, e.name)
		}
		if len(fs) == 5 {
			for _, opt := range strings.Split(fs[4], ",") {
				k, v, _ := strings.Cut(opt, "=")
				switch {
				case k == "metadata" && v != "":
					e.metadata = v
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
