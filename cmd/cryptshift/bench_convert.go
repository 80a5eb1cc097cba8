package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// benchChildName is the hidden subcommand that runs one timed conversion.
// Each conversion runs in its own process so that its peak RSS is its
// own, not the benchmark's buffers or an earlier conversion's heap.
const benchChildName = "bench-convert-child"

const benchCipher = "aes-xts-plain64"

type convertParams struct {
	dir        string
	size       int64
	window     int64 // 0: the demo layout's
	sectorSize int
	repeat     int
	modes      []string
	verify     bool
}

// convertRun is one copy and the conversion timed right after it.
type convertRun struct {
	CopySeconds    float64 `json:"copy_s"`
	ConvertSeconds float64 `json:"convert_s"`
	Ratio          float64 `json:"ratio"`
	// PeakRSSKiB is the child's VmHWM at its end; MaxRSSKiB its
	// ru_maxrss, which may also count the parent's pages the child
	// shared until exec (Go starts children with vfork).
	PeakRSSKiB int64 `json:"peak_rss_kib"`
	MaxRSSKiB  int64 `json:"ru_maxrss_kib"`
	// CPUSeconds is the child's user and system time: close to or above
	// ConvertSeconds on a 2-core machine means the conversion waited for
	// the CPU, well below means it waited for the disk.
	CPUSeconds float64 `json:"cpu_s"`
	Verified   bool    `json:"verified"`
}

type modeResult struct {
	Mode           string       `json:"mode"`
	Runs           []convertRun `json:"runs"`
	MedianRatio    float64      `json:"median_ratio"`
	MedianCopyS    float64      `json:"median_copy_s"`
	MedianConvertS float64      `json:"median_convert_s"`
	MedianCPUS     float64      `json:"median_cpu_s"`
	ConvertMBps    float64      `json:"convert_mb_per_s"`
	CopyMBps       float64      `json:"copy_mb_per_s"`
	PeakRSSKiB     int64        `json:"peak_rss_kib"` // the largest over the runs
}

type convertReport struct {
	Dir        string `json:"dir"`
	FSType     string `json:"fs_type"`
	ImageSize  int64  `json:"image_size"`
	DataSize   int64  `json:"data_size"`
	MetaSize   int64  `json:"meta_size"`
	Window     int64  `json:"window"`
	Cipher     string `json:"cipher"`
	KeyBits    int    `json:"key_bits"`
	SectorSize int    `json:"sector_size"`
	Repeat     int    `json:"repeat"`
	// CacheDropped says whether the page cache was dropped before every
	// timed run; CacheNote says why not when it was not.
	CacheDropped bool         `json:"cache_dropped"`
	CacheNote    string       `json:"cache_note,omitempty"`
	Modes        []modeResult `json:"modes"`
}

// benchLayout plans the image: the demo's metadata size and window, and
// a data area one window short of the metadata so that shift mode has its
// gap. Every mode converts this same data size, so all are timed against
// copies of the same number of bytes.
func benchLayout(size, window int64, sectorSize int) (metaSize, win, dataSize int64, err error) {
	metaSize, win, err = demoLayout(size)
	if err != nil {
		return 0, 0, 0, err
	}
	if window != 0 {
		if window%4096 != 0 || window%int64(sectorSize) != 0 {
			return 0, 0, 0, usageErr("--window %d: want a multiple of 4 KiB and of the sector size", window)
		}
		win = window
	}
	dataSize = (size - metaSize - win) / int64(sectorSize) * int64(sectorSize)
	if dataSize < win {
		return 0, 0, 0, usageErr("--convert %s leaves no room for a window of data beside %s of metadata and the shift gap",
			formatBytes(uint64(size)), formatBytes(uint64(metaSize)))
	}
	return metaSize, win, dataSize, nil
}

// dropCaches writes back dirty pages and drops the page cache, so that
// the next run reads from the disk and is not helped by the previous one.
func dropCaches() error {
	if os.Geteuid() != 0 {
		return errors.New("not root")
	}
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop page cache: %w", err)
	}
	return nil
}

