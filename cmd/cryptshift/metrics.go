package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/online"
)

// metricsInterval is how often --metrics-file is rewritten while a
// conversion runs: node_exporter reads the file on every scrape (typically
// every 15 to 60 s), so a faster rewrite would only cost writes.
const metricsInterval = 10 * time.Second

// Conversion states as the cryptshift_conversion_state metric names them.
var metricStates = []string{"converting", "paused", "complete", "failed"}

func metricsFileFlag() cli.Flag {
	return &cli.StringFlag{Name: "metrics-file", Usage: "write Prometheus text-format metrics to `PATH` about every 10s and at the end, replacing it atomically (for node_exporter's textfile collector, which reads *.prom files)"}
}

// metricsFile keeps --metrics-file current. The meter feeds it from the
// engine's goroutine; a goroutine of its own rewrites the file on a timer,
// so the file (and its timestamp) stays fresh during a window that takes
// long, and a stuck conversion shows as a rate that falls, not as silence.
type metricsFile struct {
	path   string
	device string
	now    func() time.Time
	warn   func(error)

	mu         sync.Mutex
	state      string // "" until the first report
	last       engine.Progress
	start      time.Time
	startBytes uint64
	lastWindow time.Time // when the latest progress report came
	online     stallSource

	writeMu sync.Mutex // one rewrite at a time: the timer's and the final one
	lastErr string     // the write error last warned about
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}
}

// stallSource tells how long application I/O waited for the windows an
// online conversion held so far.
type stallSource interface{ Stats() []online.WindowStat }

// stallClock is the stall source of a conversion run by package online:
// its hooks time each window from hold to release, on the converting
// goroutine, while the metrics writer reads the latest figure.
type stallClock struct {
	mu     sync.Mutex
	heldAt time.Time
	last   []online.WindowStat
}

func (s *stallClock) Stats() []online.WindowStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// chain adds the clock to hooks, keeping those already set (the test
// build's); a nil clock (no --metrics-file) leaves them as they are.
func (s *stallClock) chain(h online.Hooks) online.Hooks {
	if s == nil {
		return h
	}
	held, released := h.Held, h.Released
	h.Held = func(w uint64, start, length int64) {
		s.mu.Lock()
		s.heldAt = time.Now()
		s.mu.Unlock()
		if held != nil {
			held(w, start, length)
		}
	}
	h.Released = func(w uint64, start, length int64, err error) {
		s.mu.Lock()
		if !s.heldAt.IsZero() {
			s.last = []online.WindowStat{{Window: w, Held: time.Since(s.heldAt)}}
		}
		s.mu.Unlock()
		if released != nil {
			released(w, start, length, err)
		}
	}
	return h
}

// watchMetrics starts --metrics-file for the conversion the meter shows,
// and returns the function that writes its final state and stops, and the
// clock an online conversion's hooks feed (nil with path ""). A failing
// write is reported on stderr but never stops the conversion: monitoring
// is not the conversion's business. With path "" it does nothing.
func watchMetrics(path, device string, m *meter, stderr io.Writer) (func(), *stallClock) {
	if path == "" {
		return func() {}, nil
	}
	mf := newMetricsFile(path, device, time.Now, func(err error) {
		fmt.Fprintf(stderr, "cryptshift: warning: --metrics-file: %v\n", err)
	})
	clock := &stallClock{}
	m.observe = func(state string, p engine.Progress, t time.Time) {
		mf.report(state, p, t, clock)
	}
	ticker := time.NewTicker(metricsInterval)
	go mf.loop(ticker.C)
	return func() {
		ticker.Stop()
		mf.stop()
	}, clock
}

