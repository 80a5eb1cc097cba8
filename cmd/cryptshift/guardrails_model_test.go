package main

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/demo"
	"github.com/cryptshift/cryptshift/engine"
	"github.com/cryptshift/cryptshift/header"
	"github.com/cryptshift/cryptshift/sectorcipher"
)

// The guard-rails model test: random sequences of CLI runs on a small
// image, as a user makes them (start, Ctrl-C at a random window, resume
// with flags a little wrong, the metadata file deleted, truncated, zeroed
// or restored from an older copy, the device grown), each checked against
// the known plaintext with an independent decryption (sectorcipher):
//
//   - no sector is ever lost: every 4 KiB block of the original data
//     decrypts to its plaintext under some mapping a run was given;
//   - a refused run (usage, wrong key, device, header, conflict, refused)
//     leaves the image and the metadata byte for byte as they were;
//   - a run that completes leaves every window of the header's range
//     under exactly the header's new mapping, and one that pauses every
//     window below done under the new mapping and the rest under the old.
//
// The CLI's run function is called in-process (a process per run would
// cost more than the run). Ctrl-C is a real SIGINT sent to this process
// when the n-th progress line is written: the same signal path as a
// terminal's, and no hook in the binary. The test keeps SIGINT notified
// for its whole duration, so a signal that arrives between runs is
// harmless.

var (
	guardLong = flag.Bool("long", false, "run the guard-rails model test for many more steps")
	guardSeed = flag.Uint64("guardrails.seed", 0, "seed of the guard-rails model test's first sequence (0: from CRYPTSHIFT_GUARDRAILS_SEED, else random)")
)

const (
	gmMeta   = 1 << 20 // metadata area or file: the engine's minimum
	gmKeyLen = 32      // aes-xts-plain64 (AES-128) and aes-cbc-essiv:sha256 both take 32 bytes
)

// gmMapping is one side of a conversion as the test names it.
type gmMapping struct {
	cipher string
	sector int
	iv     uint64
	key    int // index into the key files
}

func (m gmMapping) String() string {
	return fmt.Sprintf("%s/%d/iv%d/k%d", m.cipher, m.sector, m.iv, m.key)
}

// gmPlan is what the current conversion is, as the user believes it.
type gmPlan struct {
	old, new gmMapping
	meta     string // "" = the end of the device
	mode     string
	window   int64
	started  bool // a header exists: mapping flags may be left out
}

type gmStats struct {
	runs, refused, lost, paused, completed, mutations int
}

type guardModel struct {
	t        *testing.T
	rng      *rand.Rand
	seed     uint64
	dir      string
	img      string
	keys     []string
	keyBytes [][]byte
	plain    []byte // the original data's plaintext
	data     int64  // bytes of original data, from byte 0
	plan     gmPlan
	known    []gmMapping // every mapping any run named
	snaps    [][]byte    // metadata as it was after earlier pauses
	steps    []string
	what     string // the step in hand, for the failure tally
	after    string // the mutation before it, if any
	sigs     chan os.Signal
	st       *gmStats
	others   int
}

// gmFailure ends a sequence: the seed and the steps replay it.
type gmFailure struct{ msg string }