// fsType names the file system dir is on, for the report: results on
// tmpfs or overlay mean something else than on a disk.
func fsType(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	names := map[int64]string{0xEF53: "ext2/3/4", 0x58465342: "xfs", 0x9123683E: "btrfs",
		0x01021994: "tmpfs", 0x794c7630: "overlay", 0x2FC12FC1: "zfs", 0xF2F52010: "f2fs"}
	if n, ok := names[int64(st.Type)]; ok {
		return n
	}
	return fmt.Sprintf("0x%x", st.Type)
}

// copyInPlace is the baseline: the same range read and rewritten window
// by window with O_DIRECT, flushed after each window as the conversion
// flushes, so the ratio isolates what the conversion adds to the I/O it
// cannot avoid.
func copyInPlace(path string, off, size, window int64) (time.Duration, error) {
	d, err := blockdev.Open(path, blockdev.Options{Exclusive: true, Direct: true})
	if err != nil {
		return 0, fmt.Errorf("copy: %w", err)
	}
	defer d.Close()
	buf := blockdev.AlignedBuffer(int(window))
	start := time.Now()
	for pos := int64(0); pos < size; pos += window {
		b := buf[:min(window, size-pos)]
		if _, err := d.ReadAt(b, off+pos); err != nil {
			return 0, fmt.Errorf("copy: %w", err)
		}
		if _, err := d.WriteAt(b, off+pos); err != nil {
			return 0, fmt.Errorf("copy: %w", err)
		}
		if err := d.Flush(); err != nil {
			return 0, fmt.Errorf("copy: %w", err)
		}
	}
	return time.Since(start), nil
}

// verifyBenchData decrypts [off, off+size) of the image with key and
// compares it with the plaintext the image was built from.
func verifyBenchData(path string, off, size int64, key []byte, sectorSize int) error {
	spec, err := sectorcipher.ParseSpec(benchCipher)
	if err != nil {
		return err
	}
	c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: key, SectorSize: sectorSize})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	// O_DIRECT, so what is compared is what reached the file, not a page
	// cached before the conversion rewrote it.
	d, err := blockdev.Open(path, blockdev.Options{ReadOnly: true, Direct: true})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer d.Close()
	r, err := blockdev.Region(d, off, size)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	return compareDemo(r, size, c)
}

// childResult is what the child prints on stdout.
type childResult struct {
	Seconds   float64 `json:"seconds"`
	NewOffset int64   `json:"new_offset"`
	VmHWMKiB  int64   `json:"vmhwm_kib"`
}

func benchChildCommand() *cli.Command {
	return &cli.Command{
		Name:   benchChildName,
		Hidden: true,
		Usage:  "internal to bench: one timed conversion",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "image", Required: true},
			&cli.StringFlag{Name: "old-key-file", Required: true},
			&cli.StringFlag{Name: "new-key-file", Required: true},
			&cli.StringFlag{Name: "mode", Required: true},
			&cli.Int64Flag{Name: "data-offset"},
			&cli.Int64Flag{Name: "data-size", Required: true},
			&cli.Int64Flag{Name: "window", Required: true},
			&cli.Int64Flag{Name: "meta-size", Required: true},
			&cli.IntFlag{Name: "sector-size", Required: true},
		},
		Action: func(c *cli.Context) error {
			oldKey, err := os.ReadFile(c.String("old-key-file"))
			if err != nil {
				return fmt.Errorf("%w: %w", errclass.Usage, err)
			}
			newKey, err := os.ReadFile(c.String("new-key-file"))
			if err != nil {
				return fmt.Errorf("%w: %w", errclass.Usage, err)
			}
			off := c.Int64("data-offset")
			mode := c.String("mode")
			ss := c.Int("sector-size")
			cfg := engine.Config{
				Old:        engine.Side{Cipher: benchCipher, Key: oldKey, SectorSize: ss},
				New:        engine.Side{Cipher: benchCipher, Key: newKey, SectorSize: ss},
				DataOffset: &off, DataSize: c.Int64("data-size"),
				Mode: mode, Window: c.Int64("window"), MetaSize: c.Int64("meta-size"),
				Force: mode == "none",
			}
			d, err := blockdev.Open(c.String("image"), blockdev.Options{Exclusive: true, Direct: true})
			if err != nil {
				return fmt.Errorf("%w: %w", errclass.Device, err)
			}
			defer d.Close()
			start := time.Now()
			res, err := engine.Convert(c.Context, engine.Target{Data: d, Meta: d, MetaOnData: true}, cfg, engine.Options{})
			if err != nil {
				return err
			}
			el := time.Since(start)
			hwm, err := vmHWM()
			if err != nil {
				return err
			}
			return json.NewEncoder(c.App.Writer).Encode(childResult{Seconds: el.Seconds(),
				NewOffset: int64(res.Header.NewOffset), VmHWMKiB: hwm})
		},
	}
}

