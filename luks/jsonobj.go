package luks

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"

	"github.com/cryptshift/cryptshift/errclass"
)

// obj is a JSON object with its members kept raw, so that typed fields can
// be checked the way json-c types them (cryptsetup's checks are on json-c
// types: a quoted number is a string, 4.0 is not an int) and so that
// unknown members survive for a later writer.
type obj map[string]json.RawMessage

type jsonKind int

const (
	kNull jsonKind = iota
	kBool
	kNumber
	kString
	kArray
	kObject
)

func kindOf(v json.RawMessage) jsonKind {
	if len(v) == 0 {
		return kNull
	}
	switch v[0] {
	case '{':
		return kObject
	case '[':
		return kArray
	case '"':
		return kString
	case 't', 'f':
		return kBool
	case 'n':
		return kNull
	}
	return kNumber
}

// invalid is the error of every JSON check: the header is LUKS2 but not
// one cryptsetup would load.
func invalid(where, format string, a ...any) error {
	return fmt.Errorf("%w: LUKS2 metadata: %s: %s", errclass.Header, where, fmt.Sprintf(format, a...))
}

func decodeObj(v json.RawMessage, where string) (obj, error) {
	if kindOf(v) != kObject {
		return nil, invalid(where, "not an object")
	}
	var o obj
	if err := json.Unmarshal(v, &o); err != nil {
		return nil, invalid(where, "%v", err)
	}
	return o, nil
}

func (o obj) has(k string) bool { _, ok := o[k]; return ok }

func (o obj) object(k, where string) (obj, error) {
	v, ok := o[k]
	if !ok {
		return nil, invalid(where, "missing %q (object)", k)
	}
	return decodeObj(v, where+"."+k)
}

// str is a string member that must be present and (as cryptsetup's
// json_contains_string wants) not empty.
func (o obj) str(k, where string) (string, error) {
	v, ok := o[k]
	if !ok || kindOf(v) != kString {
		return "", invalid(where, "missing %q (string)", k)
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", invalid(where, "%q: %v", k, err)
	}
	if s == "" {
		return "", invalid(where, "%q is empty", k)
	}
	return s, nil
}

// integer is a member json-c types as int: a number literal without
// fraction or exponent that fits in int64.
func (o obj) integer(k, where string) (int64, error) {
	v, ok := o[k]
	if !ok || kindOf(v) != kNumber || bytes.ContainsAny(v, ".eE") {
		return 0, invalid(where, "missing %q (integer)", k)
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, invalid(where, "%q: %v", k, err)
	}
	return n, nil
}

// uint32 is an integer member in the range of a C uint32_t.
func (o obj) uint32(k, where string) (uint32, error) {
	n, err := o.integer(k, where)
	if err != nil {
		return 0, err
	}
	if n < 0 || n > math.MaxUint32 {
		return 0, invalid(where, "%q = %d is out of range", k, n)
	}
	return uint32(n), nil
}

// u64 is a uint64 member, which LUKS2 stores as a string of digits.
func (o obj) u64(k, where string) (uint64, error) {
	s, err := o.str(k, where)
	if err != nil {
		return 0, err
	}
	return parseU64(s, where+"."+k)
}

func parseU64(s, where string) (uint64, error) {
	if !numbered(s) {
		return 0, invalid(where, "%q is not a decimal number", s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, invalid(where, "%q: out of range", s)
	}
	return n, nil
}

func (o obj) base64(k, where string) ([]byte, error) {
	s, err := o.str(k, where)
	if err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, invalid(where, "%q is not base64: %v", k, err)
	}
	return b, nil
}

// strings is an optional array of strings; absent is nil.
func (o obj) strings(k, where string) ([]string, error) {
	v, ok := o[k]
	if !ok {
		return nil, nil
	}
	if kindOf(v) != kArray {
		return nil, invalid(where, "%q is not an array", k)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil {
		return nil, invalid(where, "%q: %v", k, err)
	}
	out := make([]string, len(raw))
	for i, e := range raw {
		if kindOf(e) != kString {
			return nil, invalid(where, "%q[%d] is not a string", k, i)
		}
		if err := json.Unmarshal(e, &out[i]); err != nil {
			return nil, invalid(where, "%q[%d]: %v", k, i, err)
		}
	}
	return out, nil
}

// requiredStrings is like strings but the array must be there.
func (o obj) requiredStrings(k, where string) ([]string, error) {
	if !o.has(k) {
		return nil, invalid(where, "missing %q (array)", k)
	}
	s, err := o.strings(k, where)
	if s == nil && err == nil {
		s = []string{}
	}
	return s, err
}

// numbered is cryptsetup's test for ids and uint64 strings: digits only.
func numbered(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ids returns the members of a section (keyslots, tokens, segments,
// digests) by number, refusing keys that are not plain decimal ids below
// max. cryptsetup looks its objects up by the printed number, so "01"
// could never be reached there either.
func (o obj) ids(section string, max int) ([]int, error) {
	out := make([]int, 0, len(o))
	for k := range o {
		n, err := strconv.Atoi(k)
		if !numbered(k) || err != nil || strconv.Itoa(n) != k {
			return nil, invalid(section, "id %q is not in numbered form", k)
		}
		if n >= max {
			return nil, invalid(section, "id %d is beyond the maximum of %d", n, max-1)
		}
		out = append(out, n)
	}
	sort.Ints(out)
	return out, nil
}

// idList decodes an array of id strings (a digest's or token's keyslots
// or segments) and checks each names an existing member of section.
func (o obj) idList(k, where string, section obj) ([]int, error) {
	s, err := o.requiredStrings(k, where)
	if err != nil {
		return nil, err
	}
	out := make([]int, len(s))
	for i, id := range s {
		if _, ok := section[id]; !ok || kindOf(section[id]) != kObject {
			return nil, invalid(where, "%q names %q, which does not exist", k, id)
		}
		n, err := strconv.Atoi(id)
		if err != nil {
			return nil, invalid(where, "%q: id %q is not a number", k, id)
		}
		out[i] = n
	}
	return out, nil
}
