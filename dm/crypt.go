package dm

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cryptshift/cryptshift/sectorcipher"
)

// Crypt is the parameters of a dm-crypt target:
// "<cipher> <key> <iv_offset> <dev> <offset> [<#opts> <opt>...]".
type Crypt struct {
	Cipher string
	// Key is the raw key; empty for cipher_null ("-" in the table).
	Key []byte
	// KeyRef is a kernel keyring reference ":<size>:<type>:<description>";
	// when set, Key is nil and the key bytes are not in the table.
	KeyRef   string
	IVOffset uint64 // 512-byte units
	Device   string // "major:minor" or a path
	Offset   uint64 // sectors into Device
	// Options are the optional parameters verbatim, in order; unknown ones
	// are kept so that a table read back and written again is the same.
	Options []string
}

// ErrKeyringKey is returned when a mapping is asked of a table whose key
// lives in the kernel keyring: the table names the key but does not hold it.
var ErrKeyringKey = errors.New("dm: the table references a kernel keyring key, whose bytes cannot be read back; give the key by file")

// ParseCrypt parses dm-crypt parameters as the kernel prints them (and as
// dmsetup accepts them).
func ParseCrypt(params string) (Crypt, error) {
	f := strings.Fields(params)
	if len(f) < 5 {
		return Crypt{}, fmt.Errorf("dm: crypt parameters: want \"<cipher> <key> <iv_offset> <dev> <offset> [<#opts> <opts>...]\", got %d fields", len(f))
	}
	c := Crypt{Cipher: f[0], Device: f[3]}
	switch key := f[1]; {
	case key == "-":
		c.Key = []byte{}
	case strings.HasPrefix(key, ":"):
		if err := checkKeyRef(key); err != nil {
			return Crypt{}, err
		}
		c.KeyRef = key
	default:
		if len(key)%2 != 0 {
			return Crypt{}, errors.New("dm: crypt key: odd number of hex digits")
		}
		b, err := hex.DecodeString(key)
		if err != nil {
			// Do not echo the key field: it is secret.
			return Crypt{}, errors.New("dm: crypt key is neither hex, \"-\", nor a \":size:type:desc\" keyring reference")
		}
		c.Key = b
	}
	var err error
	if c.IVOffset, err = parseUint("crypt iv_offset", f[2]); err != nil {
		return Crypt{}, fmt.Errorf("dm: %w", err)
	}
	if c.Offset, err = parseUint("crypt offset", f[4]); err != nil {
		return Crypt{}, fmt.Errorf("dm: %w", err)
	}
	rest := f[5:]
	if len(rest) == 0 {
		return c, nil
	}
	n, err := strconv.ParseUint(rest[0], 10, 32)
	if err != nil {
		return Crypt{}, fmt.Errorf("dm: crypt option count %q is not a number", rest[0])
	}
	if uint64(len(rest)-1) != n {
		return Crypt{}, fmt.Errorf("dm: crypt option count says %d, but %d options follow", n, len(rest)-1)
	}
	if n > 0 {
		c.Options = append([]string(nil), rest[1:]...)
	}
	return c, nil
}

func checkKeyRef(ref string) error {
	// ":<size>:<type>:<description>"; the description may itself contain
	// colons, so only the first two separators are structural.
	parts := strings.SplitN(ref[1:], ":", 3)
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
		return fmt.Errorf("dm: crypt keyring reference %q: want \":<size>:<type>:<description>\"", ref)
	}
	if _, err := strconv.ParseUint(parts[0], 10, 32); err != nil {
		return fmt.Errorf("dm: crypt keyring reference %q: size is not a number", ref)
	}
	return nil
}

// Params formats c as dm-crypt parameters, as the kernel prints them.
func (c Crypt) Params() string {
	key := c.KeyRef
	if key == "" {
		key = "-"
		if len(c.Key) > 0 {
			key = hex.EncodeToString(c.Key)
		}
	}
	s := fmt.Sprintf("%s %s %d %s %d", c.Cipher, key, c.IVOffset, c.Device, c.Offset)
	if len(c.Options) > 0 {
		s += fmt.Sprintf(" %d %s", len(c.Options), strings.Join(c.Options, " "))
	}
	return s
}

// neutralOptions do not change what is on disk, only how the kernel
// schedules or passes through I/O: a conversion keeps them for every
// segment of the device.
var neutralOptions = map[string]bool{
	"allow_discards":         true,
	"same_cpu_crypt":         true,
	"submit_from_crypt_cpus": true,
	"no_read_workqueue":      true,
	"no_write_workqueue":     true,
	"high_priority":          true,
}

// CheckNeutralOptions refuses any option that is not format-neutral: the
// options a caller gives for a table it cannot read back (an activation
// after a reboot) must not change what the sectors decrypt to.
func CheckNeutralOptions(opts []string) error {
	for _, o := range opts {
		if !neutralOptions[o] {
			return fmt.Errorf("dm: crypt option %q is not one of allow_discards, same_cpu_crypt, submit_from_crypt_cpus, no_read_workqueue, no_write_workqueue, high_priority", o)
		}
	}
	return nil
}

// TableOptions returns the format-neutral options of the first crypt
// target of ts, nil when none has any. A conversion builds every crypt
// target of a device with the same options, so the first one found says
// what the operator chose; a table that starts with a linear target (the
// plaintext side) still has them further on.
func TableOptions(ts []Target) []string {
	for _, t := range ts {
		if t.Type != "crypt" {
			continue
		}
		c, err := ParseCrypt(t.Params)
		if err != nil {
			continue
		}
		return c.ExtraOptions()
	}
	return nil
}

