package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/internal/units"
)

// Progress display modes (--progress).
const (
	progressAuto  = "auto"
	progressBar   = "bar"
	progressPlain = "plain"
	progressJSON  = "json"
	progressNone  = "none"
)

// barRedraw bounds how often the bar is redrawn: the engine reports every
// window, which can be hundreds of times a second on fast storage, and a
// terminal cannot show that anyway.
const barRedraw = 100 * time.Millisecond

// defaultJSONInterval applies to --progress json when no interval is given:
// a gauge fed by the JSON lines wants more than one update per 5 s.
const defaultJSONInterval = time.Second

// resolveProgress turns --progress auto into a concrete mode. Under systemd
// stderr goes to the journal, where carriage-return redraws turn into one
// garbled record per redraw, so auto picks plain lines there even when the
// journal stream happens to be a terminal.
func resolveProgress(mode string, stderrTTY, underJournal bool) (string, error) {
	switch mode {
	case progressAuto:
		if stderrTTY && !underJournal {
			return progressBar, nil
		}
		return progressPlain, nil
	case progressBar, progressPlain, progressJSON, progressNone:
		return mode, nil
	}
	return "", usageErr("--progress %q: want auto, bar, plain, json or none", mode)
}

// meter renders engine progress reports. The engine's goroutine feeds it,
// and the signal watcher reports through notice, hence the lock; the clock
// is injected so that tests can check speeds and ETAs without sleeping.
type meter struct {
	mu       sync.Mutex
	out      io.Writer
	mode     string
	device   string
	interval time.Duration // plain and json: minimum time between lines; 0 = every window
	now      func() time.Time

	started    bool
	start      time.Time
	startBytes uint64 // bytes already converted when this run began (resume)
	lastEmit   time.Time
	last       engine.Progress
	barOpen    bool // a bar line is on screen without its newline

	// notify sends a systemd notification (sd_notify); nil when the
	// process was not started by a service manager that listens.
	notify     func(state string)
	lastNotify time.Time

	// observe, when set, gets every report and the final state
	// (--metrics-file, metrics.go).
	observe func(state string, p engine.Progress, t time.Time)
	// next is what the pause message tells the user to do.
	next string
}

// notifyInterval bounds how often STATUS= is sent: `systemctl status`
// shows the latest one, and the journal need not record every window.
const notifyInterval = time.Second

func newMeter(out io.Writer, mode, device string, interval time.Duration) *meter {
	m := &meter{out: out, mode: mode, device: device, interval: interval, now: time.Now,
		next: "run the same command again to resume"}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		// Errors are not the conversion's business: a service manager
		// that stopped listening must not stop it.
		m.notify = func(state string) { _, _ = daemon.SdNotify(false, state) }
	}
	return m
}

// sdNotify reports the state to the service manager, if one listens: on
// the first report READY=1 (the conversion is running: a Type=notify unit
// is up), then STATUS= at most once per notifyInterval, and always for
// the first, final and closing reports.
func (m *meter) sdNotify(t time.Time, state string, force bool) {
	if m.notify == nil || !force && t.Sub(m.lastNotify) < notifyInterval {
		return
	}
	m.lastNotify = t
	m.notify(state)
}

// Update is the engine's Options.Progress callback.
func (m *meter) Update(p engine.Progress) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.now()
	first := !m.started
	if first {
		m.started, m.start, m.startBytes = true, t, p.BytesDone
	}
	m.last = p
	final := p.Done == p.Total
	if m.observe != nil {
		m.observe("converting", p, t)
	}
	if m.notify != nil {
		st := "STATUS=" + m.device + ": " + m.line(t)
		if first {
			st = "READY=1\n" + st
		}
		m.sdNotify(t, st, first || final)
	}
	switch m.mode {
	case progressBar:
		if first || final || t.Sub(m.lastEmit) >= barRedraw {
			fmt.Fprintf(m.out, "\r%s\x1b[K", m.line(t))
			m.barOpen = true
			m.lastEmit = t
		}
	case progressPlain:
		if first || final || t.Sub(m.lastEmit) >= m.interval {
			fmt.Fprintln(m.out, m.line(t))
			m.lastEmit = t
		}
	case progressJSON:
		if first || final || t.Sub(m.lastEmit) >= m.interval {
			m.emitJSON(t, "converting", "")
			m.lastEmit = t
		}
	}
}

// speed is this run's average rate in bytes per second, 0 while unknown.
// The average since the start (not a recent-window rate) keeps the ETA
// steady on storage whose speed jitters from window to window.
func (m *meter) speed(t time.Time) float64 {
	el := t.Sub(m.start).Seconds()
	if el <= 0 || m.last.BytesDone <= m.startBytes {
		return 0
	}
	return float64(m.last.BytesDone-m.startBytes) / el
}

// eta is the estimated time to the end, false while unknown.
func (m *meter) eta(t time.Time) (time.Duration, bool) {
	s := m.speed(t)
	if m.last.BytesDone >= m.last.BytesTotal {
		return 0, true
	}
	if s <= 0 {
		return 0, false
	}
	return time.Duration(float64(m.last.BytesTotal-m.last.BytesDone) / s * float64(time.Second)), true
}

func (m *meter) percent() float64 {
	if m.last.BytesTotal == 0 {
		return 100
	}
	return 100 * float64(m.last.BytesDone) / float64(m.last.BytesTotal)
}

