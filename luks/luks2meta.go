package luks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Metadata is the validated JSON of a LUKS2 header. Each object keeps its
// raw JSON beside the typed fields, and Raw holds the whole text, so that a
// later writer keeps what this reader does not interpret (unknown members,
// keyslot and token types) byte for byte.
type Metadata struct {
	Config   Config
	Keyslots map[int]*Keyslot2
	Tokens   map[int]*Token
	Segments map[int]*Segment
	Digests  map[int]*Digest
	Raw      json.RawMessage
}

// Config is the "config" object.
type Config struct {
	JSONSize     uint64
	KeyslotsSize uint64
	Flags        []string
	// Mandatory lists config.requirements.mandatory: a reader that does not
	// know one of them must not activate the volume or change its header.
	Mandatory []string
	Raw       json.RawMessage
}

// Keyslot2 is a LUKS2 keyslot. Type "luks2" keyslots have AF, Area and KDF;
// other types (cryptsetup's "reencrypt", or unknown ones) keep their raw
// JSON and, when they have one, their area, which no one else may use.
type Keyslot2 struct {
	Type     string
	KeySize  uint32 // the key the slot stores (the volume key for a bound slot)
	Priority *int64 // nil when absent (normal)
	AF       AF
	Area     Area
	KDF      KDF
	Raw      json.RawMessage
}

// AF is the anti-forensic splitter of a keyslot.
type AF struct {
	Type    string // "luks1"
	Stripes int64
	Hash    string
}

// Area is where a keyslot's material lies in the keyslots area.
type Area struct {
	Type       string // "raw" for luks2 keyslots
	Offset     uint64 // bytes from the start of the device
	Size       uint64
	Encryption string // luks2: cipher spec of the material
	KeySize    uint32 // luks2: length of the KDF output that keys Encryption
}

// KDF is a keyslot's key derivation.
type KDF struct {
	Type       string // "pbkdf2", "argon2i", "argon2id"
	Hash       string // pbkdf2
	Iterations int64  // pbkdf2
	Time       int64  // argon2
	Memory     int64  // argon2, KiB
	CPUs       int64  // argon2 lanes and threads
	Salt       []byte
}

// Token is a LUKS2 token: how to obtain a keyslot's passphrase. Its JSON is
// opaque to cryptshift beyond type and keyslots.
type Token struct {
	Type     string
	Keyslots []int
	Raw      json.RawMessage
}

// Segment is a data segment.
type Segment struct {
	Type       string // "crypt", "linear", ...
	Offset     uint64 // bytes from the start of the device
	Size       uint64 // bytes; 0 with Dynamic
	Dynamic    bool   // to the end of the device
	IVTweak    uint64 // crypt: in 512-byte sectors
	Encryption string // crypt
	SectorSize uint32 // crypt
	Integrity  json.RawMessage
	Flags      []string
	Raw        json.RawMessage
}

// Digest verifies a volume key of the keyslots and segments it lists.
type Digest struct {
	Type       string // "pbkdf2"
	Keyslots   []int
	Segments   []int
	Hash       string
	Iterations int64
	Salt       []byte
	Digest     []byte
	Raw        json.RawMessage
}

// backup reports whether a segment is a reencryption backup.
func (s *Segment) backup() bool {
	for _, f := range s.Flags {
		if strings.HasPrefix(f, "backup-") {
			return true
		}
	}
	return false
}

