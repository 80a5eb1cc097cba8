package online

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/dm"
	"github.com/cryptshift/cryptshift/errclass"
)

// neighbours are what another administrator or tool may do to NAME or the
// device under it while a conversion runs, played on the model directly
// (not through the holder, so the holder's op log does not see them).
var neighbours = map[string]func(f *fakeDM){
	"dmsetup reload": func(f *fakeDM) {
		d := f.devs["data"]
		d.inactive = append([]dm.Target(nil), d.live...)
	},
	"dmsetup reload and resume": func(f *fakeDM) {
		d := f.devs["data"]
		t := append([]dm.Target(nil), d.live...)
		t[len(t)-1].Params = strings.Replace(t[len(t)-1].Params, " 1 allow_discards", "", 1)
		d.live = t
	},
	"dmsetup suspend":  func(f *fakeDM) { f.devs["data"].suspended = true },
	"cryptsetup close": func(f *fakeDM) { delete(f.devs, "data") },
	"lvextend":         func(f *fakeDM) { f.sizes["8:16"] = 1<<30 + 8192 },
}

func checkStopped(t *testing.T, f *fakeDM, opsBefore int, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("accepted")
	}
	if !errors.Is(err, errInterfered) || !errors.Is(err, errclass.Device) {
		t.Fatalf("error %v is not an interference (exit 4)", err)
	}
	if !strings.Contains(err.Error(), "recover --activate data") || !strings.Contains(err.Error(), "nothing is lost") {
		t.Fatalf("error does not say how to continue: %v", err)
	}
	if got := f.ops[opsBefore:]; len(got) != 0 {
		t.Fatalf("the holder went on after the change: %v", got)
	}
}

func TestOnlineStopsOnNeighbourBeforeHold(t *testing.T) {
	for name, act := range neighbours {
		t.Run(name, func(t *testing.T) {
			f, o := setup(t, 4, 64)
			convert(t, f, o, []uint64{0, 1})
			act(f)
			n := len(f.ops)
			err := o.Hold(2, 2*64*512, 64*512)
			// The engine aborts a window whose hold failed.
			o.Abort(2, 2*64*512, 64*512, err)
			if serr := o.Settle(); serr == nil {
				t.Fatal("settle after the change accepted")
			}
			checkStopped(t, f, n, err)
			if name == "dmsetup suspend" && !f.devs["data"].suspended {
				t.Fatal("the holder resumed a device someone else suspended")
			}
			if d := f.devs["data"]; d != nil && !d.suspended {
				// What was converted is still served with the right key.
				f.check()
			}
		})
	}
}

func TestOnlineStopsOnNeighbourBeforeSettle(t *testing.T) {
	for name, act := range neighbours {
		t.Run(name, func(t *testing.T) {
			f, o := setup(t, 4, 64)
			convert(t, f, o, []uint64{0})
			act(f)
			n := len(f.ops)
			checkStopped(t, f, n, o.Settle())
		})
	}
}

// A neighbour's change made while a window is held is caught at the next
// table change too; the release itself only touches the hold device, which
// must serve the committed window with the new key whatever NAME became.
func TestOnlineStopsOnNeighbourDuringWindow(t *testing.T) {
	f, o := setup(t, 3, 64)
	if err := o.Hold(0, 0, 64*512); err != nil {
		t.Fatal(err)
	}
	f.disk[0] = "new"
	f.sizes["8:16"] = 1 << 31
	if err := o.Release(0, 0, 64*512); err != nil {
		t.Fatal(err)
	}
	n := len(f.ops)
	checkStopped(t, f, n, o.Hold(1, 64*512, 64*512))
}

// No false alarms: a conversion nobody disturbs never reports one (the
// other holder tests convert whole devices with the check in place), and
// neither does a table the kernel prints differently than it was loaded,
// since the check compares with the table read back.
func TestTableChangeNamesNoKey(t *testing.T) {
	old, _ := testMappings(t)
	a := []dm.Target{dm.MappingTarget(old, "8:16", 2048, 0, 256, nil)}
	b := []dm.Target{dm.MappingTarget(old, "8:16", 2048, 0, 256, []string{"allow_discards"})}
	why := tableChange(a, b)
	if why == "" {
		t.Fatal("changed parameters not seen")
	}
	for _, k := range []string{string(old.Key), hex.EncodeToString(old.Key), strings.ToUpper(hex.EncodeToString(old.Key))} {
		if strings.Contains(why, k) {
			t.Fatalf("the reason prints the key: %s", why)
		}
	}
	if tableChange(a, a) != "" {
		t.Fatal("an unchanged table reported as changed")
	}
}

// A neighbour's suspend that lands between the check and the holder's own
// suspend (it waited for the previous window's flush) makes the kernel
// refuse the holder's: that is reported as the neighbour's change, and
// the abort does not resume the device they suspended.
func TestOnlineNeighbourSuspendRacesTheHold(t *testing.T) {
	f, o := setup(t, 4, 64)
	convert(t, f, o, []uint64{0})
	f.onOp = func(op string) {
		if op == "suspend data noflush,skiplockfs" {
			f.devs["data"].suspended = true
			f.onOp = nil
		}
	}
	err := o.Hold(1, 64*512, 64*512)
	o.Abort(1, 64*512, 64*512, err)
	if !errors.Is(err, errInterfered) || !errors.Is(err, errclass.Device) || !strings.Contains(err.Error(), "is suspended") {
		t.Fatalf("hold error %v does not name the neighbour's suspend", err)
	}
	if !f.devs["data"].suspended {
		t.Fatal("the holder resumed a device someone else suspended")
	}
	n := len(f.ops)
	if err := o.Settle(); err == nil || len(f.ops) != n {
		t.Fatalf("settle after the change: %v, ops %v", err, f.ops[n:])
	}
	// When the neighbour resumes, the table the holder loaded goes live:
	// it serves every window with the mapping the disk holds.
	d := f.devs["data"]
	d.live, d.inactive, d.suspended = d.inactive, nil, false
	f.check()
}
