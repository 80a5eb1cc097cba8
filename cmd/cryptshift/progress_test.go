package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/errclass"
	"github.com/cryptshift/cryptshift/header"
)

// fakeClock advances only when told to.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock           { return &fakeClock{t: time.Unix(1700000000, 0)} }
func prog(done, total uint64) engine.Progress {
	const win = 4 << 20
	return engine.Progress{Done: done, Total: total, BytesDone: done * win, BytesTotal: total * win, Mode: header.ModeJournal}
}

func TestResolveProgress(t *testing.T) {
	cases := []struct {
		mode         string
		tty, journal bool
		want         string
	}{
		{"auto", true, false, progressBar},
		{"auto", false, false, progressPlain},
		{"auto", true, true, progressPlain}, // systemd: never redraw into the journal
		{"auto", false, true, progressPlain},
		{"bar", false, true, progressBar}, // an explicit choice is obeyed
		{"json", true, false, progressJSON},
		{"none", true, false, progressNone},
		{"plain", true, false, progressPlain},
	}
	for _, c := range cases {
		got, err := resolveProgress(c.mode, c.tty, c.journal)
		if err != nil || got != c.want {
			t.Errorf("resolveProgress(%q, tty=%v, journal=%v) = %q, %v; want %q", c.mode, c.tty, c.journal, got, err, c.want)
		}
	}
	if _, err := resolveProgress("fancy", true, false); !errors.Is(err, errclass.Usage) {
		t.Errorf("unknown mode: got %v, want a usage error", err)
	}
}

func TestPlainProgressHonoursInterval(t *testing.T) {
	var out bytes.Buffer
	clk := newFakeClock()
	m := newMeter(&out, progressPlain, "/dev/x", 5*time.Second)
	m.now = clk.now
	m.Update(prog(0, 100)) // first report: always printed
	for i := uint64(1); i <= 100; i++ {
		clk.add(time.Second) // 4 MiB/s
		m.Update(prog(i, 100))
	}
	m.finished()
	s := out.String()
	if strings.Contains(s, "\r") || strings.Contains(s, "\x1b") {
		t.Fatalf("plain output has terminal control characters: %q", s)
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	// First line, one every 5 s over 100 s (20), the summary.
	if len(lines) != 22 {
		t.Fatalf("got %d lines, want 22:\n%s", len(lines), s)
	}
	if lines[0] != "Progress:   0.0%, 0 of 400 MiB, --.- MiB/s, ETA --:--" {
		t.Errorf("first line %q", lines[0])
	}
	if lines[1] != "Progress:   5.0%, 20 of 400 MiB, 4.0 MiB/s, ETA 01:35" {
		t.Errorf("second line %q", lines[1])
	}
	if lines[20] != "Progress: 100.0%, 400 of 400 MiB, 4.0 MiB/s, ETA 00:00" {
		t.Errorf("last progress line %q", lines[20])
	}
	if want := "Finished, converted 400.0 MiB in 1m40s (4.0 MiB/s)"; lines[21] != want {
		t.Errorf("summary %q, want %q", lines[21], want)
	}
}

func TestBarRedrawsOneLine(t *testing.T) {
	var out bytes.Buffer
	clk := newFakeClock()
	m := newMeter(&out, progressBar, "/dev/x", 0)
	m.now = clk.now
	m.Update(prog(0, 10))
	for i := uint64(1); i <= 10; i++ {
		clk.add(15 * time.Millisecond) // faster than the redraw limit
		m.Update(prog(i, 10))
	}
	m.finished()
	s := out.String()
	if n := strings.Count(s, "\n"); n != 2 {
		t.Fatalf("bar wrote %d newlines, want 2 (end of bar, summary): %q", n, s)
	}
	// Redraws: the first, one at 105 ms, and the final one at 150 ms.
	if n := strings.Count(s, "\r"); n != 3 {
		t.Fatalf("bar redrew %d times, want 3: %q", n, s)
	}
	if !strings.Contains(s, "\rProgress: 100.0%, 40 of 40 MiB, 266.7 MiB/s, ETA 00:00\x1b[K\n") {
		t.Fatalf("final bar line missing: %q", s)
	}
}

func TestBarEndsLineBeforePause(t *testing.T) {
	var out bytes.Buffer
	m := newMeter(&out, progressBar, "/dev/x", 0)
	m.now = newFakeClock().now
	m.Update(prog(3, 10))
	m.paused(3, 10)
	if !strings.HasSuffix(out.String(), "\x1b[K\nPaused at 3 of 10 windows; run the same command again to resume.\n") {
		t.Fatalf("pause message not on its own line: %q", out.String())
	}
}

func TestJSONProgress(t *testing.T) {
	var out bytes.Buffer
	clk := newFakeClock()
	m := newMeter(&out, progressJSON, "/dev/sdz", 0)
	m.now = clk.now
	p := prog(2, 10)
	p.Resumed = true
	m.Update(p)
	clk.add(2 * time.Second)
	p = prog(4, 10)
	p.Resumed = true
	m.Update(p)
	m.paused(4, 10)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3: %q", len(lines), out.String())
	}
	var recs []map[string]any
	for _, l := range lines {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
		recs = append(recs, r)
	}
	if recs[0]["eta_ms"] != nil || recs[0]["speed_bytes_per_s"] != 0.0 {
		t.Errorf("first record claims a speed before any time passed: %v", recs[0])
	}
	r := recs[1]
	want := map[string]any{
		"device": "/dev/sdz", "state": "converting", "mode": "journal",
		"bytes_done": float64(16 << 20), "bytes_total": float64(40 << 20),
		"windows_done": 4.0, "windows_total": 10.0, "percent": 40.0,
		// 8 MiB in this run (resumed at 8 MiB) over 2 s, 24 MiB left: 6 s.
		"speed_bytes_per_s": float64(4 << 20), "eta_ms": 6000.0, "time_ms": 2000.0, "resumed": true,
	}
	for k, v := range want {
		if r[k] != v {
			t.Errorf("record[%q] = %v, want %v", k, r[k], v)
		}
	}
	if recs[2]["state"] != "paused" || !strings.HasPrefix(recs[2]["message"].(string), "Paused at 4 of 10 windows") {
		t.Errorf("pause record %v", recs[2])
	}
}

