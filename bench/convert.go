package bench

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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/demo"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/internal/units"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// ChildCommand is the hidden subcommand that runs one timed conversion
// (Child). Each conversion runs in its own process so that its peak RSS is
// its own, not the benchmark's buffers or an earlier conversion's heap.
const ChildCommand = "bench-convert-child"

const benchCipher = "aes-xts-plain64"

// ConvertParams is the conversion benchmark: an image of Size in a new
// directory under Dir, each of Modes converted Repeat times with Window (0:
// the demo layout's) and SectorSize, the data checked after each when
// Verify. Each of SectorSizes gets an image of its own. FlushedCopy also
// times the per-window flushed copy beside each pair, for comparison.
type ConvertParams struct {
	Dir         string
	Size        int64
	Window      int64
	SectorSizes []int
	Repeat      int
	Modes       []string
	Verify      bool
	FlushedCopy bool
}

// convertRun is one streaming copy and the conversion timed right after
// it (and, when asked for, the per-window flushed copy after that).
type convertRun struct {
	// CopySeconds is the baseline, the streaming copy (streamCopy), and
	// Ratio is ConvertSeconds over it.
	CopySeconds    float64 `json:"copy_s"`
	ConvertSeconds float64 `json:"convert_s"`
	Ratio          float64 `json:"ratio"`
	// FlushedCopySeconds is the per-window flushed copy (copyInPlace),
	// 0 when not timed; FlushedRatio is ConvertSeconds over it.
	FlushedCopySeconds float64 `json:"flushed_copy_s,omitempty"`
	FlushedRatio       float64 `json:"flushed_ratio,omitempty"`
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
	Mode        string       `json:"mode"`
	Runs        []convertRun `json:"runs"`
	MedianRatio float64      `json:"median_ratio"`
	// BestRatio is the lowest paired ratio: on a shared machine the pair
	// that other jobs disturbed least.
	BestRatio          float64 `json:"best_ratio"`
	MedianFlushedRatio float64 `json:"median_flushed_ratio,omitempty"`
	MedianCopyS        float64 `json:"median_copy_s"`
	MedianConvertS     float64 `json:"median_convert_s"`
	MedianCPUS         float64 `json:"median_cpu_s"`
	ConvertMBps        float64 `json:"convert_mb_per_s"`
	CopyMBps           float64 `json:"copy_mb_per_s"`
	PeakRSSKiB         int64   `json:"peak_rss_kib"` // the largest over the runs
}

// ConvertReport is the conversion part of a Report, for one sector size.
type ConvertReport struct {
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
	FlushedCopy  bool         `json:"flushed_copy"`
	Modes        []modeResult `json:"modes"`
}