func newMetricsFile(path, device string, now func() time.Time, warn func(error)) *metricsFile {
	return &metricsFile{path: path, device: device, now: now, warn: warn,
		kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
}

// report records a progress report or a final state; the first report
// and the final ones are written at once.
func (mf *metricsFile) report(state string, p engine.Progress, t time.Time, online stallSource) {
	mf.mu.Lock()
	first := mf.state == ""
	if first {
		mf.start, mf.startBytes = t, p.BytesDone
	}
	mf.state, mf.last, mf.lastWindow = state, p, t
	if online != nil {
		mf.online = online
	}
	mf.mu.Unlock()
	if first || state != "converting" {
		select {
		case mf.kick <- struct{}{}:
		default: // a write is already due
		}
	}
}

func (mf *metricsFile) loop(tick <-chan time.Time) {
	defer close(mf.stopped)
	for {
		select {
		case <-mf.done:
			return
		case <-tick:
		case <-mf.kick:
		}
		mf.write()
	}
}

// stop ends the timer and writes the final state: a conversion that never
// reported completion or a pause stopped on an error.
func (mf *metricsFile) stop() {
	close(mf.done)
	<-mf.stopped
	mf.mu.Lock()
	if mf.state == "" || mf.state == "converting" {
		mf.state = "failed"
	}
	mf.mu.Unlock()
	mf.write()
}

func (mf *metricsFile) write() {
	mf.writeMu.Lock()
	defer mf.writeMu.Unlock()
	err := writeFileAtomic(mf.path, []byte(mf.render(mf.now())))
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	// Once per distinct failure: a full disk must not flood the journal.
	if msg != mf.lastErr {
		mf.lastErr = msg
		if err != nil {
			mf.warn(err)
		}
	}
}

// render is the text exposition format: one gauge per quantity, each with
// the device label, HELP and TYPE lines first.
func (mf *metricsFile) render(now time.Time) string {
	mf.mu.Lock()
	state, p, start, startBytes, lastWindow, online := mf.state, mf.last, mf.start, mf.startBytes, mf.lastWindow, mf.online
	mf.mu.Unlock()
	var b strings.Builder
	dev := `device="` + escapeLabel(mf.device) + `"`
	gauge := func(name, help string, v float64, labels ...string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
		sample(&b, name, append([]string{dev}, labels...), v)
	}
	gauge("cryptshift_conversion_bytes_done", "Bytes of the data area converted so far.", float64(p.BytesDone))
	gauge("cryptshift_conversion_bytes_total", "Bytes of the data area.", float64(p.BytesTotal))
	gauge("cryptshift_conversion_windows_done", "Windows converted so far.", float64(p.Done))
	gauge("cryptshift_conversion_windows_total", "Windows of the data area.", float64(p.Total))
	name := "cryptshift_conversion_state"
	fmt.Fprintf(&b, "# HELP %s The state of this run: 1 for the current one.\n# TYPE %s gauge\n", name, name)
	for _, s := range metricStates {
		v := 0.0
		if s == state {
			v = 1
		}
		sample(&b, name, []string{dev, `state="` + s + `"`}, v)
	}
	// The same average since this run began as the progress line shows:
	// steady on storage whose speed jitters window to window.
	rate := 0.0
	if el := now.Sub(start).Seconds(); state != "" && el > 0 && p.BytesDone > startBytes {
		rate = float64(p.BytesDone-startBytes) / el
	}
	gauge("cryptshift_conversion_rate_bytes_per_second", "Average conversion rate of this run.", rate)
	if p.BytesDone >= p.BytesTotal && state != "" {
		gauge("cryptshift_conversion_eta_seconds", "Estimated seconds to completion (absent while unknown).", 0)
	} else if rate > 0 {
		gauge("cryptshift_conversion_eta_seconds", "Estimated seconds to completion (absent while unknown).", float64(p.BytesTotal-p.BytesDone)/rate)
	}
	if online != nil {
		if st := online.Stats(); len(st) > 0 {
			last := st[len(st)-1]
			gauge("cryptshift_conversion_last_window_stall_seconds", "Online: how long I/O to the last window converted waited.", last.Held.Seconds())
			if last.Swap > 0 {
				gauge("cryptshift_conversion_last_table_swap_seconds", "Online: how long all I/O waited for the last table swap.", last.Swap.Seconds())
			}
		}
	}
	errs := 0.0
	if state == "failed" {
		errs = 1
	}
	name = "cryptshift_conversion_errors_total"
	fmt.Fprintf(&b, "# HELP %s Runs of this conversion that stopped on an error (the exit code tells which).\n# TYPE %s counter\n", name, name)
	sample(&b, name, []string{dev}, errs)
	if state != "" {
		gauge("cryptshift_conversion_start_timestamp_seconds", "When this run began.", unixSeconds(start))
		gauge("cryptshift_conversion_last_progress_timestamp_seconds", "When the latest window was reported.", unixSeconds(lastWindow))
	}
	gauge("cryptshift_conversion_last_update_timestamp_seconds", "When this file was written; a stale value means the process is gone.", unixSeconds(now))
	return b.String()
}

func sample(b *strings.Builder, name string, labels []string, v float64) {
	fmt.Fprintf(b, "%s{%s} %s\n", name, strings.Join(labels, ","), strconv.FormatFloat(v, 'g', -1, 64))
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

// escapeLabel escapes a label value as the text format requires.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// writeFileAtomic replaces path with data so that a reader sees the old
// file or the new one, never a part: a temporary file in the same
// directory (a rename across filesystems is not atomic), flushed before
// the rename so that a crash cannot leave an empty file under the name.
// The temporary name does not end in .prom, so node_exporter skips it.
func writeFileAtomic(path string, data []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// Errors name path, not the random temporary name, so that the same
	// failure reads the same each time (it is reported once).
	wrap := func(what string, err error) error {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp")
	if err != nil {
		return wrap("create a temporary file for", err)
	}
	tmp := f.Name()
	fail := func(what string, err error) error {
		f.Close()
		os.Remove(tmp)
		return wrap(what, err)
	}
	// node_exporter usually runs as its own user: the file must be readable.
	if err := f.Chmod(0o644); err != nil {
		return fail("chmod", err)
	}
	if _, err := f.Write(data); err != nil {
		return fail("write", err)
	}
	if err := f.Sync(); err != nil {
		return fail("fsync", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return wrap("close", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return wrap("rename to", err)
	}
	return nil
}
