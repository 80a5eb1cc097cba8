package bench

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/demo"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

func TestMedian(t *testing.T) {
	cases := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{1, 100, 2}, 2}, // one slowed-down run does not move it
	}
	for _, c := range cases {
		in := slices.Clone(c.in)
		if got := median(in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		if !slices.Equal(in, c.in) {
			t.Errorf("median reordered its input: %v", in)
		}
	}
}

func TestPairedRatios(t *testing.T) {
	got, err := pairedRatios([]float64{2, 9}, []float64{1, 3})
	if err != nil || !slices.Equal(got, []float64{2, 3}) {
		t.Fatalf("pairedRatios = %v, %v; want [2 3]", got, err)
	}
	if _, err := pairedRatios([]float64{1}, []float64{1, 2}); err == nil {
		t.Error("mismatched lengths accepted")
	}
	if _, err := pairedRatios([]float64{1}, []float64{0}); err == nil {
		t.Error("zero baseline accepted")
	}
}

// The reported ratio must be the median of the pairs: with load that
// changes between pairs, the ratio of the median times can be a figure no
// pair ever showed.
func TestSummarizeModeUsesPairedRatios(t *testing.T) {
	m := modeResult{Mode: "journal", Runs: []convertRun{
		{CopySeconds: 1, ConvertSeconds: 2, Ratio: 2, PeakRSSKiB: 100, CPUSeconds: 3},
		{CopySeconds: 4, ConvertSeconds: 8, Ratio: 2, PeakRSSKiB: 300, CPUSeconds: 1},
		{CopySeconds: 10, ConvertSeconds: 20, Ratio: 2, PeakRSSKiB: 200, CPUSeconds: 2},
	}}
	summarizeMode(&m, 8e6)
	if m.MedianRatio != 2 {
		t.Errorf("median ratio %v, want 2 (median copy %v / median convert %v would give %v)",
			m.MedianRatio, m.MedianCopyS, m.MedianConvertS, m.MedianConvertS/m.MedianCopyS)
	}
	if m.MedianCopyS != 4 || m.MedianConvertS != 8 {
		t.Errorf("medians copy %v convert %v, want 4 and 8", m.MedianCopyS, m.MedianConvertS)
	}
	if m.ConvertMBps != 1 || m.CopyMBps != 2 {
		t.Errorf("MB/s convert %v copy %v, want 1 and 2", m.ConvertMBps, m.CopyMBps)
	}
	if m.MedianCPUS != 2 {
		t.Errorf("median CPU %v, want 2", m.MedianCPUS)
	}
	if m.PeakRSSKiB != 300 {
		t.Errorf("peak RSS %d, want the largest run's, 300", m.PeakRSSKiB)
	}
}

func TestFormatTable(t *testing.T) {
	got := formatTable([]string{"name", " n"}, [][]string{{"a", "1"}, {"long", "100"}})
	want := "name    n\n" +
		"a       1\n" +
		"long  100\n"
	if got != want {
		t.Errorf("formatTable:\n%s\nwant:\n%s", got, want)
	}
}

func TestParseVmHWM(t *testing.T) {
	status := "Name:\tcryptshift\nVmPeak:\t 1000 kB\nVmHWM:\t   20996 kB\nVmRSS:\t 100 kB\n"
	if n, err := parseVmHWM([]byte(status)); err != nil || n != 20996 {
		t.Errorf("parseVmHWM = %d, %v; want 20996", n, err)
	}
	if _, err := parseVmHWM([]byte("VmRSS:\t100 kB\n")); err == nil {
		t.Error("status without VmHWM accepted")
	}
	if _, err := parseVmHWM([]byte("VmHWM:\t100 MB\n")); err == nil {
		t.Error("VmHWM in an unknown unit accepted")
	}
	if n, err := vmHWM(); err != nil || n <= 0 {
		t.Errorf("vmHWM of this process = %d, %v", n, err)
	}
}

