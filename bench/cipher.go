package bench

import (
	"crypto/aes"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"golang.org/x/crypto/xts"
	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"

	"github.com/cryptshift/cryptshift/demo"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// cipherBuffer is the amount transformed per call: a quarter of the
// default window, small enough to stay in a core's L2 cache, so the figure
// is the cipher's and not the memory bus's.
const cipherBuffer = 1 << 20

// cipherResult is one line of the cipher table; the --json field names
// are read by scripts.
type cipherResult struct {
	Spec       string  `json:"spec"`
	KeyBits    int     `json:"key_bits"`
	SectorSize int     `json:"sector_size"`
	Direction  string  `json:"direction"`
	MBps       float64 `json:"mb_per_s"` // per second of the thread's CPU time
	WallMBps   float64 `json:"wall_mb_per_s"`
	// RefMBps is golang.org/x/crypto/xts on the same data in the same
	// rounds (XTS specs only), and Ratio the median of per-round ratios.
	RefMBps float64 `json:"ref_mb_per_s,omitempty"`
	Ratio   float64 `json:"ratio_to_ref,omitempty"`
}

// cipherFeatures lists the CPU features sectorcipher picks its engines by,
// so a reader can tell which engine produced the figures.
func cipherFeatures() string {
	var f []string
	for _, x := range []struct {
		name string
		on   bool
	}{
		{"aes", cpu.X86.HasAES}, {"pclmulqdq", cpu.X86.HasPCLMULQDQ},
		{"avx512f", cpu.X86.HasAVX512F}, {"avx512bw", cpu.X86.HasAVX512BW},
		{"avx512vl", cpu.X86.HasAVX512VL}, {"vaes", cpu.X86.HasAVX512VAES},
		{"vpclmulqdq", cpu.X86.HasAVX512VPCLMULQDQ},
	} {
		if x.on {
			f = append(f, x.name)
		}
	}
	if len(f) == 0 {
		return "none of aes, pclmulqdq, avx512, vaes"
	}
	return strings.Join(f, " ")
}

// threadCPU returns the CPU time the calling thread has used.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// rate runs f over buf until the thread has spent at least d of CPU time
// on it and returns bytes per CPU second and per wall-clock second. The
// machine is shared: wall time counts the time other jobs held the core,
// the thread's CPU time does not, so the first is the per-core figure.
// The caller must hold its OS thread (runtime.LockOSThread).
func rate(buf []byte, d time.Duration, f func(buf []byte, sector512 uint64)) (perCPU, perWall float64) {
	var n int64
	wall, cpu0 := time.Now(), threadCPU()
	for i := uint64(0); ; i++ {
		f(buf, i*uint64(len(buf))/512)
		n += int64(len(buf))
		if el := threadCPU() - cpu0; el >= d || el == 0 && time.Since(wall) >= d {
			if el == 0 { // no thread clock: wall time is all there is
				el = time.Since(wall)
			}
			return float64(n) / el.Seconds(), float64(n) / time.Since(wall).Seconds()
		}
	}
}

// xtsRef is golang.org/x/crypto/xts driven as dm-crypt drives XTS: one
// call per sector, the tweak the sector number in 512-byte units.
func xtsRef(key []byte, sectorSize int, decrypt bool) (func([]byte, uint64), error) {
	x, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		return nil, fmt.Errorf("x/crypto/xts: %w", err)
	}
	step := uint64(sectorSize / 512)
	return func(buf []byte, sector512 uint64) {
		for off := 0; off < len(buf); off += sectorSize {
			s := buf[off : off+sectorSize]
			if decrypt {
				x.Decrypt(s, s, sector512)
			} else {
				x.Encrypt(s, s, sector512)
			}
			sector512 += step
		}
	}, nil
}

// benchCiphers measures every spec, key size, sector size and direction on
// one goroutine (so the figures are per core). For XTS specs it alternates
// rounds of sectorcipher and x/crypto/xts, so both see the same load.
func benchCiphers(specs []string, perRound time.Duration, rounds int, progress io.Writer) ([]cipherResult, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, cipherBuffer)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	var out []cipherResult
	for _, name := range specs {
		spec, err := sectorcipher.ParseSpec(name)
		if err != nil {
			return nil, err
		}
		if spec.IsNone() {
			continue
		}
		isXTS := strings.HasPrefix(spec.String(), "aes-xts-")
		for _, keyLen := range spec.KeySizes() {
			key, err := demo.RandomKey(keyLen)
			if err != nil {
				return nil, err
			}
			for _, sectorSize := range []int{4096, 512} {
				c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: key, SectorSize: sectorSize})
				if err != nil {
					return nil, fmt.Errorf("cipher %s, %d-bit key: %w", spec, keyLen*8, err)
				}
				for _, dir := range []string{"encrypt", "decrypt"} {
					ours := c.Encrypt
					if dir == "decrypt" {
						ours = c.Decrypt
					}
					var ref func([]byte, uint64)
					if isXTS {
						if ref, err = xtsRef(key, sectorSize, dir == "decrypt"); err != nil {
							return nil, err
						}
					}
					fmt.Fprintf(progress, "cipher %s %d-bit %d-byte sectors %s\n", spec, keyLen*8, sectorSize, dir)
					var oursR, oursW, refR []float64
					for range rounds {
						cpuRate, wallRate := rate(buf, perRound, ours)
						oursR, oursW = append(oursR, cpuRate), append(oursW, wallRate)
						if ref != nil {
							refRate, _ := rate(buf, perRound, ref)
							refR = append(refR, refRate)
						}
					}
					r := cipherResult{Spec: spec.String(), KeyBits: keyLen * 8, SectorSize: sectorSize,
						Direction: dir, MBps: median(oursR) / 1e6, WallMBps: median(oursW) / 1e6}
					if ref != nil {
						ratios, err := pairedRatios(oursR, refR)
						if err != nil {
							return nil, err
						}
						r.RefMBps, r.Ratio = median(refR)/1e6, median(ratios)
					}
					out = append(out, r)
				}
			}
		}
	}
	return out, nil
}

func formatCipherTable(rs []cipherResult) string {
	rows := make([][]string, 0, len(rs))
	for _, r := range rs {
		ref, ratio := "-", "-"
		if r.RefMBps > 0 {
			ref, ratio = fmt.Sprintf("%.0f", r.RefMBps), fmt.Sprintf("%.2f", r.Ratio)
		}
		rows = append(rows, []string{r.Spec, fmt.Sprint(r.KeyBits), fmt.Sprint(r.SectorSize), r.Direction,
			fmt.Sprintf("%.0f", r.MBps), fmt.Sprintf("%.0f", r.WallMBps), ref, ratio})
	}
	return "Sector cipher throughput on one core, MB/s = 10^6 bytes per second of the thread's CPU time (wall clock alongside)\n" +
		formatTable([]string{"cipher", " key bits", " sector", "direction", " MB/s", " wall MB/s", " x/crypto/xts MB/s", " ratio"}, rows)
}