// parseMetadata parses and validates a JSON area as cryptsetup does before
// it accepts a header copy: the text starts with '{' and is followed by
// NULs only, then requirements, tokens, digests, segments, keyslots,
// config, keyslot areas, sizes and the keyslot types, in that order.
func parseMetadata(area []byte, hdrSize uint64) (*Metadata, error) {
	if len(area) == 0 || area[0] != '{' {
		return nil, invalid("JSON area", "does not start with '{'")
	}
	end := bytes.IndexByte(area, 0)
	if end < 0 {
		return nil, invalid("JSON area", "no NUL byte after the JSON text")
	}
	text := area[:end]
	for i := end; i < len(area); i++ {
		if area[i] != 0 {
			return nil, invalid("JSON area", "non-NUL byte at offset %d after the JSON text", i)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(text))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, invalid("JSON area", "%v", err)
	}
	if dec.InputOffset() != int64(len(text)) {
		return nil, invalid("JSON area", "bytes after the JSON object")
	}
	top, err := decodeObj(raw, "JSON area")
	if err != nil {
		return nil, err
	}
	m := &Metadata{Raw: append(json.RawMessage(nil), text...)}
	sections := map[string]obj{}
	for _, s := range []string{"config", "keyslots", "tokens", "segments", "digests"} {
		if sections[s], err = top.object(s, "JSON area"); err != nil {
			return nil, err
		}
	}
	m.Config.Raw = top["config"]
	if err := m.parseConfig(sections["config"], hdrSize); err != nil {
		return nil, err
	}
	for _, step := range []func(map[string]obj) error{m.parseTokens, m.parseDigests, m.parseSegments, m.parseKeyslots} {
		if err := step(sections); err != nil {
			return nil, err
		}
	}
	if err := m.checkConfigFit(); err != nil {
		return nil, err
	}
	if err := m.checkAreas(hdrSize); err != nil {
		return nil, err
	}
	if err := m.checkKeyslotTypes(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metadata) parseConfig(c obj, hdrSize uint64) error {
	const where = "config"
	var err error
	if c.has("requirements") {
		req, err := c.object("requirements", where)
		if err != nil {
			return err
		}
		if m.Config.Mandatory, err = req.strings("mandatory", where+".requirements"); err != nil {
			return err
		}
		n := 0
		for _, r := range m.Config.Mandatory {
			if reencryptFlag(r) {
				n++
			}
		}
		if n > 1 {
			return invalid(where, "more than one online-reencrypt requirement")
		}
	}
	if m.Config.JSONSize, err = c.u64("json_size", where); err != nil {
		return err
	}
	if m.Config.KeyslotsSize, err = c.u64("keyslots_size", where); err != nil {
		return err
	}
	if m.Config.Flags, err = c.strings("flags", where); err != nil {
		return err
	}
	if !allowedHdrSize(m.Config.JSONSize + binHeaderSize) {
		return invalid(where, "json_size %d is not one of the allowed metadata sizes (16 KiB to 4 MiB, less the 4 KiB binary header)", m.Config.JSONSize)
	}
	if m.Config.JSONSize != hdrSize-binHeaderSize {
		return invalid(where, "json_size %d does not match the binary header's size %d", m.Config.JSONSize, hdrSize)
	}
	if m.Config.KeyslotsSize%4096 != 0 || m.Config.KeyslotsSize > maxKeyslotsSize {
		return invalid(where, "keyslots_size %d is not a multiple of 4096 up to 128 MiB", m.Config.KeyslotsSize)
	}
	return nil
}

func allowedHdrSize(n uint64) bool {
	for _, o := range secondaryOffsets {
		if uint64(o) == n {
			return true
		}
	}
	return false
}

// reencryptFlag reports whether a requirement is one of cryptsetup's
// online reencryption flags ("online-reencrypt", "online-reencrypt-vN").
func reencryptFlag(r string) bool {
	if r == "online-reencrypt" {
		return true
	}
	v, ok := strings.CutPrefix(r, "online-reencrypt-v")
	return ok && numbered(v)
}

func (m *Metadata) parseTokens(s map[string]obj) error {
	ids, err := s["tokens"].ids("tokens", maxTokens2)
	if err != nil {
		return err
	}
	m.Tokens = map[int]*Token{}
	for _, id := range ids {
		where := fmt.Sprintf("token %d", id)
		raw := s["tokens"][strconv.Itoa(id)]
		o, err := decodeObj(raw, where)
		if err != nil {
			return err
		}
		t := &Token{Raw: raw}
		if t.Type, err = o.str("type", where); err != nil {
			return err
		}
		if t.Keyslots, err = o.idList("keyslots", where, s["keyslots"]); err != nil {
			return err
		}
		m.Tokens[id] = t
	}
	return nil
}

func (m *Metadata) parseDigests(s map[string]obj) error {
	ids, err := s["digests"].ids("digests", maxDigests2)
	if err != nil {
		return err
	}
	m.Digests = map[int]*Digest{}
	for _, id := range ids {
		where := fmt.Sprintf("digest %d", id)
		raw := s["digests"][strconv.Itoa(id)]
		o, err := decodeObj(raw, where)
		if err != nil {
			return err
		}
		d := &Digest{Raw: raw}
		if d.Type, err = o.str("type", where); err != nil {
			return err
		}
		if d.Keyslots, err = o.idList("keyslots", where, s["keyslots"]); err != nil {
			return err
		}
		if d.Segments, err = o.idList("segments", where, s["segments"]); err != nil {
			return err
		}
		if d.Type == "pbkdf2" {
			// cryptsetup reads these only when it verifies a key; a broken
			// pbkdf2 digest then fails every unlock, so refuse it up front.
			if d.Hash, err = o.str("hash", where); err != nil {
				return err
			}
			if d.Iterations, err = o.integer("iterations", where); err != nil {
				return err
			}
			if d.Salt, err = o.base64("salt", where); err != nil {
				return err
			}
			if d.Digest, err = o.base64("digest", where); err != nil {
				return err
			}
		}
		m.Digests[id] = d
	}
	return nil
}

func (m *Metadata) parseSegments(s map[string]obj) error {
	sec := s["segments"]
	ids, err := sec.ids("segments", maxSegments2)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return invalid("segments", "empty")
	}
	m.Segments = map[int]*Segment{}
	firstBackup := -1
	for _, id := range ids {
		where := fmt.Sprintf("segment %d", id)
		raw := sec[strconv.Itoa(id)]
		o, err := decodeObj(raw, where)
		if err != nil {
			return err
		}
		g := &Segment{Raw: raw}
		if g.Type, err = o.str("type", where); err != nil {
			return err
		}
		if g.Offset, err = o.u64("offset", where); err != nil {
			return err
		}
		size, err := o.str("size", where)
		if err != nil {
			return err
		}
		if size == "dynamic" {
			g.Dynamic = true
		} else if g.Size, err = parseU64(size, where+".size"); err != nil {
			return err
		} else if g.Size == 0 {
			return invalid(where, "size 0")
		}
		if g.Offset%sectorSize != 0 || g.Size%sectorSize != 0 {
			return invalid(where, "offset and size must be multiples of 512")
		}
		if g.Flags, err = o.strings("flags", where); err != nil {
			return err
		}
		if g.backup() {
			if firstBackup < 0 {
				firstBackup = id
			}
		} else if firstBackup >= 0 {
			return invalid(where, "regular segment after backup segment %d", firstBackup)
		}
		if g.Type == "crypt" {
			if err := g.parseCrypt(o, where, m.Digests, id); err != nil {
				return err
			}
		}
		m.Segments[id] = g
	}
	if firstBackup == 0 {
		return invalid("segments", "no regular segment")
	}
	regular := len(ids)
	if firstBackup > 0 {
		regular = firstBackup
	}
	// Ids run 0, 1, ... without gaps, regular ones first.
	for i, id := range ids {
		if i != id {
			return invalid("segments", "gap at id %d", i)
		}
	}
	for i := 0; i < regular; i++ {
		a := m.Segments[i]
		if a.Dynamic && i != regular-1 {
			return invalid("segments", "segment %d has dynamic size but is not the last regular segment", i)
		}
		for j := 0; j < regular; j++ {
			b := m.Segments[j]
			if i == j {
				continue
			}
			if !b.Dynamic && b.Offset > math.MaxUint64-b.Size {
				return invalid("segments", "segment %d: offset+size overflows", j)
			}
			if a.Offset >= b.Offset && (b.Dynamic || a.Offset < b.Offset+b.Size) {
				return invalid("segments", "segments %d and %d overlap", i, j)
			}
		}
	}
	return m.checkReencryptSegments(regular, len(ids))
}

