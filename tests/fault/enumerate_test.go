package fault

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

var long = flag.Bool("long", false, "crash the engine thoroughly: about a million crash states (give -timeout 90m)")

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	talliesMu.Lock()
	var states, checks int64
	modes := make([]string, 0, len(tallies))
	for mode := range tallies {
		modes = append(modes, mode)
	}
	slices.Sort(modes)
	for _, mode := range modes {
		s, c := tallies[mode].states.Load(), tallies[mode].checks.Load()
		switch {
		case strings.HasPrefix(mode, "io-errors/"):
			fmt.Printf("fault: %s: %d states after an I/O error, %d property checks\n", mode, s, c)
			continue
		case mode == "mutants":
			fmt.Printf("fault: mutants (a flush dropped): %d crash states until caught, %d property checks\n", s, c)
			continue
		}
		states += s
		checks += c
		fmt.Printf("fault: %s: %d crash states, %d property checks\n", mode, s, c)
	}
	talliesMu.Unlock()
	if states > 0 {
		fmt.Printf("fault: %d crash states, %d property checks\n", states, checks)
	}
	os.Exit(code)
}

const kib = 1 << 10

// scenarios cover every resilience mode (shift both ways), plaintext to
// ciphertext and back, 512- and 4096-byte crypto sectors on either side,
// metadata on the data disk or on its own disk, and a short last window.
func scenarios() []scenario {
	base := func(mode string, old, nw sideSpec, sep, up bool) scenario {
		return scenario{mode: mode, old: old, nw: nw, sepMeta: sep, up: up, window: 12 * kib, windows: 10, tail: 8 * kib}
	}
	s := []scenario{
		base("journal", xts512, essiv512, false, false),
		base("journal", plain512, xts4096, true, false),
		base("checksum", xts512, xts4096, false, false),
		base("checksum", essiv512, plain512, true, false),
		base("shift", plain512, xts512, false, false),
		base("shift", xts4096, plain512, true, true),
		base("none", xts512, xts512b, false, false),
		base("none", cbc4096, xts512, true, false),
	}
	// The log fills up after 14 journal records of 64 KiB windows: the
	// checkpoint-and-wrap path runs too.
	wrap := scenario{name: "logwrap", mode: "journal", old: xts512, nw: cbc4096, window: 64 * kib, windows: 16}
	s = append(s, wrap)
	for _, sc := range []scenario{
		base("journal", xts512, xts4096, true, false),
		base("checksum", essiv512, xts512, false, false),
		base("shift", xts4096, essiv512, true, false),
		base("shift", plain512, cbc4096, false, true),
		base("none", plain512, xts512, false, false),
	} {
		sc.online = true
		s = append(s, sc)
	}
	// Kernel crypto (engine.CryptoDevices), online and off, every mode,
	// both shift directions, a plaintext side, metadata on either disk.
	// Journal's record and checksum's old digests are read raw from the
	// data disk; checksum's new digests come from the Sealer.
	for _, sc := range []scenario{
		base("shift", xts512, xts4096, false, false),
		base("shift", essiv512, plain512, true, true),
		base("none", plain512, xts512, false, false),
		base("shift", xts4096, xts512, true, false),
		base("journal", xts512, essiv512, false, false),
		base("journal", plain512, xts4096, true, false),
		base("checksum", xts512, xts4096, true, false),
		base("checksum", essiv512, plain512, false, false),
	} {
		sc.kernel = true
		sc.online = sc.mode == "none" || sc.up || !sc.sepMeta
		if sc.mode == "journal" || sc.mode == "checksum" {
			// One of each online, one offline.
			sc.online = sc.sepMeta
		}
		s = append(s, sc)
	}
	if *long {
		// Every pair of the sides in every mode and layout.
		sides := []sideSpec{plain512, xts512, xts4096, essiv512, cbc4096}
		for i, old := range sides {
			for j, nw := range sides {
				if i == j {
					continue
				}
				for _, mode := range []string{"journal", "checksum", "shift", "none"} {
					sc := base(mode, old, nw, (i+j)%2 == 1, mode == "shift" && (i+2*j)%3 == 0)
					sc.name = "long"
					sc.online = (i+j+len(mode))%3 == 0
					sc.kernel = (i+j)%2 == 0
					s = append(s, sc)
				}
			}
		}
	}
	return s
}

// budget is how hard each run is crashed.
func budget(sc scenario) sweepOpts {
	o := sweepOpts{
		enum:      EnumOptions{MaxStates: 16, Torn: true, Shorn: true, Seed: 1},
		seeds:     1,
		nestEvery: 20,
		nestEnum:  EnumOptions{MaxStates: 6, Torn: true, Shorn: true, Seed: 2},
	}
	switch {
	case testing.Short():
		o.enum.MaxStates = 2
		o.nestEvery = 0
	case *long:
		o.enum = EnumOptions{MaxStates: 64, MaxSubset: 6, Torn: true, Shorn: true, Seed: 1}
		o.seeds = 4
		o.nestEvery = 4
		o.nestEnum.MaxStates = 8
	}
	return o
}

func TestCrashEnumeration(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.String(), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, sc)
			r := record(t, f, nil)
			o := budget(sc)
			if testing.Short() {
				o.points = r.dom.FlushPoints()
				o.points = everyNth(o.points, 3)
			} else if sc.name == "logwrap" && !*long {
				o.points = flushPointsPlus(r.dom, 5)
			}
			c := newChecker(f)
			c.stopAfter = 20
			c.sweep(r, o)
			c.report(t)
			points := len(o.points)
			if o.points == nil {
				points = r.dom.Ops() + 1
			}
			// Every crash point yields at least the state "nothing pending
			// persisted"; fewer states means the sweep skipped points.
			if c.stopAfter > len(c.violations) && (c.states < points || points < f.windows) {
				t.Fatalf("only %d crash states at %d crash points for %d windows: the sweep went blind", c.states, points, f.windows)
			}
			// Torn 4096-byte units in checksum mode, and any crash mid-window
			// in none mode, must have come up as damage: else P5 went unchecked.
			if !testing.Short() && (sc.mode == "none" || sc.mode == "checksum" && f.unit > 512) && c.damages == 0 {
				t.Errorf("no crash state led to a damage report")
			}
		})
	}
}

func everyNth(ks []int, n int) []int {
	var out []int
	for i, k := range ks {
		if i%n == 0 || i == len(ks)-1 {
			out = append(out, k)
		}
	}
	return out
}