// Layout plans the image: the demo's metadata size and window, and
// a data area one window short of the metadata so that shift mode has its
// gap. Every mode converts this same data size, so all are timed against
// copies of the same number of bytes.
func Layout(size, window int64, sectorSize int) (metaSize, win, dataSize int64, err error) {
	metaSize, win, err = demo.Layout(size)
	if err != nil {
		return 0, 0, 0, err
	}
	if window != 0 {
		if window%4096 != 0 || window%int64(sectorSize) != 0 {
			return 0, 0, 0, fmt.Errorf("%w: --window %d: want a multiple of 4 KiB and of the sector size", errclass.Usage, window)
		}
		win = window
	}
	dataSize = (size - metaSize - win) / int64(sectorSize) * int64(sectorSize)
	if dataSize < win {
		return 0, 0, 0, fmt.Errorf("%w: --convert %s leaves no room for a window of data beside %s of metadata and the shift gap",
			errclass.Usage, units.Bytes(uint64(size)), units.Bytes(uint64(metaSize)))
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

// copyInPlace is the per-window flushed copy, printed beside the
// baseline (streamCopy): the same range read and rewritten window by
// window with O_DIRECT, nothing overlapped, flushed after each window as
// the conversion flushes. It flatters a conversion that overlaps its
// reads and writes, so it is not the baseline.
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
	return demo.Compare(r, size, c)
}

// childResult is what the child prints on stdout.
type childResult struct {
	Seconds   float64 `json:"seconds"`
	NewOffset int64   `json:"new_offset"`
	VmHWMKiB  int64   `json:"vmhwm_kib"`
}

// ChildParams is one timed conversion, as the hidden ChildCommand's flags
// give it.
type ChildParams struct {
	Image                  string
	OldKeyFile, NewKeyFile string
	Mode                   string
	DataOffset, DataSize   int64
	Window, MetaSize       int64
	SectorSize             int
}

// Child runs one timed conversion in this process and writes its result
// for the parent (runChild) to stdout.
func Child(ctx context.Context, p ChildParams, stdout io.Writer) error {
	oldKey, err := os.ReadFile(p.OldKeyFile)
	if err != nil {
		return fmt.Errorf("%w: %w", errclass.Usage, err)
	}
	newKey, err := os.ReadFile(p.NewKeyFile)
	if err != nil {
		return fmt.Errorf("%w: %w", errclass.Usage, err)
	}
	off := p.DataOffset
	cfg := engine.Config{
		Old:        engine.Side{Cipher: benchCipher, Key: oldKey, SectorSize: p.SectorSize},
		New:        engine.Side{Cipher: benchCipher, Key: newKey, SectorSize: p.SectorSize},
		DataOffset: &off, DataSize: p.DataSize,
		Mode: p.Mode, Window: p.Window, MetaSize: p.MetaSize,
		Force: p.Mode == "none",
	}
	d, err := blockdev.Open(p.Image, blockdev.Options{Exclusive: true, Direct: true})
	if err != nil {
		return fmt.Errorf("%w: %w", errclass.Device, err)
	}
	defer d.Close()
	start := time.Now()
	res, err := engine.Convert(ctx, engine.Target{Data: d, Meta: d, MetaOnData: true}, cfg, engine.Options{})
	if err != nil {
		return err
	}
	el := time.Since(start)
	hwm, err := vmHWM()
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(childResult{Seconds: el.Seconds(),
		NewOffset: int64(res.Header.NewOffset), VmHWMKiB: hwm})
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
	cmd := exec.CommandContext(ctx, exe, append([]string{ChildCommand}, args...)...)
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

// runConvertBench runs the conversion benchmark for each sector size in
// turn, on an image of its own.
func runConvertBench(ctx context.Context, p ConvertParams, exe string, progress io.Writer) ([]*ConvertReport, error) {
	var reps []*ConvertReport
	for _, ss := range p.SectorSizes {
		rep, err := runConvertBenchSector(ctx, p, ss, exe, progress)
		if err != nil {
			return nil, err
		}
		reps = append(reps, rep)
	}
	return reps, nil
}

// runConvertBenchSector builds the image once and chains the conversions:
// each one starts from the previous one's key and data offset (the engine
// accepts a new conversion on a finished one's result), so no run pays
// for, or is disturbed by, rewriting the image between runs.
func runConvertBenchSector(ctx context.Context, p ConvertParams, sectorSize int, exe string, progress io.Writer) (*ConvertReport, error) {
	metaSize, window, dataSize, err := Layout(p.Size, p.Window, sectorSize)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(p.Dir, "cryptshift-bench-")
	if err != nil {
		return nil, fmt.Errorf("%w: bench directory: %w", errclass.Device, err)
	}
	defer os.RemoveAll(work)
	rep := &ConvertReport{Dir: work, FSType: fsType(work), ImageSize: p.Size, DataSize: dataSize,
		MetaSize: metaSize, Window: window, Cipher: benchCipher, KeyBits: 512, SectorSize: sectorSize,
		Repeat: p.Repeat, CacheDropped: true, FlushedCopy: p.FlushedCopy}
	img := filepath.Join(work, "disk.img")
	key, err := demo.RandomKey(64)
	if err != nil {
		return nil, err
	}
	spec, err := sectorcipher.ParseSpec(benchCipher)
	if err != nil {
		return nil, err
	}
	c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: key, SectorSize: sectorSize})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "building %s image %s (%d-byte sectors)\n", units.Bytes(uint64(p.Size)), img, sectorSize)
	if err := demo.WriteImage(img, p.Size, dataSize, c); err != nil {
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
	for _, m := range p.Modes {
		rep.Modes = append(rep.Modes, modeResult{Mode: m})
	}
	for i := range rep.Modes {
		byMode[rep.Modes[i].Mode] = &rep.Modes[i]
	}
	for r := 1; r <= p.Repeat; r++ {
		for _, m := range p.Modes {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			fmt.Fprintf(progress, "%d-byte sectors, run %d/%d %s: streaming copy\n", sectorSize, r, p.Repeat, m)
			drop()
			copyT, err := streamCopy(img, off, dataSize, streamBlock)
			if err != nil {
				return nil, err
			}
			newKey, err := demo.RandomKey(64)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(oldKeyFile, key, 0o600); err != nil {
				return nil, fmt.Errorf("write key file: %w", err)
			}
			if err := os.WriteFile(newKeyFile, newKey, 0o600); err != nil {
				return nil, fmt.Errorf("write key file: %w", err)
			}
			fmt.Fprintf(progress, "%d-byte sectors, run %d/%d %s: convert\n", sectorSize, r, p.Repeat, m)
			drop()
			cr, maxrss, cpu, err := runChild(ctx, exe, []string{"--image", img, "--old-key-file", oldKeyFile,
				"--new-key-file", newKeyFile, "--mode", m, "--data-offset", fmt.Sprint(off),
				"--data-size", fmt.Sprint(dataSize), "--window", fmt.Sprint(window),
				"--meta-size", fmt.Sprint(metaSize), "--sector-size", fmt.Sprint(sectorSize)})
			if err != nil {
				return nil, fmt.Errorf("%s run %d: %w", m, r, err)
			}
			key, off = newKey, cr.NewOffset
			run := convertRun{CopySeconds: copyT.Seconds(), ConvertSeconds: cr.Seconds,
				Ratio: cr.Seconds / copyT.Seconds(), PeakRSSKiB: cr.VmHWMKiB, MaxRSSKiB: maxrss, CPUSeconds: cpu}
			if p.FlushedCopy {
				fmt.Fprintf(progress, "%d-byte sectors, run %d/%d %s: per-window flushed copy\n", sectorSize, r, p.Repeat, m)
				drop()
				fc, err := copyInPlace(img, off, dataSize, window)
				if err != nil {
					return nil, err
				}
				run.FlushedCopySeconds, run.FlushedRatio = fc.Seconds(), cr.Seconds/fc.Seconds()
			}
			if p.Verify {
				if err := verifyBenchData(img, off, dataSize, key, sectorSize); err != nil {
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
	var copies, convs, ratios, cpus, flushed []float64
	for _, r := range m.Runs {
		if r.FlushedRatio > 0 {
			flushed = append(flushed, r.FlushedRatio)
		}
		cpus = append(cpus, r.CPUSeconds)
		copies = append(copies, r.CopySeconds)
		convs = append(convs, r.ConvertSeconds)
		ratios = append(ratios, r.Ratio)
		m.PeakRSSKiB = max(m.PeakRSSKiB, r.PeakRSSKiB)
	}
	m.MedianRatio, m.MedianCopyS, m.MedianConvertS, m.MedianCPUS = median(ratios), median(copies), median(convs), median(cpus)
	m.MedianFlushedRatio = median(flushed)
	if len(ratios) > 0 {
		m.BestRatio = slices.Min(ratios)
	}
	if m.MedianConvertS > 0 {
		m.ConvertMBps = float64(dataSize) / 1e6 / m.MedianConvertS
	}
	if m.MedianCopyS > 0 {
		m.CopyMBps = float64(dataSize) / 1e6 / m.MedianCopyS
	}
}

func formatConvertReport(r *ConvertReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Conversion of a %s image (%s data, %s metadata, window %s) on %s in %s: %s, %d-bit key, %d-byte sectors, %d pair(s) per mode: a streaming in-place O_DIRECT copy of the same range (4 MiB blocks, reads and writes overlapped, one flush at the end), then the conversion.\n",
		units.Bytes(uint64(r.ImageSize)), units.Bytes(uint64(r.DataSize)), units.Bytes(uint64(r.MetaSize)),
		units.Bytes(uint64(r.Window)), r.FSType, r.Dir, r.Cipher, r.KeyBits, r.SectorSize, r.Repeat)
	b.WriteString("ratio = convert s / copy s per pair, median and best over the pairs.")
	if r.FlushedCopy {
		b.WriteString(" flushed = convert s / a per-window flushed copy (read, write, flush one window at a time) timed after each conversion, median: not the baseline.")
	}
	b.WriteByte('\n')
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
		row := []string{m.Mode, fmt.Sprintf("%.2f", m.MedianCopyS), fmt.Sprintf("%.2f", m.MedianConvertS),
			fmt.Sprintf("%.2f", m.MedianRatio), fmt.Sprintf("%.2f", m.BestRatio)}
		if r.FlushedCopy {
			row = append(row, fmt.Sprintf("%.2f", m.MedianFlushedRatio))
		}
		row = append(row, fmt.Sprintf("%.2f", m.MedianCPUS), fmt.Sprintf("%.0f", m.ConvertMBps), fmt.Sprintf("%.0f", m.CopyMBps),
			units.Bytes(uint64(m.PeakRSSKiB)<<10), verified)
		rows = append(rows, row)
	}
	hdr := []string{"mode", " copy s", " convert s", " ratio", " best"}
	if r.FlushedCopy {
		hdr = append(hdr, " flushed")
	}
	hdr = append(hdr, " cpu s", " convert MB/s", " copy MB/s", " peak RSS", "verified")
	b.WriteString(formatTable(hdr, rows))
	return b.String()
}