// vmHWM reads this process's peak resident set size from the kernel.
func vmHWM() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("peak RSS: %w", err)
	}
	return parseVmHWM(b)
}

func parseVmHWM(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("peak RSS: unexpected VmHWM line %q", sc.Text())
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("peak RSS: %w", err)
		}
		return n, nil
	}
	return 0, errors.New("peak RSS: no VmHWM line in /proc/self/status")
}

// runChild re-executes this binary for one conversion and returns its
// report, ru_maxrss and CPU time.
func runChild(ctx context.Context, exe string, args []string) (childResult, int64, float64, error) {
	var so, se bytes.Buffer
	cmd := exec.CommandContext(ctx, exe, append([]string{benchChildName}, args...)...)
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Run(); err != nil {
		return childResult{}, 0, 0, fmt.Errorf("conversion child: %w: %s", err, strings.TrimSpace(se.String()))
	}
	var r childResult
	if err := json.Unmarshal(so.Bytes(), &r); err != nil {
		return childResult{}, 0, 0, fmt.Errorf("conversion child: output %q: %w", so.String(), err)
	}
	var maxrss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		maxrss = ru.Maxrss // KiB on Linux
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, maxrss, cpu.Seconds(), nil
}

// runConvertBench builds the image once and chains the conversions: each
// one starts from the previous one's key and data offset (the engine
// accepts a new conversion on a finished one's result), so no run pays
// for, or is disturbed by, rewriting the image between runs.
func runConvertBench(ctx context.Context, p convertParams, progress io.Writer) (*convertReport, error) {
	metaSize, window, dataSize, err := benchLayout(p.size, p.window, p.sectorSize)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary to run conversions in: %w", err)
	}
	work, err := os.MkdirTemp(p.dir, "cryptshift-bench-")
	if err != nil {
		return nil, fmt.Errorf("%w: bench directory: %w", errclass.Device, err)
	}
	defer os.RemoveAll(work)
	rep := &convertReport{Dir: work, FSType: fsType(work), ImageSize: p.size, DataSize: dataSize,
		MetaSize: metaSize, Window: window, Cipher: benchCipher, KeyBits: 512, SectorSize: p.sectorSize,
		Repeat: p.repeat, CacheDropped: true}
	img := filepath.Join(work, "disk.img")
	key, err := randomKey(64)
	if err != nil {
		return nil, err
	}
	spec, err := sectorcipher.ParseSpec(benchCipher)
	if err != nil {
		return nil, err
	}
	c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: key, SectorSize: p.sectorSize})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "building %s image %s\n", formatBytes(uint64(p.size)), img)
	if err := writeDemoImage(img, p.size, dataSize, c); err != nil {
		return nil, err
	}
	drop := func() {
		if err := dropCaches(); err != nil && rep.CacheDropped {
			rep.CacheDropped, rep.CacheNote = false, "page cache not dropped: "+err.Error()
		}
	}
	oldKeyFile, newKeyFile := filepath.Join(work, "old.key"), filepath.Join(work, "new.key")
	var off int64
	byMode := map[string]*modeResult{}
	for _, m := range p.modes {
		rep.Modes = append(rep.Modes, modeResult{Mode: m})
	}
	for i := range rep.Modes {
		byMode[rep.Modes[i].Mode] = &rep.Modes[i]
	}
	for r := 1; r <= p.repeat; r++ {
		for _, m := range p.modes {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			fmt.Fprintf(progress, "run %d/%d %s: copy\n", r, p.repeat, m)
			drop()
			copyT, err := copyInPlace(img, off, dataSize, window)
			if err != nil {
				return nil, err
			}
			newKey, err := randomKey(64)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(oldKeyFile, key, 0o600); err != nil {
				return nil, fmt.Errorf("write key file: %w", err)
			}
			if err := os.WriteFile(newKeyFile, newKey, 0o600); err != nil {
				return nil, fmt.Errorf("write key file: %w", err)
			}
			fmt.Fprintf(progress, "run %d/%d %s: convert\n", r, p.repeat, m)
			drop()
			cr, maxrss, cpu, err := runChild(ctx, exe, []string{"--image", img, "--old-key-file", oldKeyFile,
				"--new-key-file", newKeyFile, "--mode", m, "--data-offset", fmt.Sprint(off),
				"--data-size", fmt.Sprint(dataSize), "--window", fmt.Sprint(window),
				"--meta-size", fmt.Sprint(metaSize), "--sector-size", fmt.Sprint(p.sectorSize)})
			if err != nil {
				return nil, fmt.Errorf("%s run %d: %w", m, r, err)
			}
			key, off = newKey, cr.NewOffset
			run := convertRun{CopySeconds: copyT.Seconds(), ConvertSeconds: cr.Seconds,
				Ratio: cr.Seconds / copyT.Seconds(), PeakRSSKiB: cr.VmHWMKiB, MaxRSSKiB: maxrss, CPUSeconds: cpu}
			if p.verify {
				if err := verifyBenchData(img, off, dataSize, key, p.sectorSize); err != nil {
					return nil, fmt.Errorf("%s run %d: converted data is wrong: %w", m, r, err)
				}
				run.Verified = true
			}
			mr := byMode[m]
			mr.Runs = append(mr.Runs, run)
		}
	}
	for i := range rep.Modes {
		summarizeMode(&rep.Modes[i], dataSize)
	}
	return rep, nil
}