func TestGuardRailsModel(t *testing.T) {
	// About 1,000 runs and 1,300 steps by default: under two minutes
	// on a shared two-core machine.
	seqs := 160
	switch {
	case testing.Short():
		seqs = 10
	case *guardLong:
		seqs = 3000
	}
	seed := *guardSeed
	if seed == 0 {
		if s, err := strconv.ParseUint(os.Getenv("CRYPTSHIFT_GUARDRAILS_SEED"), 10, 64); err == nil {
			seed = s
		}
	}
	if seed == 0 {
		seed = rand.Uint64()>>1 | 1
	}
	for _, e := range []string{hookInterruptAfter, hookKillAfter, "NOTIFY_SOCKET", "JOURNAL_STREAM"} {
		t.Setenv(e, "")
		os.Unsetenv(e)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT)
	defer signal.Stop(sigs)
	base := t.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		// Images on tmpfs: the engine's flushes cost nothing there, and
		// what is tested is the logic, not the disk.
		if d, err := os.MkdirTemp("/dev/shm", "cryptshift-guardrails-"); err == nil {
			base = d
			defer os.RemoveAll(d)
		}
	}
	st := &gmStats{}
	start := time.Now()
	var failures []string
	kinds := map[string]int{}
	for i := 0; i < seqs; i++ {
		s := seed + uint64(i)
		dir := filepath.Join(base, strconv.Itoa(i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		m := &guardModel{t: t, rng: rand.New(rand.NewPCG(s, s^0x9e3779b97f4a7c15)), seed: s, dir: dir, sigs: sigs, st: st}
		if f := m.sequence(); f != nil {
			kinds[m.what]++
			failures = append(failures, fmt.Sprintf("seed %d: %s\n  replay: go test ./cmd/cryptshift -run '^TestGuardRailsModel$' -guardrails.seed=%d (or CRYPTSHIFT_GUARDRAILS_SEED=%d)\n  steps:\n    %s",
				s, f.msg, s, s, strings.Join(m.steps, "\n    ")))
		}
		os.RemoveAll(dir)
	}
	summary := fmt.Sprintf("guard rails: %d runs, %d refused, %d sectors lost", st.runs, st.refused, st.lost)
	// On stdout as well as in the log: scripts/test.sh greps it from a -v run.
	fmt.Println(summary)
	t.Logf("%s (%d paused, %d completed, %d mutations between runs, %d sequences from seed %d, %v)",
		summary, st.paused, st.completed, st.mutations, seqs, seed, time.Since(start).Round(time.Second))
	if p := os.Getenv("CRYPTSHIFT_GUARDRAILS_LOG"); p != "" && len(failures) > 0 {
		// Every failure, for triage; the test output shows the first few.
		os.WriteFile(p, []byte(strings.Join(failures, "\n")+"\n"), 0o600)
	}
	if len(failures) > 0 {
		shown := failures[:min(len(failures), 5)]
		t.Fatalf("%d of %d sequences failed (by the step that failed: %v); the first %d:\n%s", len(failures), seqs, kinds, len(shown), strings.Join(shown, "\n"))
	}
}

func (m *guardModel) pick(n int) int { return m.rng.IntN(n) }

func (m *guardModel) chance(p float64) bool { return m.rng.Float64() < p }

func (m *guardModel) randomMapping(key int) gmMapping {
	g := gmMapping{cipher: "aes-xts-plain64", sector: 512, key: key}
	if m.chance(0.3) {
		g.cipher = "aes-cbc-essiv:sha256"
	}
	if m.chance(0.4) {
		g.sector = 4096
	}
	if m.chance(0.3) {
		g.iv = 2048
	}
	return g
}

func (m *guardModel) cipherOf(g gmMapping) sectorcipher.Cipher {
	spec, err := sectorcipher.ParseSpec(g.cipher)
	if err != nil {
		m.t.Fatal(err)
	}
	c, err := sectorcipher.New(sectorcipher.Mapping{Spec: spec, Key: m.keyBytes[g.key], SectorSize: g.sector, IVOffset: g.iv})
	if err != nil {
		m.t.Fatal(err)
	}
	return c
}

// setup makes the image: demo text under the old mapping, then (with the
// metadata on the device) a zeroed metadata area.
func (m *guardModel) setup() {
	m.data = int64(1+m.pick(2)) << 20
	// Not none: it needs --force, which also overrides the plausibility
	// check, so what it destroys the user asked for.
	m.plan = gmPlan{mode: []string{"journal", "journal", "checksum"}[m.pick(3)], window: int64(64<<10) << m.pick(3)}
	if m.chance(0.5) {
		m.plan.meta = filepath.Join(m.dir, "conv.meta")
	}
	for i := range 3 {
		k := make([]byte, gmKeyLen)
		for j := range k {
			k[j] = byte(m.rng.Uint32())
		}
		p := filepath.Join(m.dir, fmt.Sprintf("k%d", i))
		if err := os.WriteFile(p, k, 0o600); err != nil {
			m.t.Fatal(err)
		}
		m.keys, m.keyBytes = append(m.keys, p), append(m.keyBytes, k)
	}
	m.plan.old = m.randomMapping(0)
	m.plan.new = m.randomMapping(1)
	if m.plan.new == m.plan.old {
		m.plan.new.key = 1
	}
	m.known = []gmMapping{m.plan.old, m.plan.new}
	m.plain = make([]byte, m.data)
	demo.Plain(m.plain, 0)
	size := m.data
	if m.plan.meta == "" {
		size += gmMeta
	}
	img := make([]byte, size)
	copy(img, m.plain)
	m.cipherOf(m.plan.old).Encrypt(img[:m.data], 0)
	m.img = filepath.Join(m.dir, "disk.img")
	if err := os.WriteFile(m.img, img, 0o600); err != nil {
		m.t.Fatal(err)
	}
	m.steps = append(m.steps, fmt.Sprintf("image: %d bytes of data under %v, metadata %q, %s, window %d, new %v",
		m.data, m.plan.old, m.plan.meta, m.plan.mode, m.plan.window, m.plan.new))
}

func (m *guardModel) sequence() (f *gmFailure) {
	defer func() {
		if r := recover(); r != nil {
			if ff, ok := r.(gmFailure); ok {
				f = &ff
				return
			}
			panic(r)
		}
	}()
	m.setup()
	for range 4 + m.pick(9) {
		switch r := m.rng.Float64(); {
		case r < 0.45:
			m.convert(m.plan, "")
		case r < 0.8:
			p, what := m.perturb()
			m.convert(p, what)
		case r < 0.85:
			m.recoverRun()
		default:
			m.mutate()
		}
	}
	return nil
}

func (m *guardModel) fail(format string, a ...any) {
	panic(gmFailure{fmt.Sprintf(format, a...)})
}

// perturb returns the plan with one thing a user might get wrong.
func (m *guardModel) perturb() (gmPlan, string) {
	p := m.plan
	flip := func(s int) int {
		if s == 512 {
			return 4096
		}
		return 512
	}
	otherCipher := func(c string) string {
		if c == "aes-xts-plain64" {
			return "aes-cbc-essiv:sha256"
		}
		return "aes-xts-plain64"
	}
	switch m.pick(13) {
	case 0:
		if p.meta == "" {
			m.others++
			p.meta = filepath.Join(m.dir, fmt.Sprintf("other%d.meta", m.others))
			return p, "--metadata added (another path)"
		}
		p.meta = ""
		return p, "--metadata left out"
	case 1:
		m.others++
		p.meta = filepath.Join(m.dir, fmt.Sprintf("other%d.meta", m.others))
		return p, "--metadata on another path"
	case 2:
		p.old.sector = flip(p.old.sector)
		return p, "old sector size wrong"
	case 3:
		p.new.sector = flip(p.new.sector)
		return p, "new sector size changed"
	case 4:
		p.old.iv ^= 2048
		return p, "old IV offset wrong"
	case 5:
		p.new.iv ^= 2048
		return p, "new IV offset changed"
	case 6:
		p.old.cipher = otherCipher(p.old.cipher)
		return p, "old cipher wrong"
	case 7:
		p.new.cipher = otherCipher(p.new.cipher)
		return p, "new cipher changed"
	case 8:
		p.old.key, p.new.key = p.new.key, p.old.key
		return p, "key files swapped"
	case 9:
		p.new.key = 3 - p.old.key - p.new.key
		return p, "another new key"
	case 10:
		p.old.key = 3 - p.old.key - p.new.key
		return p, "another old key"
	case 11:
		p.mode = map[string]string{"journal": "checksum", "checksum": "journal"}[p.mode]
		return p, "resilience changed"
	}
	p.window *= 2
	return p, "window changed"
}

// metaBytes is the conversion's metadata as it is now (nil if absent).
func (m *guardModel) metaBytes() []byte {
	if m.plan.meta != "" {
		b, err := os.ReadFile(m.plan.meta)
		if err != nil {
			return nil
		}
		return b
	}
	b := m.readFile(m.img)
	return b[m.data:]
}

func (m *guardModel) readFile(p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		m.t.Fatal(err)
	}
	return b
}

