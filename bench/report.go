// Package bench measures cryptshift: the sector ciphers' throughput per
// spec, key and sector size, and the time of a full offline conversion
// against an in-place copy of the same range (docs/PERFORMANCE.md is
// written from its reports). The command line's bench subcommand parses
// flags and calls Run.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cryptshift/cryptshift/errclass"
)

// Report is the --json schema of bench; docs/PERFORMANCE.md is
// written from it, so keep field names stable.
type Report struct {
	Date    string         `json:"date"`
	Machine machineInfo    `json:"machine"`
	Ciphers []cipherResult `json:"ciphers"`
	// Convert holds one conversion report per sector size.
	Convert []*ConvertReport `json:"convert,omitempty"`
}

// machineInfo is what a figure needs next to it to mean anything: on a
// shared machine the load average matters as much as the CPU model.
type machineInfo struct {
	CPU          string `json:"cpu"`
	Cores        int    `json:"cores"`
	CPUFeatures  string `json:"cpu_features"`
	Kernel       string `json:"kernel"`
	Go           string `json:"go"`
	LoadAtStart  string `json:"loadavg_start"`
	LoadAtEnd    string `json:"loadavg_end"`
	Root         bool   `json:"root"`
	GOMAXPROCS   int    `json:"gomaxprocs"`
	CipherThread string `json:"cipher_threads"`
}

// Params is one bench run: the cipher table for Ciphers (none: no table),
// each figure the median of Repeat rounds of Time, and the conversion
// benchmark when Convert is set.
type Params struct {
	Ciphers []string
	Time    time.Duration
	Repeat  int
	Convert *ConvertParams
	JSON    bool // one JSON object (Report) instead of tables
}

// Run measures what p asks for and writes the report to stdout; progress
// goes to stderr. exe is the cryptshift binary, which runs each timed
// conversion in a process of its own (ChildCommand).
func Run(ctx context.Context, p Params, exe string, stdout, stderr io.Writer) error {
	rep := Report{Date: time.Now().UTC().Format(time.RFC3339), Machine: describeMachine()}
	ciphers, err := benchCiphers(p.Ciphers, p.Time, p.Repeat, stderr)
	if err != nil {
		return err
	}
	rep.Ciphers = ciphers
	if !p.JSON && len(ciphers) > 0 {
		// Printed at once: the conversion part may take minutes.
		fmt.Fprint(stdout, formatCipherTable(ciphers))
	}
	if p.Convert != nil {
		if rep.Convert, err = runConvertBench(ctx, *p.Convert, exe, stderr); err != nil {
			return err
		}
	}
	rep.Machine.LoadAtEnd = loadAvg()
	if p.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	if rep.Convert != nil {
		if len(ciphers) > 0 {
			fmt.Fprintln(stdout)
		}
		for i, cr := range rep.Convert {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			fmt.Fprint(stdout, formatConvertReport(cr))
		}
	}
	fmt.Fprintf(stdout, "\n%s, %d cores (%s); load average %s at start, %s at end; %s, %s.\n",
		rep.Machine.CPU, rep.Machine.Cores, rep.Machine.CPUFeatures, rep.Machine.LoadAtStart,
		rep.Machine.LoadAtEnd, rep.Machine.Kernel, rep.Machine.Go)
	return nil
}

// Check refuses parameters the conversion benchmark cannot run with,
// before anything is built.
func (p ConvertParams) Check() error {
	if len(p.SectorSizes) == 0 {
		return fmt.Errorf("%w: --sector-size: want at least one", errclass.Usage)
	}
	for _, ss := range p.SectorSizes {
		switch ss {
		case 512, 1024, 2048, 4096:
		default:
			return fmt.Errorf("%w: --sector-size %d: want 512, 1024, 2048 or 4096", errclass.Usage, ss)
		}
		if _, _, _, err := Layout(p.Size, p.Window, ss); err != nil {
			return err
		}
	}
	for _, m := range p.Modes {
		if !slices.Contains([]string{"journal", "checksum", "shift", "none"}, m) {
			return fmt.Errorf("%w: --mode %q: want journal, checksum, shift or none", errclass.Usage, m)
		}
	}
	return nil
}

func describeMachine() machineInfo {
	m := machineInfo{CPU: cpuModel(), Cores: runtime.NumCPU(), CPUFeatures: cipherFeatures(),
		Go: runtime.Version(), LoadAtStart: loadAvg(), Root: os.Geteuid() == 0,
		GOMAXPROCS: runtime.GOMAXPROCS(0), CipherThread: "1 goroutine (figures are per core)"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	return m
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
