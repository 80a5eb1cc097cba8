package luks

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/cryptshift/cryptshift/blockdev"
	"github.com/cryptshift/cryptshift/errclass"
)

// The edits a conversion by cryptshift makes to a LUKS2 header besides
// keyslots and digests (docs/DESIGN.md, "LUKS2 conversion"): a mandatory
// requirement stock cryptsetup does not know, so that it refuses to
// activate the volume while the data are under two keys; an area of the
// keyslots area held by a keyslot of a type cryptsetup does not know, so
// that it places new keyslots around it; a token recording the conversion.

// SetRequirement adds (on) or removes a mandatory requirement. Removing
// the last one removes config.requirements, as a header that never had
// one is written by cryptsetup.
func (d *Draft2) SetRequirement(name string, on bool) error {
	m, err := d.Metadata()
	if err != nil {
		return err
	}
	var list []string
	found := false
	for _, r := range m.Config.Mandatory {
		if r == name {
			found = true
			if !on {
				continue
			}
		}
		list = append(list, r)
	}
	if on && found || !on && !found {
		return nil
	}
	if on {
		list = append(list, name)
	}
	if len(list) == 0 {
		return d.apply(change{[]string{"config", "requirements"}, nil})
	}
	js, err := marshalPlain(map[string][]string{"mandatory": list})
	if err != nil {
		return err
	}
	return d.apply(change{[]string{"config", "requirements"}, js})
}

// ReserveArea adds a keyslot of type typ (one cryptsetup does not know)
// that holds no key and owns an area of size bytes (a multiple of 4096),
// placed by first fit like any keyslot, at the highest free keyslot id (so
// that the ids cryptsetup hands out first stay free). Stock cryptsetup
// keeps such a keyslot, dumps it as unbound and places keyslots around its
// area. It returns the keyslot id and the area.
func (d *Draft2) ReserveArea(typ string, size uint64) (int, Area, error) {
	m, err := d.Metadata()
	if err != nil {
		return 0, Area{}, err
	}
	if typ == "luks2" || typ == "reencrypt" || size == 0 || size%4096 != 0 {
		return 0, Area{}, fmt.Errorf("%w: reserved LUKS2 area of type %q and %d bytes", errclass.Usage, typ, size)
	}
	slot := -1
	for i := maxKeyslots2 - 1; i >= 0 && slot < 0; i-- {
		if _, used := m.Keyslots[i]; !used {
			slot = i
		}
	}
	if slot < 0 {
		return 0, Area{}, fmt.Errorf("%w: the LUKS2 header has no free keyslot (at most %d)", errclass.Device, maxKeyslots2)
	}
	off, err := firstFit(m, d.HdrSize, size)
	if err != nil {
		return 0, Area{}, err
	}
	js, err := marshalPlain(map[string]any{
		"type": typ, "key_size": 0,
		"area": map[string]string{"type": "raw", "offset": strconv.FormatUint(off, 10), "size": strconv.FormatUint(size, 10)},
	})
	if err != nil {
		return 0, Area{}, err
	}
	if err := d.apply(change{[]string{"keyslots", strconv.Itoa(slot)}, js}); err != nil {
		return 0, Area{}, err
	}
	return slot, Area{Type: "raw", Offset: off, Size: size}, nil
}

// LargestFree is the size of the largest gap of the keyslots area that no
// keyslot's area covers, 4096-aligned.
func (d *Draft2) LargestFree() (uint64, error) {
	m, err := d.Metadata()
	if err != nil {
		return 0, err
	}
	return largestGap(m, d.HdrSize), nil
}

func largestGap(m *Metadata, hdrSize uint64) uint64 {
	type span struct{ lo, hi uint64 }
	var used []span
	for _, k := range m.Keyslots {
		used = append(used, span{k.Area.Offset, k.Area.Offset + k.Area.Size})
	}
	sort.Slice(used, func(i, j int) bool { return used[i].lo < used[j].lo })
	pos, end := 2*hdrSize, 2*hdrSize+m.Config.KeyslotsSize
	best := uint64(0)
	for _, u := range append(used, span{end, end}) {
		if u.lo > pos {
			best = max(best, (min(u.lo, end)-pos)/4096*4096)
		}
		pos = max(pos, u.hi)
	}
	return best
}

// RemoveOther removes keyslot slot of a type other than luks2 and
// reencrypt (a reserved area), and returns its area.
func (d *Draft2) RemoveOther(slot int) (Area, error) {
	m, err := d.Metadata()
	if err != nil {
		return Area{}, err
	}
	k, ok := m.Keyslots[slot]
	if !ok || k.Type == "luks2" || k.Type == "reencrypt" {
		return Area{}, fmt.Errorf("%w: LUKS2 keyslot %d is not a reserved area", errclass.Usage, slot)
	}
	if err := d.apply(change{[]string{"keyslots", strconv.Itoa(slot)}, nil}); err != nil {
		return Area{}, err
	}
	return k.Area, nil
}

// SetToken writes token id (nil raw: removes it). The token must carry a
// type and a keyslots array, as cryptsetup requires.
func (d *Draft2) SetToken(id int, raw json.RawMessage) error {
	if id < 0 || id >= maxTokens2 {
		return fmt.Errorf("%w: LUKS2 token %d: tokens are 0 to %d", errclass.Usage, id, maxTokens2-1)
	}
	return d.apply(change{[]string{"tokens", strconv.Itoa(id)}, raw})
}

// FreeToken is the highest token id not in use.
func (d *Draft2) FreeToken() (int, error) {
	m, err := d.Metadata()
	if err != nil {
		return 0, err
	}
	for i := maxTokens2 - 1; i >= 0; i-- {
		if _, used := m.Tokens[i]; !used {
			return i, nil
		}
	}
	return 0, fmt.Errorf("%w: the LUKS2 header has no free token (at most %d)", errclass.Device, maxTokens2)
}

// SetSegmentCrypt changes the cipher and sector size of crypt segment seg:
// the data are under that cipher once the conversion is done.
func (d *Draft2) SetSegmentCrypt(seg int, encryption string, sectorSize uint32) error {
	m, err := d.Metadata()
	if err != nil {
		return err
	}
	g, ok := m.Segments[seg]
	if !ok || g.Type != "crypt" {
		return fmt.Errorf("%w: LUKS2 segment %d is not a crypt segment", errclass.Usage, seg)
	}
	enc, err := marshalPlain(encryption)
	if err != nil {
		return err
	}
	ss, err := marshalPlain(sectorSize)
	if err != nil {
		return err
	}
	id := strconv.Itoa(seg)
	return d.apply(change{[]string{"segments", id, "encryption"}, enc}, change{[]string{"segments", id, "sector_size"}, ss})
}

// CommitLUKS2Own is CommitLUKS2 for a header that may carry the
// requirement own, which only its writer (cryptshift) knows: a header
// carrying any other requirement cryptsetup 2.6 does not know is refused
// as CommitLUKS2 refuses it. The order of the writes, and the argument,
// are CommitLUKS2's.
func CommitLUKS2Own(dev blockdev.Device, d *Draft2, own string) error {
	return commitLUKS2(dev, d, own)
}

// Draft returns a draft of the volume's LUKS2 header.
func (v *Volume) Draft() (*Draft2, error) {
	if v.V2 == nil {
		return nil, fmt.Errorf("%w: not a LUKS2 volume", errclass.Usage)
	}
	return v.V2.Draft()
}