func (m *guardModel) mutate() {
	n := len(m.steps)
	defer func() {
		if len(m.steps) > n {
			m.st.mutations++
			m.after = strings.SplitN(m.steps[len(m.steps)-1], " to ", 2)[0] + ", then "
		}
	}()
	switch m.pick(5) {
	case 0: // the device grows, as lvextend does
		f, err := os.OpenFile(m.img, os.O_RDWR, 0)
		if err != nil {
			m.t.Fatal(err)
		}
		st, _ := f.Stat()
		f.Truncate(st.Size() + 1<<20)
		f.Close()
		m.steps = append(m.steps, "device grown by 1 MiB")
		return
	case 1:
		if len(m.snaps) == 0 {
			return
		}
		old := m.snaps[m.pick(len(m.snaps))]
		m.writeMeta(old)
		m.steps = append(m.steps, "metadata replaced by an older copy")
		return
	}
	if m.plan.meta == "" {
		// On the device: the end zeroed (where a header copy lives).
		b := m.readFile(m.img)
		clear(b[len(b)-8192:])
		os.WriteFile(m.img, b, 0o600)
		m.steps = append(m.steps, "last 8 KiB of the device zeroed")
		return
	}
	switch m.pick(3) {
	case 0:
		os.Remove(m.plan.meta)
		m.steps = append(m.steps, "metadata file deleted")
	case 1:
		n := m.rng.Int64N(gmMeta)
		os.Truncate(m.plan.meta, n)
		m.steps = append(m.steps, fmt.Sprintf("metadata file truncated to %d bytes", n))
	case 2:
		if st, err := os.Stat(m.plan.meta); err == nil {
			os.WriteFile(m.plan.meta, make([]byte, st.Size()), 0o600)
			m.steps = append(m.steps, "metadata file zeroed")
		}
	}
}

