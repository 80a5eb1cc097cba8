package online

import (
	"strings"
	"testing"

	"github.com/cryptshift/cryptshift/dm"
)

// A NAME removed by a neighbour leaves its hold and private crypto devices
// holding the backing device; recover --activate removes them (resuming a
// suspended one first), and leaves everything else alone.
func TestRemoveOrphans(t *testing.T) {
	f := newFakeDM(t)
	holds, cryptos := holdNames("data"), cryptoNames("data")
	f.add(holds[0], []dm.Target{{Start: 0, Length: 8, Type: "linear", Params: "7:0 0"}})
	f.add(holds[1], []dm.Target{{Start: 0, Length: 8, Type: "linear", Params: "7:0 8"}})
	f.devs[holds[1]].suspended = true
	f.add(cryptos[0], []dm.Target{{Start: 0, Length: 8, Type: "linear", Params: "7:0 0"}})
	f.add("other", []dm.Target{{Start: 0, Length: 8, Type: "linear", Params: "7:0 0"}})
	if err := removeOrphans(f, "data"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{holds[0], holds[1], cryptos[0]} {
		if f.devs[d] != nil {
			t.Errorf("%s is left", d)
		}
	}
	if f.devs["other"] == nil {
		t.Error("a device that is not data's was removed")
	}
	if !strings.Contains(strings.Join(f.ops, ";"), "resume "+holds[1]) {
		t.Errorf("the suspended hold device was not resumed before its removal: %v", f.ops)
	}
}

// A hold device that something still opens is not removed: recovery stops
// with a message naming it.
func TestRemoveOrphansRefusesAnOpenDevice(t *testing.T) {
	f := newFakeDM(t)
	holds := holdNames("data")
	f.add(holds[0], []dm.Target{{Start: 0, Length: 8, Type: "linear", Params: "7:0 0"}})
	f.add("user", []dm.Target{{Start: 0, Length: 8, Type: "linear", Params: f.devs[holds[0]].devno + " 0"}})
	err := removeOrphans(f, "data")
	if err == nil || !strings.Contains(err.Error(), holds[0]) || !strings.Contains(err.Error(), "still open") {
		t.Fatalf("want a refusal naming %s, got %v", holds[0], err)
	}
	if f.devs[holds[0]] == nil {
		t.Error("an open hold device was removed")
	}
}
