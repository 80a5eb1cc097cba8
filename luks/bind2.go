package luks

import (
	"fmt"
	"strconv"

	"github.com/cryptshift/cryptshift/errclass"
)

// MoveSegments hands every segment of digest from to digest to: the switch
// that makes stock cryptsetup map the data with to's volume key (the last
// header change of a conversion, once the data are all under that key).
// from keeps its keyslots, now unbound, until they are removed.
func (d *Draft2) MoveSegments(from, to int) error {
	m, err := d.Metadata()
	if err != nil {
		return err
	}
	src, ok1 := m.Digests[from]
	dst, ok2 := m.Digests[to]
	if !ok1 || !ok2 || from == to {
		return fmt.Errorf("%w: LUKS2 digests %d and %d must be two existing digests", errclass.Usage, from, to)
	}
	if len(src.Segments) == 0 {
		return fmt.Errorf("%w: LUKS2 digest %d maps no segment", errclass.Usage, from)
	}
	if len(dst.Keyslots) == 0 {
		return fmt.Errorf("%w: LUKS2 digest %d has no keyslot: its key could not be unlocked", errclass.Refused, to)
	}
	none, err := idsJSON(nil)
	if err != nil {
		return err
	}
	ids, err := idsJSON(append(append([]int(nil), dst.Segments...), src.Segments...))
	if err != nil {
		return err
	}
	return d.apply(change{[]string{"digests", strconv.Itoa(from), "segments"}, none},
		change{[]string{"digests", strconv.Itoa(to), "segments"}, ids})
}

// CopyTokenBindings adds keyslot to to every token that lists keyslot
// from, so that a keyslot re-made for a new volume key keeps the tokens
// (TPM2, FIDO2, recovery) of the one it replaces; removing from later
// drops the old binding.
func (d *Draft2) CopyTokenBindings(from, to int) error {
	m, err := d.Metadata()
	if err != nil {
		return err
	}
	if _, ok := m.Keyslots[to]; !ok {
		return fmt.Errorf("%w: LUKS2 keyslot %d does not exist", errclass.Usage, to)
	}
	var cs []change
	for tid := 0; tid < maxTokens2; tid++ {
		t, ok := m.Tokens[tid]
		if !ok || !hasInt(t.Keyslots, from) || hasInt(t.Keyslots, to) {
			continue
		}
		ids, err := idsJSON(append(append([]int(nil), t.Keyslots...), to))
		if err != nil {
			return err
		}
		cs = append(cs, change{[]string{"tokens", strconv.Itoa(tid), "keyslots"}, ids})
	}
	if len(cs) == 0 {
		return nil
	}
	return d.apply(cs...)
}