func (g *Segment) parseCrypt(o obj, where string, digests map[int]*Digest, id int) error {
	var err error
	if g.IVTweak, err = o.u64("iv_tweak", where); err != nil {
		return err
	}
	if g.Encryption, err = o.str("encryption", where); err != nil {
		return err
	}
	if g.SectorSize, err = o.uint32("sector_size", where); err != nil {
		return err
	}
	if o.has("integrity") {
		in, err := o.object("integrity", where)
		if err != nil {
			return err
		}
		for _, k := range []string{"type", "journal_encryption", "journal_integrity"} {
			if _, err := in.str(k, where+".integrity"); err != nil {
				return err
			}
		}
		g.Integrity = o["integrity"]
	}
	if g.SectorSize == 0 || g.SectorSize%sectorSize != 0 {
		return invalid(where, "sector_size %d", g.SectorSize)
	}
	if g.Size%uint64(g.SectorSize) != 0 {
		return invalid(where, "size %d is not a multiple of sector_size %d", g.Size, g.SectorSize)
	}
	for _, d := range digests {
		for _, s := range d.Segments {
			if s == id {
				return nil
			}
		}
	}
	return invalid(where, "crypt segment not assigned to any digest")
}

// checkReencryptSegments: with an online-reencrypt requirement there must
// be backup-previous and backup-final segments, and every regular segment
// must match one of them in type, cipher and sector size (the one in
// reencryption the final one).
func (m *Metadata) checkReencryptSegments(regular, count int) error {
	if !m.reencryptRequired() {
		return nil
	}
	var prev, final *Segment
	for i := regular; i < count; i++ {
		g := m.Segments[i]
		if hasFlag(g.Flags, "backup-final") {
			final = g
		} else if hasFlag(g.Flags, "backup-previous") {
			prev = g
		}
	}
	if prev == nil || final == nil {
		return invalid("segments", "reencryption backup segment missing")
	}
	for i := 0; i < regular; i++ {
		g := m.Segments[i]
		if hasFlag(g.Flags, "in-reencryption") {
			if !sameSegmentKind(g, final) {
				return invalid("segments", "segment %d in reencryption does not match the backup-final segment", i)
			}
		} else if !sameSegmentKind(g, final) && !sameSegmentKind(g, prev) {
			return invalid("segments", "segment %d matches neither backup segment", i)
		}
	}
	return nil
}