// writeMeta puts b back where the conversion's metadata was.
func (m *guardModel) writeMeta(b []byte) {
	if m.plan.meta != "" {
		if err := os.WriteFile(m.plan.meta, b, 0o600); err != nil {
			m.t.Fatal(err)
		}
		return
	}
	f, err := os.OpenFile(m.img, os.O_RDWR, 0)
	if err != nil {
		m.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, m.data); err != nil {
		m.t.Fatal(err)
	}
}

func (m *guardModel) args(p gmPlan, perturbed bool) []string {
	a := []string{"cryptshift", "convert", "--old-key-file", m.keys[p.old.key], "--new-key-file", m.keys[p.new.key]}
	// Once a conversion is recorded, a user may leave out what it records
	// (but not what the step changes).
	if perturbed || !m.plan.started || m.chance(0.5) {
		for _, s := range []struct {
			name string
			g    gmMapping
		}{{"old", p.old}, {"new", p.new}} {
			a = append(a, "--"+s.name+"-cipher", s.g.cipher, "--"+s.name+"-sector-size", strconv.Itoa(s.g.sector),
				"--"+s.name+"-iv-offset", strconv.FormatUint(s.g.iv, 10))
		}
		a = append(a, "--resilience", p.mode, "--window", strconv.FormatInt(p.window, 10), "--metadata-size", "1M")
	}
	if p.meta != "" {
		a = append(a, "--metadata", p.meta)
	}
	return append(a, "--progress", "plain", "--progress-interval", "0", m.img)
}

// interruptingWriter sends this process SIGINT when the n-th progress
// line is written (n 0: never), and waits until the signal is delivered,
// so that the pause comes at about that window.
type interruptingWriter struct {
	buf   bytes.Buffer
	n     int
	lines int
	sigs  chan os.Signal
	sent  bool
}