// summarizeMode fills in the medians. The ratio is the median of the
// paired ratios, not the ratio of the median times.
func summarizeMode(m *modeResult, dataSize int64) {
	var copies, convs, ratios, cpus []float64
	for _, r := range m.Runs {
		cpus = append(cpus, r.CPUSeconds)
		copies = append(copies, r.CopySeconds)
		convs = append(convs, r.ConvertSeconds)
		ratios = append(ratios, r.Ratio)
		m.PeakRSSKiB = max(m.PeakRSSKiB, r.PeakRSSKiB)
	}
	m.MedianRatio, m.MedianCopyS, m.MedianConvertS, m.MedianCPUS = median(ratios), median(copies), median(convs), median(cpus)
	if m.MedianConvertS > 0 {
		m.ConvertMBps = float64(dataSize) / 1e6 / m.MedianConvertS
	}
	if m.MedianCopyS > 0 {
		m.CopyMBps = float64(dataSize) / 1e6 / m.MedianCopyS
	}
}

func formatConvertReport(r *convertReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Conversion of a %s image (%s data, %s metadata, window %s) on %s in %s: %s, %d-bit key, %d-byte sectors, %d run(s) per mode, each after an in-place O_DIRECT copy of the same range.\n",
		formatBytes(uint64(r.ImageSize)), formatBytes(uint64(r.DataSize)), formatBytes(uint64(r.MetaSize)),
		formatBytes(uint64(r.Window)), r.FSType, r.Dir, r.Cipher, r.KeyBits, r.SectorSize, r.Repeat)
	if r.CacheDropped {
		b.WriteString("Page cache dropped before every copy and conversion.\n")
	} else {
		fmt.Fprintf(&b, "Warning: %s; reads may have come from memory.\n", r.CacheNote)
	}
	rows := make([][]string, 0, len(r.Modes))
	for _, m := range r.Modes {
		verified := "yes"
		for _, run := range m.Runs {
			if !run.Verified {
				verified = "no"
			}
		}
		rows = append(rows, []string{m.Mode, fmt.Sprintf("%.2f", m.MedianCopyS), fmt.Sprintf("%.2f", m.MedianConvertS),
			fmt.Sprintf("%.2f", m.MedianRatio), fmt.Sprintf("%.2f", m.MedianCPUS), fmt.Sprintf("%.0f", m.ConvertMBps), fmt.Sprintf("%.0f", m.CopyMBps),
			formatBytes(uint64(m.PeakRSSKiB) << 10), verified})
	}
	b.WriteString(formatTable([]string{"mode", " copy s", " convert s", " ratio", " cpu s", " convert MB/s", " copy MB/s", " peak RSS", "verified"}, rows))
	return b.String()
}