func sameSegmentKind(a, b *Segment) bool {
	if a.Type != b.Type {
		return false
	}
	return a.Type != "crypt" || a.SectorSize == b.SectorSize && a.Encryption == b.Encryption
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

// reencryptRequired: a known online-reencrypt requirement is present
// (cryptsetup 2.6 knows "online-reencrypt" and -v2, -v3).
func (m *Metadata) reencryptRequired() bool {
	for _, r := range m.Config.Mandatory {
		switch r {
		case "online-reencrypt", "online-reencrypt-v2", "online-reencrypt-v3":
			return true
		}
	}
	return false
}

func (m *Metadata) parseKeyslots(s map[string]obj) error {
	ids, err := s["keyslots"].ids("keyslots", maxKeyslots2)
	if err != nil {
		return err
	}
	m.Keyslots = map[int]*Keyslot2{}
	for _, id := range ids {
		where := fmt.Sprintf("keyslot %d", id)
		raw := s["keyslots"][strconv.Itoa(id)]
		o, err := decodeObj(raw, where)
		if err != nil {
			return err
		}
		k := &Keyslot2{Raw: raw}
		if k.Type, err = o.str("type", where); err != nil {
			return err
		}
		if k.KeySize, err = o.uint32("key_size", where); err != nil {
			return err
		}
		// Every keyslot, of any type, needs an area with a type, offset and
		// size, so that no writer hands the space out twice.
		area, err := o.object("area", where)
		if err != nil {
			return err
		}
		if k.Area.Type, err = area.str("type", where+".area"); err != nil {
			return err
		}
		if k.Area.Offset, err = area.u64("offset", where+".area"); err != nil {
			return err
		}
		if k.Area.Size, err = area.u64("size", where+".area"); err != nil {
			return err
		}
		if o.has("priority") {
			p, err := o.integer("priority", where)
			if err != nil {
				return err
			}
			k.Priority = &p
		}
		if k.Type == "luks2" {
			if err := k.parseLUKS2(o, area, where); err != nil {
				return err
			}
		}
		m.Keyslots[id] = k
	}
	return nil
}

// parseLUKS2 reads the fields cryptsetup's luks2 keyslot handler checks:
// a kdf of exactly the members its type has, a "luks1" AF, a "raw" area.
func (k *Keyslot2) parseLUKS2(o, area obj, where string) error {
	kdf, err := o.object("kdf", where)
	if err != nil {
		return err
	}
	af, err := o.object("af", where)
	if err != nil {
		return err
	}
	kw := where + ".kdf"
	if k.KDF.Type, err = kdf.str("type", kw); err != nil {
		return err
	}
	// Members beyond those of the KDF type are tolerated: cryptsetup's
	// loader drops them ("repairs" the keyslot) and validates again.
	switch k.KDF.Type {
	case "pbkdf2":
		if k.KDF.Hash, err = kdf.str("hash", kw); err != nil {
			return err
		}
		if k.KDF.Iterations, err = kdf.integer("iterations", kw); err != nil {
			return err
		}
	case "argon2i", "argon2id":
		for _, f := range []struct {
			name string
			v    *int64
		}{{"time", &k.KDF.Time}, {"memory", &k.KDF.Memory}, {"cpus", &k.KDF.CPUs}} {
			if *f.v, err = kdf.integer(f.name, kw); err != nil {
				return err
			}
		}
	}
	if k.KDF.Type == "pbkdf2" || strings.HasPrefix(k.KDF.Type, "argon2") {
		if k.KDF.Salt, err = kdf.base64("salt", kw); err != nil {
			return err
		}
	}
	aw := where + ".af"
	if k.AF.Type, err = af.str("type", aw); err != nil {
		return err
	}
	if k.AF.Type != "luks1" {
		return invalid(aw, "unknown AF type %q", k.AF.Type)
	}
	if k.AF.Hash, err = af.str("hash", aw); err != nil {
		return err
	}
	if k.AF.Stripes, err = af.integer("stripes", aw); err != nil {
		return err
	}
	if k.Area.Type != "raw" {
		return invalid(where+".area", "unknown area type %q for a luks2 keyslot", k.Area.Type)
	}
	if k.Area.Encryption, err = area.str("encryption", where+".area"); err != nil {
		return err
	}
	if k.Area.KeySize, err = area.uint32("key_size", where+".area"); err != nil {
		return err
	}
	return nil
}

// checkConfigFit: the keyslots area lies between the two metadata copies
// and the first data segment (unless the header is detached, offset 0).
func (m *Metadata) checkConfigFit() error {
	meta := m.Config.JSONSize + binHeaderSize
	first := uint64(0)
	for _, g := range m.Segments {
		if first == 0 || g.Offset < first {
			first = g.Offset
		}
	}
	if first != 0 && (first < m.Config.KeyslotsSize || first-m.Config.KeyslotsSize < 2*meta) {
		return invalid("config", "keyslots_size %d does not fit between the metadata (%d bytes) and the data at %d", m.Config.KeyslotsSize, 2*meta, first)
	}
	return nil
}

// checkAreas: keyslot areas are non-empty, inside the keyslots area and
// disjoint.
func (m *Metadata) checkAreas(hdrSize uint64) error {
	end := 2*hdrSize + m.Config.KeyslotsSize
	for i, a := range m.Keyslots {
		where := fmt.Sprintf("keyslot %d area", i)
		switch {
		case a.Area.Offset < 2*hdrSize:
			return invalid(where, "offset %d lies in the metadata copies", a.Area.Offset)
		case a.Area.Size == 0:
			return invalid(where, "size 0")
		case a.Area.Offset > math.MaxUint64-a.Area.Size:
			return invalid(where, "offset+size overflows")
		case a.Area.Offset+a.Area.Size > end:
			return invalid(where, "[%d, %d) runs past the keyslots area, which ends at %d", a.Area.Offset, a.Area.Offset+a.Area.Size, end)
		}
		for j, b := range m.Keyslots {
			if i != j && a.Area.Offset >= b.Area.Offset && a.Area.Offset < b.Area.Offset+b.Area.Size {
				return invalid(where, "overlaps keyslot %d's area", j)
			}
		}
	}
	if len(m.Raw) > int(m.Config.JSONSize) {
		return invalid("JSON area", "text of %d bytes does not fit json_size %d", len(m.Raw), m.Config.JSONSize)
	}
	return nil
}

// checkKeyslotTypes: each luks2 keyslot is in exactly one digest; at most
// one reencrypt keyslot, present exactly when a reencryption is recorded.
func (m *Metadata) checkKeyslotTypes() error {
	reenc := 0
	for id, k := range m.Keyslots {
		switch k.Type {
		case "luks2":
			if n := len(m.digestsOf(id)); n != 1 {
				return invalid(fmt.Sprintf("keyslot %d", id), "assigned to %d digests, not exactly one", n)
			}
		case "reencrypt":
			reenc++
		}
	}
	candidate := false
	for _, r := range m.Config.Mandatory {
		candidate = candidate || reencryptFlag(r)
	}
	switch {
	case m.reencryptRequired() && reenc == 0:
		return invalid("keyslots", "reencryption requirement without a reencrypt keyslot")
	case reenc > 0 && !candidate:
		return invalid("keyslots", "reencrypt keyslot without a reencryption requirement")
	case reenc > 1:
		return invalid("keyslots", "%d reencrypt keyslots", reenc)
	}
	return nil
}

// digestsOf lists the digests that list keyslot id, by digest id.
func (m *Metadata) digestsOf(id int) []int {
	var out []int
	for did := 0; did < maxDigests2; did++ {
		d, ok := m.Digests[did]
		if !ok {
			continue
		}
		for _, k := range d.Keyslots {
			if k == id {
				out = append(out, did)
			}
		}
	}
	return out
}