func (w *interruptingWriter) Write(b []byte) (int, error) {
	if bytes.HasPrefix(b, []byte("Progress:")) {
		w.lines++
		if w.lines == w.n && !w.sent {
			w.sent = true
			syscall.Kill(os.Getpid(), syscall.SIGINT)
			select {
			case <-w.sigs:
			case <-time.After(time.Minute):
				panic("SIGINT to self was never delivered")
			}
		}
	}
	return w.buf.Write(b)
}

func (m *guardModel) recoverRun() {
	a := []string{"cryptshift", "recover", "--old-key-file", m.keys[m.plan.old.key], "--new-key-file", m.keys[m.plan.new.key]}
	if m.plan.meta != "" {
		a = append(a, "--metadata", m.plan.meta)
	}
	m.runAndCheck(m.plan, append(a, m.img), "recover", 0)
}

func (m *guardModel) convert(p gmPlan, what string) {
	n := 0
	if m.chance(0.7) {
		n = 1 + m.pick(int(m.data/p.window))
	}
	perturbed := what != ""
	if !perturbed {
		what = "convert"
	}
	for _, g := range []gmMapping{p.old, p.new} {
		if !slices.Contains(m.known, g) {
			m.known = append(m.known, g)
		}
	}
	m.runAndCheck(p, m.args(p, perturbed), what, n)
}

func (m *guardModel) runAndCheck(p gmPlan, args []string, what string, interruptAt int) {
	imgBefore := m.readFile(m.img)
	metaBefore, metaErr := os.ReadFile(p.meta)
	planMetaBefore := m.metaBytes()
	var stdout bytes.Buffer
	stderr := &interruptingWriter{n: interruptAt, sigs: m.sigs}
	code := run(args, &stdout, stderr)
	if stderr.sent {
		// The watcher may have been gone already (a refusal, a finished
		// run): the signal then reached only this test's channel.
		for len(m.sigs) > 0 {
			<-m.sigs
		}
	}
	m.st.runs++
	line := strings.TrimSpace(stderr.buf.String())
	if i := strings.LastIndex(line, "\n"); i >= 0 {
		line = line[i+1:]
	}
	m.what, m.after = m.after+what, ""
	step := fmt.Sprintf("%s (interrupt at line %d): exit %d: %s\n      %s", what, interruptAt, code, line, strings.Join(args[1:], " "))
	m.steps = append(m.steps, step)

	m.checkNoLoss()
	switch code {
	case exitUsage, exitWrongKey, exitDevice, exitHeader, exitConflict, exitRefused:
		m.st.refused++
		if !bytes.Equal(m.readFile(m.img), imgBefore) {
			m.fail("refused (exit %d), but the image changed", code)
		}
		metaAfter, err := os.ReadFile(p.meta)
		if metaErr == nil && (err != nil || !bytes.Equal(metaAfter, metaBefore)) {
			m.fail("refused (exit %d), but the metadata file %s changed", code, p.meta)
		}
		if !bytes.Equal(m.metaBytes(), planMetaBefore) {
			m.fail("refused (exit %d), but the conversion's metadata changed", code)
		}
	case exitOK, exitPaused:
		h := m.checkHeader(p, args[1] == "recover")
		if code == exitPaused && !bytes.Contains(stderr.buf.Bytes(), []byte("Paused at")) && args[1] == "convert" {
			m.fail("exit 8 without the pause message")
		}
		if h == nil {
			return
		}
		if code == exitPaused {
			m.st.paused++
		} else if args[1] == "convert" {
			m.st.completed++
		}
		// The run worked on the conversion at p.meta: it is the plan now.
		m.plan = p
		m.plan.started = true
		m.plan.old = m.fromHeader(h.Old, p.old.key)
		m.plan.new = m.fromHeader(h.New, p.new.key)
		m.plan.mode, m.plan.window = h.Mode.String(), int64(h.Window)
		if h.State == header.StateComplete && args[1] == "convert" {
			// The next conversion starts from where this one ended.
			next := m.randomMapping(3 - p.old.key - p.new.key)
			if m.plan.meta == "" || m.chance(0.5) {
				m.plan.old, m.plan.new = m.plan.new, next
				m.plan.started = false
				m.known = append(m.known, next)
				m.snaps = nil
			}
		} else if code == exitPaused {
			m.snaps = append(m.snaps, m.metaBytes())
		}
	default:
		m.fail("exit %d is neither a refusal nor a clean end", code)
	}
}

