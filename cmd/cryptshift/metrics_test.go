package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cryptshift/cryptshift/online"
)

// parseMetrics reads a --metrics-file with Prometheus' own parser.
func parseMetrics(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, b)
	}
	return fams
}

// metricValue is the value of name's sample whose labels include want.
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		if f.GetType() == dto.MetricType_COUNTER {
			return m.GetCounter().GetValue(), true
		}
		return m.GetGauge().GetValue(), true
	}
	return 0, false
}

func mustMetric(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := metricValue(t, fams, name, labels)
	if !ok {
		t.Fatalf("no %s%v", name, labels)
	}
	return v
}

type fakeStalls []online.WindowStat

func (f fakeStalls) Stats() []online.WindowStat { return f }

func TestMetricsFileContents(t *testing.T) {
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), "cs.prom")
	dev := `/dev/disk/by-id/odd"name\x`
	mf := newMetricsFile(path, dev, clk.now, func(err error) { t.Errorf("warn: %v", err) })
	stalls := fakeStalls{{Window: 0, Held: 30 * time.Millisecond, Swap: 2 * time.Millisecond}, {Window: 1, Held: 40 * time.Millisecond, Swap: 3 * time.Millisecond}}
	// A resumed run: 2 of 10 windows were done before it began.
	mf.report("converting", prog(2, 10), clk.now(), stalls)
	clk.add(4 * time.Second)
	mf.report("converting", prog(6, 10), clk.now(), nil)
	clk.add(time.Second)
	mf.write()

	fams := parseMetrics(t, path)
	d := map[string]string{"device": dev}
	const win = 4 << 20
	for name, want := range map[string]float64{
		"cryptshift_conversion_bytes_done":    6 * win,
		"cryptshift_conversion_bytes_total":   10 * win,
		"cryptshift_conversion_windows_done":  6,
		"cryptshift_conversion_windows_total": 10,
		// 4 windows in the 5 s since this run began; 4 more to go.
		"cryptshift_conversion_rate_bytes_per_second":           4 * win / 5.0,
		"cryptshift_conversion_eta_seconds":                     5,
		"cryptshift_conversion_last_window_stall_seconds":       0.04,
		"cryptshift_conversion_last_table_swap_seconds":         0.003,
		"cryptshift_conversion_errors_total":                    0,
		"cryptshift_conversion_start_timestamp_seconds":         float64(clk.now().Unix() - 5),
		"cryptshift_conversion_last_progress_timestamp_seconds": float64(clk.now().Unix() - 1),
		"cryptshift_conversion_last_update_timestamp_seconds":   float64(clk.now().Unix()),
	} {
		if got := mustMetric(t, fams, name, d); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	for _, s := range metricStates {
		want := 0.0
		if s == "converting" {
			want = 1
		}
		if got := mustMetric(t, fams, "cryptshift_conversion_state", map[string]string{"device": dev, "state": s}); got != want {
			t.Errorf("state %s = %v, want %v", s, got, want)
		}
	}
}

func TestMetricsETAUnknownBeforeProgress(t *testing.T) {
	clk := newFakeClock()
	path := filepath.Join(t.TempDir(), "cs.prom")
	mf := newMetricsFile(path, "d", clk.now, func(err error) { t.Errorf("warn: %v", err) })
	mf.report("converting", prog(3, 10), clk.now(), nil)
	mf.write()
	fams := parseMetrics(t, path)
	if _, ok := fams["cryptshift_conversion_eta_seconds"]; ok {
		t.Error("ETA given before this run converted anything")
	}
	if _, ok := fams["cryptshift_conversion_last_window_stall_seconds"]; ok {
		t.Error("stall given for an offline conversion")
	}
}

// stop writes the final state; a run that reported neither completion nor
// a pause failed.
func TestMetricsFinalState(t *testing.T) {
	for _, c := range []struct {
		last      string
		wantState string
		wantErrs  float64
	}{
		{"complete", "complete", 0},
		{"paused", "paused", 0},
		{"converting", "failed", 1},
		{"", "failed", 1}, // stopped before the first window
	} {
		clk := newFakeClock()
		dir := t.TempDir()
		path := filepath.Join(dir, "cs.prom")
		mf := newMetricsFile(path, "d", clk.now, func(err error) { t.Errorf("warn: %v", err) })
		go mf.loop(make(chan time.Time))
		if c.last != "" {
			mf.report(c.last, prog(10, 10), clk.now(), nil)
		}
		mf.stop()
		fams := parseMetrics(t, path)
		if got := mustMetric(t, fams, "cryptshift_conversion_state", map[string]string{"state": c.wantState}); got != 1 {
			t.Errorf("after %q: state %s = %v, want 1", c.last, c.wantState, got)
		}
		if got := mustMetric(t, fams, "cryptshift_conversion_errors_total", nil); got != c.wantErrs {
			t.Errorf("after %q: errors_total = %v, want %v", c.last, got, c.wantErrs)
		}
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) != 1 {
			t.Errorf("after %q: directory holds %v (%v), want only cs.prom", c.last, ents, err)
		}
	}
}

