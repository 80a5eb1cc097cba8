package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

// benchReport is the --json schema of bench; docs/PERFORMANCE.md is
// written from it, so keep field names stable.
type benchReport struct {
	Date    string         `json:"date"`
	Machine machineInfo    `json:"machine"`
	Ciphers []cipherResult `json:"ciphers"`
	Convert *convertReport `json:"convert,omitempty"`
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

func benchCommand(stderr io.Writer) *cli.Command {
	var specs []string
	for _, s := range sectorcipher.SupportedSpecs() {
		if s != "none" {
			specs = append(specs, s)
		}
	}
	return &cli.Command{
		Name:  "bench",
		Usage: "measure cipher throughput and, with --convert, conversion time against an in-place copy",
		Description: "Like cryptsetup benchmark: per cipher spec, key size and sector size, the sector cipher's\n" +
			"throughput on one core in MB/s (10^6 bytes), with golang.org/x/crypto/xts measured in the\n" +
			"same rounds as a reference for the XTS specs. With --convert SIZE it also builds a\n" +
			"throw-away image of SIZE in --dir and, for each mode, times a full offline conversion\n" +
			"(each in its own process, for its peak RSS) right after an in-place O_DIRECT copy of the\n" +
			"same range with the same window, --repeat times, and reports the median ratio. As root\n" +
			"it drops the page cache before every timed run. Figures from a shared machine only mean\n" +
			"something as ratios measured in the same run.",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "cipher", Value: cli.NewStringSlice(specs...), Usage: "cipher `SPEC` to measure (repeatable; none skips the cipher part)"},
			&cli.DurationFlag{Name: "time", Value: 200 * time.Millisecond, Usage: "`DURATION` of each cipher round"},
			&cli.IntFlag{Name: "repeat", Value: 3, Usage: "`N` cipher rounds per figure, and conversions per mode"},
			&cli.StringFlag{Name: "convert", Usage: "image `SIZE` for the conversion benchmark (default: no conversion benchmark)"},
			&cli.StringFlag{Name: "dir", Usage: "`DIR` to create the image in (default: $TMPDIR or /tmp); put it on the disk you care about"},
			&cli.StringSliceFlag{Name: "mode", Value: cli.NewStringSlice("journal", "checksum", "shift", "none"), Usage: "resilience `MODE` to time (repeatable; none runs with --force)"},
			&cli.StringFlag{Name: "window", Usage: "conversion window `SIZE` (default 8M, 1M for images under 256M)"},
			&cli.IntFlag{Name: "sector-size", Value: 4096, Usage: "dm-crypt sector size `N` of the image's mapping"},
			&cli.BoolFlag{Name: "verify", Value: true, Usage: "decrypt and compare the data after every conversion (outside the timing)"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of tables"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErr("bench takes no arguments, got %q", c.Args().Slice())
			}
			if c.Int("repeat") < 1 {
				return usageErr("--repeat %d: want at least 1", c.Int("repeat"))
			}
			for _, s := range c.StringSlice("cipher") {
				if _, err := sectorcipher.ParseSpec(s); err != nil {
					return usageErr("--cipher: %v", err)
				}
			}
			var cp *convertParams
			if c.String("convert") != "" {
				p, err := convertParamsFrom(c)
				if err != nil {
					return err
				}
				cp = &p
			}
			in := watchSignals(c.Context, stderr)
			defer in.stop()

			rep := benchReport{Date: time.Now().UTC().Format(time.RFC3339), Machine: describeMachine()}
			ciphers, err := benchCiphers(c.StringSlice("cipher"), c.Duration("time"), c.Int("repeat"), stderr)
			if err != nil {
				return err
			}
			rep.Ciphers = ciphers
			if !c.Bool("json") && len(ciphers) > 0 {
				// Printed at once: the conversion part may take minutes.
				fmt.Fprint(c.App.Writer, formatCipherTable(ciphers))
			}
			if cp != nil {
				if rep.Convert, err = runConvertBench(in.ctx, *cp, stderr); err != nil {
					return err
				}
			}
			rep.Machine.LoadAtEnd = loadAvg()
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			if rep.Convert != nil {
				if len(ciphers) > 0 {
					fmt.Fprintln(c.App.Writer)
				}
				fmt.Fprint(c.App.Writer, formatConvertReport(rep.Convert))
			}
			fmt.Fprintf(c.App.Writer, "\n%s, %d cores (%s); load average %s at start, %s at end; %s, %s.\n",
				rep.Machine.CPU, rep.Machine.Cores, rep.Machine.CPUFeatures, rep.Machine.LoadAtStart,
				rep.Machine.LoadAtEnd, rep.Machine.Kernel, rep.Machine.Go)
			return nil
		},
	}
}

func convertParamsFrom(c *cli.Context) (convertParams, error) {
	size, err := parseSize(c.String("convert"))
	if err != nil {
		return convertParams{}, usageErr("--convert: %v", err)
	}
	var window int64
	if c.String("window") != "" {
		if window, err = parseSize(c.String("window")); err != nil {
			return convertParams{}, usageErr("--window: %v", err)
		}
	}
	switch c.Int("sector-size") {
	case 512, 1024, 2048, 4096:
	default:
		return convertParams{}, usageErr("--sector-size %d: want 512, 1024, 2048 or 4096", c.Int("sector-size"))
	}
	modes := c.StringSlice("mode")
	for _, m := range modes {
		if !slices.Contains([]string{"journal", "checksum", "shift", "none"}, m) {
			return convertParams{}, usageErr("--mode %q: want journal, checksum, shift or none", m)
		}
	}
	if _, _, _, err := benchLayout(size, window, c.Int("sector-size")); err != nil {
		return convertParams{}, err
	}
	dir := c.String("dir")
	if dir == "" {
		dir = os.TempDir()
	}
	return convertParams{dir: dir, size: size, window: window, sectorSize: c.Int("sector-size"),
		repeat: c.Int("repeat"), modes: modes, verify: c.Bool("verify")}, nil
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