func TestNoneProgressPrintsOnlySummary(t *testing.T) {
	var out bytes.Buffer
	clk := newFakeClock()
	m := newMeter(&out, progressNone, "/dev/x", 0)
	m.now = clk.now
	m.Update(prog(0, 2))
	clk.add(500 * time.Millisecond)
	m.Update(prog(2, 2))
	m.finished()
	if got, want := out.String(), "Finished, converted 8.0 MiB in 500ms (16.0 MiB/s)\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestFormatETA(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                                     "00:00",
		59*time.Second + 600*time.Millisecond: "01:00",
		62 * time.Second:                      "01:02",
		3600 * time.Second:                    "1:00:00",
		(27*3600 + 61) * time.Second:          "27:01:01",
	} {
		if got := formatETA(d); got != want {
			t.Errorf("formatETA(%v) = %q, want %q", d, got, want)
		}
	}
}

// listenNotify is a stand-in for the service manager's notification
// socket, read as messages arrive (a full queue would block the sender);
// stop returns what was received up to the first STOPPING=1 message,
// waiting a few seconds for it at most.
func listenNotify(t *testing.T) (stop func() []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	msgs := make(chan string, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return func() []string {
		defer conn.Close()
		var got []string
		timeout := time.After(5 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					return got
				}
				got = append(got, m)
				if strings.HasPrefix(m, "STOPPING=1") {
					return got
				}
			case <-timeout:
				return got
			}
		}
	}
}

// Under a service manager: READY=1 with the first report, STATUS= at most
// once a second in between (the engine reports every window), and the
// summary with STOPPING=1 at the end; a pause says how to resume.
func TestSdNotify(t *testing.T) {
	stop := listenNotify(t)
	clk := newFakeClock()
	m := newMeter(io.Discard, progressNone, "/dev/x", 0)
	m.now = clk.now
	m.Update(prog(0, 100))
	for i := uint64(1); i <= 100; i++ {
		clk.add(250 * time.Millisecond)
		m.Update(prog(i, 100))
	}
	m.finished()
	msgs := stop()
	// First, one per second over 25 s, the final report, the summary.
	if len(msgs) < 26 || len(msgs) > 28 {
		t.Fatalf("%d notifications for 101 reports over 25 s, want about 27:\n%q", len(msgs), msgs)
	}
	if !strings.HasPrefix(msgs[0], "READY=1\nSTATUS=/dev/x: Progress:   0.0%") {
		t.Errorf("first notification %q", msgs[0])
	}
	for _, s := range msgs[1 : len(msgs)-1] {
		if !strings.HasPrefix(s, "STATUS=/dev/x: Progress: ") || strings.Contains(s, "READY") {
			t.Errorf("progress notification %q", s)
		}
	}
	if last := msgs[len(msgs)-1]; last != "STOPPING=1\nSTATUS=/dev/x: Finished, converted 400.0 MiB in 25s (16.0 MiB/s)" {
		t.Errorf("last notification %q", last)
	}

	stop = listenNotify(t)
	m = newMeter(io.Discard, progressNone, "/dev/x", 0)
	m.now = clk.now
	m.Update(prog(3, 100))
	m.paused(4, 100)
	msgs = stop()
	if len(msgs) != 2 || msgs[1] != "STOPPING=1\nSTATUS=/dev/x: Paused at 4 of 100 windows; run the same command again to resume." {
		t.Errorf("notifications around a pause: %q", msgs)
	}
}

// A conversion that was complete already reports no window, so READY=1
// comes before the closing message: without it, systemd fails a
// Type=notify unit whose process exits 0 (result "protocol"), and
// rerunning the documented systemd-run command on a finished conversion
// would fail. It must be a message of its own: systemd ignores READY=1
// beside STOPPING=1 (TestDracutSystemd in tests/vm runs the real one).
func TestSdNotifyAlreadyComplete(t *testing.T) {
	stop := listenNotify(t)
	m := newMeter(io.Discard, progressNone, "/dev/x", 0)
	m.finished()
	msgs := stop()
	if len(msgs) != 2 || msgs[0] != "READY=1" || msgs[1] != "STOPPING=1\nSTATUS=/dev/x: Already complete: nothing was converted" {
		t.Errorf("notifications of an already complete conversion: %q", msgs)
	}
}

// Without NOTIFY_SOCKET nothing is sent and nothing fails.
func TestNoNotifySocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if m := newMeter(io.Discard, progressNone, "/dev/x", 0); m.notify != nil {
		t.Fatal("a notifier without NOTIFY_SOCKET")
	}
}