// Each timer tick rewrites the file. The loop is sequential and the tick
// channel unbuffered: once a second tick is taken, the first one's write is
// done. Nothing is reported, so only ticks can have written.
func TestMetricsTimerRewrites(t *testing.T) {
	var now atomic.Int64
	now.Store(1700000000)
	clock := func() time.Time { return time.Unix(now.Load(), 0) }
	path := filepath.Join(t.TempDir(), "cs.prom")
	mf := newMetricsFile(path, "d", clock, func(err error) { t.Errorf("warn: %v", err) })
	tick := make(chan time.Time)
	go mf.loop(tick)
	defer mf.stop()
	for _, at := range []int64{1700000010, 1700000020} {
		now.Store(at)
		tick <- time.Time{}
		tick <- time.Time{}
		fams := parseMetrics(t, path)
		if got := mustMetric(t, fams, "cryptshift_conversion_last_update_timestamp_seconds", nil); got != float64(at) {
			t.Errorf("after ticks at %d: last update %v", at, got)
		}
	}
}

func TestMetricsWriteFailureWarnsOnce(t *testing.T) {
	clk := newFakeClock()
	var warnings []error
	mf := newMetricsFile(filepath.Join(t.TempDir(), "missing", "cs.prom"), "d", clk.now, func(err error) { warnings = append(warnings, err) })
	for i := 0; i < 3; i++ {
		mf.write()
	}
	if len(warnings) != 1 || !errors.Is(warnings[0], os.ErrNotExist) {
		t.Errorf("warnings %v, want one about the missing directory", warnings)
	}
}

func TestWriteFileAtomicReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.prom")
	for _, s := range []string{"first\n", "second\n"} {
		if err := writeFileAtomic(path, []byte(s)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != s {
			t.Errorf("read %q, %v; want %q", b, err, s)
		}
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v; want 0644 (node_exporter reads it as another user)", st.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

// A real conversion through the command line, offline, on an image.
func TestConvertMetricsFile(t *testing.T) {
	dir := t.TempDir()
	c := &runner{t: t, dir: dir}
	oldKey, newKey := c.file("old.key", testKey(1)), c.file("new.key", testKey(2))
	img, _ := c.makeImage("data.img", 6<<20, 4<<20, testKey(1))
	prom := filepath.Join(dir, "cs.prom")
	var out, errOut bytes.Buffer
	args := []string{"cryptshift", "convert", "--old-key-file", oldKey, "--new-key-file", newKey, "--data-size", "4M",
		"--metadata-size", "2M", "--window", "1M", "--progress", "none", "--metrics-file", prom, img}
	if code := run(args, &out, &errOut); code != 0 {
		t.Fatalf("convert: exit %d\n%s", code, errOut.String())
	}
	for _, l := range keyLeaks(dir, args, nil, out.String(), errOut.String()) {
		t.Error(l)
	}
	fams := parseMetrics(t, prom)
	d := map[string]string{"device": img}
	if got := mustMetric(t, fams, "cryptshift_conversion_state", map[string]string{"device": img, "state": "complete"}); got != 1 {
		t.Errorf("state complete = %v", got)
	}
	if done, total := mustMetric(t, fams, "cryptshift_conversion_bytes_done", d), mustMetric(t, fams, "cryptshift_conversion_bytes_total", d); done != 4<<20 || total != 4<<20 {
		t.Errorf("bytes %v of %v, want 4 MiB of 4 MiB", done, total)
	}
	if got := mustMetric(t, fams, "cryptshift_conversion_windows_done", d); got != 4 {
		t.Errorf("windows done %v, want 4", got)
	}
	// Converting again from a key that is neither side of the finished
	// conversion: refused, and the file says the run failed.
	args[3] = c.file("other.key", testKey(3))
	errOut.Reset()
	code := run(args, &out, &errOut)
	if code == 0 {
		t.Fatalf("second convert with a wrong old key succeeded: %s", errOut.String())
	}
	fams = parseMetrics(t, prom)
	if got := mustMetric(t, fams, "cryptshift_conversion_state", map[string]string{"device": img, "state": "failed"}); got != 1 {
		t.Errorf("after exit %d: state failed = %v", code, got)
	}
	if !strings.Contains(errOut.String(), "cryptshift:") {
		t.Errorf("stderr %q", errOut.String())
	}
}