// ExtraOptions returns the options that do not decide the on-disk format
// (everything but sector_size and iv_large_sectors).
func (c Crypt) ExtraOptions() []string {
	var out []string
	for _, o := range c.Options {
		if o == "iv_large_sectors" || strings.HasPrefix(o, "sector_size:") {
			continue
		}
		out = append(out, o)
	}
	return out
}

// Mapping returns the sectorcipher mapping c encrypts with. It refuses
// what would make sectorcipher disagree with the kernel: keyring keys
// (unknown bytes), integrity (a different on-disk format) and options it
// does not know.
func (c Crypt) Mapping() (sectorcipher.Mapping, error) {
	if c.KeyRef != "" {
		return sectorcipher.Mapping{}, fmt.Errorf("%w (key %s)", ErrKeyringKey, c.KeyRef)
	}
	spec, err := sectorcipher.ParseKernelSpec(c.Cipher)
	if err != nil {
		return sectorcipher.Mapping{}, fmt.Errorf("dm: crypt table: %w", err)
	}
	m := sectorcipher.Mapping{Spec: spec, Key: c.Key, SectorSize: 512, IVOffset: c.IVOffset}
	seenSize := false
	for _, o := range c.Options {
		switch {
		case o == "iv_large_sectors":
			m.IVLargeSectors = true
		case strings.HasPrefix(o, "sector_size:"):
			if seenSize {
				return sectorcipher.Mapping{}, errors.New("dm: crypt table gives sector_size twice")
			}
			seenSize = true
			n, err := strconv.ParseUint(strings.TrimPrefix(o, "sector_size:"), 10, 16)
			if err != nil {
				return sectorcipher.Mapping{}, fmt.Errorf("dm: crypt option %q: bad sector size", o)
			}
			m.SectorSize = int(n)
		case neutralOptions[o]:
		default:
			return sectorcipher.Mapping{}, fmt.Errorf("dm: crypt option %q is not supported for conversion (it may change the on-disk format)", o)
		}
	}
	if spec.IsNone() {
		// cipher_null ignores the key; sectorcipher wants it empty.
		m.Key = []byte{}
	}
	if err := m.Validate(); err != nil {
		return sectorcipher.Mapping{}, fmt.Errorf("dm: crypt table: %w", err)
	}
	return m, nil
}

// CryptFor returns crypt parameters that encrypt with m from sector offset
// of dev. extra options are added first (they must be format-neutral; see
// ExtraOptions); sector_size and iv_large_sectors come from m.
func CryptFor(m sectorcipher.Mapping, dev string, offset uint64, extra []string) Crypt {
	c := Crypt{Cipher: m.Spec.KernelCipher(), Key: append([]byte{}, m.Key...), IVOffset: m.IVOffset, Device: dev, Offset: offset}
	c.Options = append(c.Options, extra...)
	if m.SectorSize != 512 && m.SectorSize != 0 {
		c.Options = append(c.Options, "sector_size:"+strconv.Itoa(m.SectorSize))
	}
	if m.IVLargeSectors {
		c.Options = append(c.Options, "iv_large_sectors")
	}
	return c
}

// Segment is one table target understood as a mapping over a backing
// device: crypt, or linear (plaintext).
type Segment struct {
	Mapping sectorcipher.Mapping
	Device  string
	Offset  uint64 // sectors into Device
	Extra   []string
	Linear  bool
}

// ParseSegment interprets a crypt or linear target.
func ParseSegment(t Target) (Segment, error) {
	switch t.Type {
	case "crypt":
		c, err := ParseCrypt(t.Params)
		if err != nil {
			return Segment{}, err
		}
		m, err := c.Mapping()
		if err != nil {
			return Segment{}, err
		}
		return Segment{Mapping: m, Device: c.Device, Offset: c.Offset, Extra: c.ExtraOptions()}, nil
	case "linear":
		l, err := ParseLinear(t.Params)
		if err != nil {
			return Segment{}, err
		}
		spec, err := sectorcipher.ParseSpec("none")
		if err != nil {
			return Segment{}, err
		}
		return Segment{Mapping: sectorcipher.Mapping{Spec: spec, Key: []byte{}, SectorSize: 512},
			Device: l.Device, Offset: l.Offset, Linear: true}, nil
	}
	return Segment{}, fmt.Errorf("dm: target type %q is neither crypt nor linear", t.Type)
}

// MappingTarget returns the target that serves [start, start+length) of a
// device with m, reading data sector 0 of the mapping's address space at
// dataOffset on dev: the crypt iv_offset and the backing offset both move
// with start, so that every sector keeps the IV it has in a single-target
// table. A plaintext mapping with no sector options becomes dm-linear.
func MappingTarget(m sectorcipher.Mapping, dev string, dataOffset, start, length uint64, extra []string) Target {
	if m.Spec.IsNone() && m.SectorSize <= 512 && !m.IVLargeSectors {
		return Target{Start: start, Length: length, Type: "linear",
			Params: Linear{Device: dev, Offset: dataOffset + start}.Params()}
	}
	mm := m
	mm.IVOffset = m.IVOffset + start
	return Target{Start: start, Length: length, Type: "crypt",
		Params: CryptFor(mm, dev, dataOffset+start, extra).Params()}
}
