package vm

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// laneFound is what a boot found of a lane the previous boot's kill left:
// no header at all, or the state and windows done that `cryptshift status`
// reports after `recover --all`.
type laneFound struct {
	fresh  bool
	header bool
	state  string
	done   int
}

func foundAfterKill(console, l string) laneFound {
	f := laneFound{fresh: regexp.MustCompile(`(?m)^FRESH ` + l + `$`).MatchString(console)}
	if m := regexp.MustCompile(`(?m)^PROGRESS ` + l + ` "state":"(\w+)","windows_done":(\d+),$`).FindStringSubmatch(console); m != nil {
		f.header, f.state = true, m[1]
		f.done, _ = strconv.Atoi(m[2])
	}
	return f
}

func (f laneFound) complete() bool { return f.header && f.state == "complete" }

func (f laneFound) String() string {
	if !f.header {
		return "no header"
	}
	return fmt.Sprintf("%d %s", f.done, f.state)
}

// checkPlan asserts that the lanes plan forced in boot are in the state it
// forced them into, as the next boot found them. The harness guarantees
// the state the kill came in; a lane found otherwise means cryptshift did
// not record, or did not recover, what it had reported durable.
func checkPlan(t *testing.T, boot int, plan bootPlan, killed *Result, found map[string]laneFound) {
	t.Helper()
	got := rcs(killed.Console)
	for _, l := range plan.lanes() {
		a, f := plan.forced[l], found[l]
		switch a.kind {
		case laneFinish:
			if c := got[l]["convert"]; len(c) != 1 || c[0] != 0 {
				t.Errorf("boot %d, %s: the conversion the kill waited for exited %v, want 0:\n%s", boot, l, c, strings.Join(taggedLines(killed.Console, "OUT", l), "\n"))
			} else if !f.complete() {
				t.Errorf("boot %d, %s: the conversion had exited 0 before the kill, but after it the status says %v, not complete", boot, l, f)
			}
		case laneFreeze:
			m := regexp.MustCompile(`(?m)^FROZEN ` + l + ` (\d+)$`).FindStringSubmatch(killed.Console)
			if m == nil {
				t.Errorf("boot %d, %s: the conversion ended (exit %v) before it reported window %d, where the plan froze it:\n%s", boot, l, got[l]["convert"], a.window, strings.Join(taggedLines(killed.Console, "OUT", l), "\n"))
				continue
			}
			d, _ := strconv.Atoi(m[1])
			if !f.header || f.complete() || f.done < d {
				t.Errorf("boot %d, %s: the conversion had reported %d windows done when its metadata froze, and could write no more; after the kill the status says %v", boot, l, d, f)
			}
		case lanePreHeader:
			if !strings.Contains(killed.Console, "PRE-HEADER "+l+"\n") {
				t.Errorf("boot %d, %s: the script did not hold the metadata before the conversion", boot, l)
			} else if !f.fresh {
				t.Errorf("boot %d, %s: the conversion could not write its metadata before the kill, yet after it the lane was not found without a header (%v)", boot, l, f)
			}
		}
	}
}

// killCoverage counts, over a chain, the kills that found a lane in each
// of the states every chain must reach.
type killCoverage struct {
	preHeader, restarted, kernel int
}

// add counts what found says the kill of the boot with console killed left.
func (c *killCoverage) add(killed string, found map[string]laneFound) {
	for _, l := range killLanes {
		f := found[l]
		if f.fresh {
			c.preHeader++
		}
		if regexp.MustCompile(`(?m)^NEXT-GEN `+l+` `).MatchString(killed) && !f.complete() {
			c.restarted++
		}
	}
	if regexp.MustCompile(`(?m)^KERNEL-CRYPTO shift `).MatchString(killed) && found["shift"].header && !found["shift"].complete() {
		c.kernel++
	}
}

func (c killCoverage) String() string {
	return fmt.Sprintf("%d before any header, %d after the lane completed and restarted, %d in a --crypto kernel run",
		c.preHeader, c.restarted, c.kernel)
}