func TestBenchLayout(t *testing.T) {
	meta, win, data, err := Layout(16<<20, 0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	// The data stops one window short of the metadata: shift's gap.
	if meta != 2<<20 || win != 1<<20 || data != 13<<20 {
		t.Errorf("16M: meta %d window %d data %d, want 2M, 1M, 13M", meta, win, data)
	}
	meta, win, data, err = Layout(2<<30, 0, 4096)
	if err != nil || meta != 32<<20 || win != engine.DefaultWindow || data != 2<<30-32<<20-engine.DefaultWindow {
		t.Errorf("2G: meta %d window %d data %d err %v", meta, win, data, err)
	}
	if _, _, _, err := Layout(16<<20, 6000, 4096); err == nil {
		t.Error("window that is not a multiple of 4 KiB accepted")
	}
	if _, _, _, err := Layout(16<<20, 8<<20, 4096); err == nil {
		t.Error("window leaving less than a window of data accepted")
	}
}

func benchTestCipher(t *testing.T, key []byte) sectorcipher.Cipher {
	t.Helper()
	spec, err := sectorcipher.ParseSpec(benchCipher)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: key, SectorSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The image builder must leave ciphertext (not the plaintext) in the data
// area and zeros in the metadata area, and verifyBenchData must accept it
// only under the right key and offset and notice a single changed byte:
// the end-to-end test relies on it for "every conversion was correct".
func TestBenchImageAndVerify(t *testing.T) {
	const size, data = 8 << 20, 5 << 20
	img := filepath.Join(t.TempDir(), "img")
	key, err := demo.RandomKey(64)
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.WriteImage(img, size, data, benchTestCipher(t, key)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != size {
		t.Fatalf("image is %d bytes, want %d", len(b), size)
	}
	if strings.Contains(string(b[:data]), "cryptshift demo sector") {
		t.Error("data area holds plaintext")
	}
	if slices.ContainsFunc(b[data:], func(x byte) bool { return x != 0 }) {
		t.Error("metadata area is not zero")
	}
	if err := verifyBenchData(img, 0, data, key, 4096); err != nil {
		t.Fatalf("fresh image: %v", err)
	}
	other, err := demo.RandomKey(64)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyBenchData(img, 0, data, other, 4096); err == nil {
		t.Error("verified under the wrong key")
	}
	if err := verifyBenchData(img, 4096, data, key, 4096); err == nil {
		t.Error("verified at the wrong offset")
	}
	b[3<<20+17] ^= 1
	if err := os.WriteFile(img, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := verifyBenchData(img, 0, data, key, 4096); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Errorf("one flipped bit: %v, want a difference reported", err)
	}
}

// The baseline copy must rewrite exactly what it read, or the data the
// next conversion starts from is not what the verifier expects.
func TestCopyInPlaceKeepsData(t *testing.T) {
	const size, data = 8 << 20, 5 << 20
	img := filepath.Join(t.TempDir(), "img")
	key, err := demo.RandomKey(64)
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.WriteImage(img, size, data, benchTestCipher(t, key)); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	// A window that does not divide the range, so the short tail is copied too.
	if _, err := copyInPlace(img, 4096, data-4096, 3<<20); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, after) {
		t.Error("the in-place copy changed the image")
	}
	// The streaming copy overlaps reads and writes; with more blocks than
	// it has buffers and a short last block, every buffer is reused.
	if _, err := streamCopy(img, 4096, data-4096, 1<<20); err != nil {
		t.Fatal(err)
	}
	after, err = os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, after) {
		t.Error("the streaming copy changed the image")
	}
	// A read error (the range runs past the end) is reported, not hidden.
	if _, err := streamCopy(img, 4096, size, 1<<20); err == nil {
		t.Error("streaming copy past the end of the image succeeded")
	}
}

func TestFormatConvertReport(t *testing.T) {
	r := &ConvertReport{Dir: "/d", FSType: "xfs", ImageSize: 16 << 20, DataSize: 13 << 20, MetaSize: 2 << 20,
		Window: 1 << 20, Cipher: benchCipher, KeyBits: 512, SectorSize: 4096, Repeat: 1,
		CacheNote: "page cache not dropped: not root",
		Modes: []modeResult{
			{Mode: "journal", Runs: []convertRun{{Verified: true}}, MedianRatio: 1.5, BestRatio: 1.41, MedianFlushedRatio: 1.23, PeakRSSKiB: 20 << 10},
			{Mode: "shift", Runs: []convertRun{{Verified: false}}, MedianRatio: 1.1},
		}}
	if out := formatConvertReport(r); strings.Contains(out, "1.23") || strings.Contains(out, "flushed") {
		t.Errorf("flushed copy ratio printed though not timed:\n%s", out)
	}
	r.FlushedCopy = true
	out := formatConvertReport(r)
	for _, want := range []string{"Warning: page cache not dropped: not root", "journal", "1.50", "1.41", "1.23", "flushed", "20.0 MiB", "yes", "shift", "1.10", "no"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	r.CacheDropped = true
	if out := formatConvertReport(r); strings.Contains(out, "Warning") {
		t.Errorf("warning printed although the cache was dropped:\n%s", out)
	}
}

func TestFormatCipherTable(t *testing.T) {
	out := formatCipherTable([]cipherResult{
		{Spec: "aes-xts-plain64", KeyBits: 512, SectorSize: 4096, Direction: "encrypt", MBps: 5000, WallMBps: 4000, RefMBps: 500, Ratio: 10},
		{Spec: "aes-cbc-essiv:sha256", KeyBits: 256, SectorSize: 512, Direction: "decrypt", MBps: 3000, WallMBps: 2000},
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a title, a header and 2 rows:\n%s", out)
	}
	if f := strings.Fields(lines[2]); !slices.Equal(f, []string{"aes-xts-plain64", "512", "4096", "encrypt", "5000", "4000", "500", "10.00"}) {
		t.Errorf("xts row %q", lines[2])
	}
	if f := strings.Fields(lines[3]); f[len(f)-1] != "-" || f[len(f)-2] != "-" {
		t.Errorf("cbc row has a reference: %q", lines[3])
	}
}