func (m *guardModel) fromHeader(hm header.Mapping, key int) gmMapping {
	return gmMapping{cipher: hm.Cipher, sector: int(hm.SectorSize), iv: hm.IVOffset, key: key}
}

// checkHeader checks the device against the header the run left at
// p.meta: every window below done under the new mapping, the rest under
// the old one, within the original data.
func (m *guardModel) checkHeader(p gmPlan, isRecover bool) *header.Header {
	t, cleanup, err := openTarget(m.img, p.meta, 0, blockdev.Options{ReadOnly: true})
	if err != nil {
		m.fail("the run ended cleanly, but its metadata cannot be opened: %v", err)
	}
	defer cleanup(false)
	st, err := engine.ReadStatus(t)
	if err != nil {
		m.fail("the run ended cleanly, but its header cannot be read: %v", err)
	}
	h := st.Header
	if st.Open != nil {
		m.fail("the run ended cleanly, but window %d is open", *st.Open)
	}
	newM, oldM := m.fromHeader(h.New, p.new.key), m.fromHeader(h.Old, p.old.key)
	img := m.readFile(m.img)
	if h.Mode == header.ModeShift || h.Descending {
		return h // data moves: not generated here
	}
	for w := uint64(0); w < h.Windows(); w++ {
		lo := int64(w * h.Window)
		hi := min(lo+int64(h.Window), int64(h.DataSize))
		g, off := oldM, int64(h.OldOffset)
		if w < st.Done {
			g, off = newM, int64(h.NewOffset)
		}
		lo, hi = max(lo, 0), min(hi, m.data-off)
		if lo >= hi {
			continue
		}
		if bad := m.blockUnder(img, g, off+lo, hi-lo); bad >= 0 {
			m.fail("header: %d of %d windows done (state %v); window %d is not under %v at byte %d", st.Done, h.Windows(), h.State, w, g, off+lo+bad)
		}
	}
	return h
}

// blockUnder decrypts [off, off+n) of the image under g and returns the
// offset of the first 4 KiB block that differs from the plaintext, or -1.
func (m *guardModel) blockUnder(img []byte, g gmMapping, off, n int64) int64 {
	b := bytes.Clone(img[off : off+n])
	m.cipherOf(g).Decrypt(b, uint64(off/512))
	for i := int64(0); i < n; i += 4096 {
		if !bytes.Equal(b[i:i+4096], m.plain[off+i:off+i+4096]) {
			return i
		}
	}
	return -1
}

// checkNoLoss: every 4 KiB block of the original data decrypts to its
// plaintext under one of the mappings any run was given.
func (m *guardModel) checkNoLoss() {
	img := m.readFile(m.img)[:m.data]
	ok := make([]bool, m.data/4096)
	left := len(ok)
	for _, g := range m.known {
		b := bytes.Clone(img)
		m.cipherOf(g).Decrypt(b, 0)
		for i := range ok {
			if !ok[i] && bytes.Equal(b[i*4096:(i+1)*4096], m.plain[i*4096:(i+1)*4096]) {
				ok[i] = true
				left--
			}
		}
		if left == 0 {
			return
		}
	}
	m.st.lost += left * 8
	first := slices.Index(ok, false)
	m.fail("%d sectors lost: the 4 KiB block at byte %d decrypts to its plaintext under none of %v", left*8, first*4096, m.known)
}