// line is the human form shared by bar and plain.
func (m *meter) line(t time.Time) string {
	const mib = 1 << 20
	speed := "--.- MiB/s"
	if s := m.speed(t); s > 0 {
		speed = fmt.Sprintf("%.1f MiB/s", s/mib)
	}
	eta := "--:--"
	if d, ok := m.eta(t); ok {
		eta = formatETA(d)
	}
	return fmt.Sprintf("Progress: %5.1f%%, %d of %d MiB, %s, ETA %s",
		m.percent(), m.last.BytesDone/mib, m.last.BytesTotal/mib, speed, eta)
}

// formatETA prints MM:SS, or H:MM:SS from an hour on.
func formatETA(d time.Duration) string {
	s := int64((d + time.Second/2) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%02d:%02d", s/60, s%60)
}

// progressRecord is one --progress json line. Field names follow what
// cryptsetup's --progress-json consumers expect where there is an
// equivalent (eta_ms, time_ms) and are spelled out elsewhere.
type progressRecord struct {
	Device       string  `json:"device"`
	State        string  `json:"state"`
	Mode         string  `json:"mode"`
	BytesDone    uint64  `json:"bytes_done"`
	BytesTotal   uint64  `json:"bytes_total"`
	WindowsDone  uint64  `json:"windows_done"`
	WindowsTotal uint64  `json:"windows_total"`
	Percent      float64 `json:"percent"`
	Speed        uint64  `json:"speed_bytes_per_s"`
	ETAms        *int64  `json:"eta_ms"` // null while unknown
	Timems       int64   `json:"time_ms"`
	Resumed      bool    `json:"resumed"`
	Message      string  `json:"message,omitempty"`
}

func (m *meter) emitJSON(t time.Time, state, msg string) {
	r := progressRecord{
		Device: m.device, State: state, Mode: m.last.Mode.String(),
		BytesDone: m.last.BytesDone, BytesTotal: m.last.BytesTotal,
		WindowsDone: m.last.Done, WindowsTotal: m.last.Total,
		Percent: float64(int64(m.percent()*100)) / 100,
		Speed:   uint64(m.speed(t)), Resumed: m.last.Resumed, Message: msg,
	}
	if m.started {
		r.Timems = t.Sub(m.start).Milliseconds()
	}
	if d, ok := m.eta(t); ok {
		ms := d.Milliseconds()
		r.ETAms = &ms
	}
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // a struct of plain fields always marshals
	}
	fmt.Fprintf(m.out, "%s\n", b)
}

// notice reports an event outside the progress stream (a signal) in the
// display's format: with --progress json as a record of state "pausing",
// so that every line a consumer reads parses.
func (m *meter) notice(msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mode == progressJSON {
		m.emitJSON(m.now(), "pausing", msg)
		return
	}
	fmt.Fprintf(m.out, "\n%s\n", msg)
	m.barOpen = false
}

// endLine terminates a bar line, so that what follows starts on its own.
func (m *meter) endLine() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.endLineLocked()
}

func (m *meter) endLineLocked() {
	if m.barOpen {
		fmt.Fprintln(m.out)
		m.barOpen = false
	}
}

// finished prints the closing summary of a conversion that completed.
func (m *meter) finished() {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.now()
	m.endLineLocked()
	msg := m.summary(t)
	if m.observe != nil {
		m.observe("complete", m.last, t)
	}
	if !m.started {
		// Complete already, so no report sent READY=1: a Type=notify
		// unit whose process exits 0 without it fails ("protocol"), and
		// rerunning the documented systemd-run command on a finished
		// conversion must succeed. It goes in a message of its own:
		// systemd reads STOPPING=1 first and then ignores a READY=1 in
		// the same message.
		m.sdNotify(t, "READY=1", true)
	}
	m.sdNotify(t, "STOPPING=1\nSTATUS="+m.device+": "+msg, true)
	if m.mode == progressJSON {
		m.emitJSON(t, "complete", msg)
		return
	}
	fmt.Fprintln(m.out, msg)
}

// summary is "Finished, converted X in T (R MiB/s)" for this run.
func (m *meter) summary(t time.Time) string {
	if !m.started {
		// No window was reported: the conversion was complete already.
		return "Already complete: nothing was converted"
	}
	el := t.Sub(m.start)
	n := m.last.BytesDone - m.startBytes
	rate := "n/a"
	if el > 0 {
		rate = fmt.Sprintf("%.1f MiB/s", float64(n)/el.Seconds()/(1<<20))
	}
	return fmt.Sprintf("Finished, converted %s in %s (%s)", formatBytes(n), formatDuration(el), rate)
}

// paused prints how to continue after a clean pause.
func (m *meter) paused(done, total uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.now()
	m.endLineLocked()
	if !m.started {
		m.last.Done, m.last.Total = done, total
	}
	msg := fmt.Sprintf("Paused at %d of %d windows; %s.", done, total, m.next)
	if m.observe != nil {
		m.observe("paused", m.last, t)
	}
	m.sdNotify(t, "STOPPING=1\nSTATUS="+m.device+": "+msg, true)
	if m.mode == progressJSON {
		m.emitJSON(t, "paused", msg)
		return
	}
	fmt.Fprintln(m.out, msg)
}

// formatDuration is units.Duration, named as the rest of this file calls it.
func formatDuration(d time.Duration) string { return units.Duration(d) }
